"""The index follows the folder while serving: add, delete, modify, rename, restart."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from imgsearch.metrics import INDEX_OPERATIONS
from tests.conftest import Served, wait_until
from tests.imaging import crop, encode, load


def _top(served: Served, query: bytes) -> str:
    return served.client.search(query, limit=1).matches[0].path


def _paths(served: Served, query: bytes) -> set[str]:
    return {m.path for m in served.client.search(query, limit=100).matches}


def _count(op: str) -> float:
    return INDEX_OPERATIONS.labels(op)._value.get()


@pytest.fixture(params=["native", "polling"])
def live(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sample_photos: list[Path],
    serve: Callable[..., Served],
) -> tuple[Served, Path, list[Path]]:
    folder = tmp_path / "photos"
    folder.mkdir()
    initial, extra = sample_photos[:4], sample_photos[4:]
    for photo in initial:
        shutil.copy2(photo, folder / photo.name)
    served = serve(folder, watch_mode=request.param)
    served.wait_idle()
    assert served.client.status().indexed == len(initial)
    return served, folder, extra


def test_added_file_becomes_searchable(live: tuple[Served, Path, list[Path]]) -> None:
    served, folder, extra = live
    query = encode(crop(load(extra[0]), 0.6))
    shutil.copy(extra[0], folder / "new.jpg")
    wait_until(lambda: _top(served, query) == "new.jpg", timeout=20)
    assert served.client.search(query, limit=1).matches[0].match


def test_deleted_file_is_gone(live: tuple[Served, Path, list[Path]]) -> None:
    served, folder, _ = live
    victim = sorted(folder.iterdir())[0]
    query = victim.read_bytes()
    victim.unlink()
    wait_until(lambda: victim.name not in _paths(served, query), timeout=20)
    assert served.client.status().indexed == 3


def test_modified_file_is_reembedded(live: tuple[Served, Path, list[Path]]) -> None:
    served, folder, extra = live
    target = sorted(folder.iterdir())[0]
    embedded_before = _count("embedded")
    new_content = extra[1].read_bytes()
    target.write_bytes(new_content)
    wait_until(lambda: _top(served, new_content) == target.name, timeout=20)
    assert served.client.search(new_content, limit=1).matches[0].score > 0.99
    assert _count("embedded") == embedded_before + 1
    assert served.client.status().indexed == 4


def test_renamed_file_has_new_path_and_keeps_its_vector(
    live: tuple[Served, Path, list[Path]],
) -> None:
    served, folder, _ = live
    source = sorted(folder.iterdir())[0]
    query = source.read_bytes()
    (folder / "sub").mkdir()
    embedded_before = _count("embedded")
    source.rename(folder / "sub" / "renamed.jpg")
    wait_until(lambda: _top(served, query) == "sub/renamed.jpg", timeout=20)
    # the old name may be reported a moment later (inotify pairs move events with a delay)
    wait_until(lambda: source.name not in _paths(served, query), timeout=20)
    wait_until(lambda: served.client.status().pending == 0)
    assert served.client.status().indexed == 4
    assert _count("embedded") == embedded_before  # the vector was reused, not recomputed


def test_deleted_subfolder_removes_its_images(live: tuple[Served, Path, list[Path]]) -> None:
    served, folder, extra = live
    sub = folder / "album"
    sub.mkdir()
    for photo in extra[:3]:
        shutil.copy(photo, sub / photo.name)
    wait_until(lambda: served.client.status().indexed == 7, timeout=30)
    shutil.rmtree(sub)
    wait_until(lambda: served.client.status().indexed == 4, timeout=30)
    assert not any(p.startswith("album/") for p in _paths(served, extra[0].read_bytes()))


def test_restart_reembeds_nothing_and_answers_the_same(
    tmp_path: Path, photo_folder: Path, serve: Callable[..., Served]
) -> None:
    data = tmp_path / "data"
    first = serve(photo_folder, data)
    first.wait_idle()
    queries = [encode(crop(load(p), 0.6)) for p in sorted(photo_folder.iterdir())[:5]]
    before = [first.client.search(q, limit=5) for q in queries]
    indexed = first.client.status().indexed
    first.stop()

    embedded_before = _count("embedded")
    second = serve(photo_folder, data)
    second.wait_idle()
    assert second.client.status().indexed == indexed
    assert _count("embedded") == embedded_before
    after = [second.client.search(q, limit=5) for q in queries]
    for old, new in zip(before, after, strict=True):
        assert [m.path for m in old.matches] == [m.path for m in new.matches]
        for a, b in zip(old.matches, new.matches, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-6)
