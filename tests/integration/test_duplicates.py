"""Issue 17: the duplicate finder, over the RPC and the command line, on a folder with
planted copies (resized, recompressed, cropped, re-encoded in another format)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from imgsearch.cli import main
from imgsearch.files import read_folder_file
from imgsearch.searcher import verify
from imgsearch.v1 import searcher_pb2
from tests.conftest import Served
from tests.imaging import burst_pair, crop, encode, load, on_page
from tests.metrics_doc import Scrape

# copy name -> (original, how it was made)
PLANTED = {
    "copies/coffee_small.jpg": ("coffee.jpg", "resized to a third"),
    "copies/rocket_q20.jpg": ("rocket_launch.jpg", "recompressed at quality 20"),
    "copies/astronaut_crop.jpg": ("astronaut.jpg", "cropped to half the area"),
    "copies/fruits.webp": ("fruits.png", "re-encoded as WebP"),
    "copies/fruits_small.jpg": ("fruits.png", "resized and JPEG"),
}


LOOKS = ("vector", "decoded", "page")  # imgsearch_duplicate_images_total's labels


def _plant(folder: Path) -> None:
    (folder / "copies").mkdir()
    for name, (original, _) in PLANTED.items():
        image = load(folder / original)
        if "small" in name:
            image = image.resize((image.width // 3, image.height // 3))
        if "crop" in name:
            image = crop(image, 0.5, anchor=(0.4, 0.4))
        fmt, quality = (
            ("WEBP", 85) if name.endswith(".webp") else ("JPEG", 20 if "q20" in name else 85)
        )
        (folder / name).write_bytes(encode(image, fmt, quality=quality))


def _groups(served: Served) -> list[searcher_pb2.DuplicateGroup]:
    events = list(served.client.duplicates())
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    assert progress, "progress comes first"
    assert progress[-1].done == progress[-1].total == served.app.store.count()
    assert all(a.done <= b.done for a, b in itertools.pairwise(progress))
    return [e.group for e in events if e.WhichOneof("event") == "group"]


def test_every_planted_copy_is_grouped_with_its_original_and_nothing_else(
    photo_folder: Path, serve: Callable[..., Served]
) -> None:
    _plant(photo_folder)
    served = serve(photo_folder)
    served.wait_idle()
    groups = _groups(served)
    expected: dict[str, set[str]] = {}
    for copy, (original, _) in PLANTED.items():
        expected.setdefault(original, {original}).add(copy)
    found = {frozenset(g.paths) for g in groups}
    assert found == {frozenset(paths) for paths in expected.values()}, groups
    for group in groups:
        assert len(group.pairs) >= len(group.paths) - 1
        for pair in group.pairs:
            assert {pair.first, pair.second} <= set(group.paths)
            assert (
                pair.margin
                >= served.app.settings.verdict.for_model(served.app.encoder.tuning).match_threshold
                or pair.inliers > 0
            )
            assert 0 <= pair.region.x0 < pair.region.x1 <= 1


@pytest.mark.parametrize("dark", [False, True])
def test_a_photo_shown_on_a_page_is_grouped_with_the_page(
    photo_folder: Path, serve: Callable[..., Served], dark: bool
) -> None:
    """A page's whole-image vector is mostly its text and finds no photo; the finder looks
    at a page-like file again by its photo-like blocks, as a search with it would."""
    page, _ = on_page(load(photo_folder / "coffee.jpg"), share=0.35, dark=dark)
    (photo_folder / "pages").mkdir()
    (photo_folder / "pages" / "article.png").write_bytes(encode(page, "PNG"))
    served = serve(photo_folder)
    served.wait_idle()
    groups = _groups(served)
    assert [set(g.paths) for g in groups] == [{"coffee.jpg", "pages/article.png"}], groups
    (pair,) = groups[0].pairs
    assert pair.inliers > 0, "checked geometrically"
    assert pair.first == "pages/article.png", "found from the page's side"


def test_a_run_shows_in_the_metrics(
    photo_folder: Path, tmp_path: Path, serve: Callable[..., Served]
) -> None:
    """Each image compared is counted by how it was looked at, each candidate pair by its
    verdict, and the run is in progress only while it streams."""
    _plant(photo_folder)
    page, _ = on_page(load(photo_folder / "astronaut.jpg"), share=0.35)
    (photo_folder / "article.png").write_bytes(encode(page, "PNG"))
    # Two frames of one scene: alike enough to be checked, not copies.
    (photo_folder / "burst").mkdir()
    for name, frame in zip("ab", burst_pair(load(photo_folder / "coffee.jpg")), strict=True):
        (photo_folder / "burst" / f"{name}.jpg").write_bytes(encode(frame))
    served = serve(photo_folder, tmp_path / "data", metrics_listen="127.0.0.1:0")
    served.wait_idle()
    port = served.app.metrics_port
    assert port is not None
    before = Scrape(port)
    events = served.client.duplicates()
    next(events)  # the run has begun
    assert Scrape(port).value("imgsearch_duplicate_runs") == 1
    groups = [e.group for e in events if e.WhichOneof("event") == "group"]
    after = Scrape(port)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert after.value("imgsearch_duplicate_runs") == 0
    looks = {look: grew("imgsearch_duplicate_images_total", look=look) for look in LOOKS}
    assert sum(looks.values()) == served.app.store.count()
    # article.png (found only so, test above) and any other file with photo-like blocks
    assert looks["page"] >= 1, looks
    assert any({"astronaut.jpg", "article.png"} <= set(g.paths) for g in groups), groups
    assert looks["vector"] >= len(PLANTED), looks  # each copy finds its original
    copies = grew("imgsearch_duplicate_pairs_total", verdict="copy")
    found = {frozenset((p.first, p.second)) for g in groups for p in g.pairs}
    assert len(found) <= copies <= 2 * len(found)  # each pair from one side or both
    assert not any({"burst/a.jpg", "burst/b.jpg"} <= set(g.paths) for g in groups), groups
    assert grew("imgsearch_duplicate_pairs_total", verdict="not_copy") > 0  # the burst pair


def test_command_line_prints_groups_as_text_json_and_csv(
    photo_folder: Path, serve: Callable[..., Served], capsys: pytest.CaptureFixture[str]
) -> None:
    _plant(photo_folder)
    served = serve(photo_folder)
    served.wait_idle()
    server = ["--server", f"127.0.0.1:{served.app.port}"]

    assert main(["duplicates", "--json", *server]) == 0
    lines = capsys.readouterr().out.splitlines()
    groups = [json.loads(line) for line in lines]
    assert {tuple(g["paths"]) for g in groups} >= {
        ("copies/fruits.webp", "copies/fruits_small.jpg", "fruits.png")
    }
    assert all(
        isinstance(p["score"], float) and isinstance(p["inliers"], int)
        for g in groups
        for p in g["pairs"]
    )

    assert main(["duplicates", "--csv", *server]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {(r["first"], r["second"]) for r in rows} == {
        (p["first"], p["second"]) for g in groups for p in g["pairs"]
    }

    assert main(["duplicates", *server]) == 0
    text = capsys.readouterr().out
    assert text.rstrip().endswith(
        f"{len(groups)} groups of copies ({sum(len(g['paths']) for g in groups)} files) "
        f"among {served.app.store.count()} images"
    )
    assert "copies/coffee_small.jpg" in text


def test_a_folder_without_copies_has_no_groups(
    photo_folder: Path, serve: Callable[..., Served], capsys: pytest.CaptureFixture[str]
) -> None:
    served = serve(photo_folder)
    served.wait_idle()
    assert _groups(served) == []
    assert main(["duplicates", "--server", f"127.0.0.1:{served.app.port}"]) == 0
    assert capsys.readouterr().out.strip() == f"no copies among {served.app.store.count()} images"


def test_each_image_is_read_once_on_background_threads_below_searches(
    photo_folder: Path, serve: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIFT is most of a run's cost: an image in several candidate pairs (the original of
    two copies, and their look-alikes) has its file read and its keypoints found once, not
    once per pair, on the finder's own threads at the indexing threads' `nice`, so that
    searches keep the cores first."""
    _plant(photo_folder)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    served = serve(photo_folder, nice=7)
    served.wait_idle()
    read: list[tuple[str, str, int]] = []  # (file, thread, its nice)

    def counted(path: Path, max_bytes: int) -> bytes:
        priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        name = threading.current_thread().name
        read.append((path.relative_to(photo_folder).as_posix(), name, priority))
        return read_folder_file(path, max_bytes)

    monkeypatch.setattr(verify, "read_folder_file", counted)
    groups = _groups(served)
    assert {"copies/fruits.webp", "copies/fruits_small.jpg", "fruits.png"} in [
        set(g.paths) for g in groups
    ]
    assert read, "the pairs were checked"
    files = [file for file, _, _ in read]
    assert max(files.count(file) for file in files) == 1, sorted(files)
    assert all(name.startswith("duplicates") for _, name, _ in read), read
    assert {priority for _, _, priority in read} == {min(19, base + 7)}
