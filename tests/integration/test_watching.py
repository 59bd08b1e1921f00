"""Issue 3: the index ends up exactly equal to the folder, whatever happens on the way.

Real directories and real watchdog observers (native inotify and polling); no mocked events.
Every scenario ends with `assert_index_equals_folder`.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pillow_heif
import pytest

from imgsearch.metrics import INDEX_OPERATIONS
from tests.conftest import Served, wait_until
from tests.imaging import encode, load, variants

OBSERVERS = ["native", "polling"]


def _counter(op: str) -> float:
    return INDEX_OPERATIONS.labels(op)._value.get()


def _images_in(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix != ".txt"
        and not p.name.endswith(".part")
    }


def assert_index_equals_folder(
    served: Served, folder: Path, *, bad: set[str] = frozenset()
) -> None:
    """Index paths == image files in the folder (minus known-bad ones), one point each."""
    expected = _images_in(folder) - bad
    indexed = [s.path for s in served.app.store.indexed_files()]
    assert len(indexed) == len(set(indexed)), "duplicate points"
    assert set(indexed) == expected
    assert served.app.store.count() == len(expected)
    status = served.client.status()
    assert status.indexed == len(expected)
    assert status.pending == 0


@pytest.fixture(params=OBSERVERS)
def observer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.timeout(900)  # 500 x 14 points in local mode; slow on a loaded 2-core machine
def test_burst_of_500_files(
    tmp_path: Path, sample_photos: list[Path], serve: Callable[..., Served], observer: str
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    served = serve(folder, watch_mode=observer, image_size=128, batch_size=32)
    served.wait_idle()
    staged = tmp_path / "staged"
    staged.mkdir()
    for i, data in enumerate(variants(sample_photos, 500)):
        (staged / f"{i:03d}.jpg").write_bytes(data)
    embedded_before = _counter("embedded")
    for path in staged.iterdir():  # all at once, as a file manager would
        shutil.copy(path, folder / path.name)
    wait_until(lambda: served.client.status().indexed == 500, timeout=600, interval=0.5)
    wait_until(lambda: served.client.status().pending == 0)
    assert _counter("embedded") - embedded_before == 500  # each embedded exactly once
    assert_index_equals_folder(served, folder)


def test_file_written_slowly_is_read_only_when_complete(
    tmp_path: Path, sample_photos: list[Path], serve: Callable[..., Served], observer: str
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    served = serve(folder, watch_mode=observer)
    served.wait_idle()
    data = sample_photos[0].read_bytes()
    chunks = [data[i : i + len(data) // 6 + 1] for i in range(0, len(data), len(data) // 6 + 1)]
    seen_failures: list[str] = []
    stop = threading.Event()

    def watch_status() -> None:
        while not stop.is_set():
            seen_failures.extend(f.path for f in served.client.status().failures)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_status)
    watcher.start()
    try:
        with (folder / "slow.jpg").open("wb") as out:
            for chunk in chunks:  # ~3 s in all, pauses longer than the settle time
                out.write(chunk)
                out.flush()
                time.sleep(0.5)
        wait_until(lambda: served.client.status().indexed == 1, timeout=30)
    finally:
        stop.set()
        watcher.join()
    assert not seen_failures, "a half-written file was read and failed"
    top = served.client.search(data, limit=1).matches[0]
    assert (top.path, round(top.score, 3)) == ("slow.jpg", 1.0)
    assert_index_equals_folder(served, folder)


def test_temp_file_then_rename(
    tmp_path: Path, sample_photos: list[Path], serve: Callable[..., Served], observer: str
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    served = serve(folder, watch_mode=observer)
    served.wait_idle()
    data = sample_photos[1].read_bytes()
    embedded_before = _counter("embedded")
    temp = folder / "download.jpg.part"
    with temp.open("wb") as out:
        out.write(data[:1000])
        out.flush()
        time.sleep(1.0)
        out.write(data[1000:])
    time.sleep(1.0)
    assert served.client.status().indexed == 0  # the temporary name is never indexed
    temp.rename(folder / "download.jpg")
    wait_until(lambda: served.client.status().indexed == 1, timeout=20)
    wait_until(lambda: served.client.status().pending == 0)
    assert _counter("embedded") - embedded_before == 1
    assert served.client.status().failed == 0
    assert_index_equals_folder(served, folder)


def test_moves_within_and_out_of_the_tree(
    tmp_path: Path, photo_folder: Path, serve: Callable[..., Served], observer: str
) -> None:
    served = serve(photo_folder, watch_mode=observer)
    served.wait_idle()
    embedded_before = _counter("embedded")
    (photo_folder / "a" / "b").mkdir(parents=True)
    names = sorted(p.name for p in photo_folder.iterdir() if p.is_file())
    (photo_folder / names[0]).rename(photo_folder / "a" / "b" / names[0])
    (photo_folder / names[1]).rename(photo_folder / "a" / "renamed.jpg")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(photo_folder / names[2], outside / names[2])
    # a folder moved within the tree keeps all its files
    shutil.move(photo_folder / "a", photo_folder / "moved")
    wait_until(
        lambda: {s.path for s in served.app.store.indexed_files()} == _images_in(photo_folder),
        timeout=30,
    )
    wait_until(lambda: served.client.status().pending == 0)
    assert _counter("embedded") == embedded_before  # every move reused its vector
    assert_index_equals_folder(served, photo_folder)
    top = served.client.search((outside / names[2]).read_bytes(), limit=1).matches[0]
    assert top.path != names[2]


def test_deleted_subfolder(
    tmp_path: Path, sample_photos: list[Path], serve: Callable[..., Served], observer: str
) -> None:
    folder = tmp_path / "photos"
    (folder / "album" / "inner").mkdir(parents=True)
    for i, data in enumerate(variants(sample_photos, 12)):
        target = folder / ("album/inner" if i % 3 == 0 else "album" if i % 3 == 1 else ".")
        (target / f"{i}.jpg").write_bytes(data)
    served = serve(folder, watch_mode=observer)
    served.wait_idle()
    assert served.client.status().indexed == 12
    shutil.rmtree(folder / "album")
    wait_until(lambda: served.client.status().indexed == 4, timeout=30)
    assert_index_equals_folder(served, folder)


def test_root_removed_and_restored(
    tmp_path: Path, photo_folder: Path, serve: Callable[..., Served], observer: str
) -> None:
    served = serve(photo_folder, watch_mode=observer)
    served.wait_idle()
    count = served.client.status().indexed
    backup = tmp_path / "backup"
    shutil.copytree(photo_folder, backup)
    shutil.rmtree(photo_folder)
    wait_until(lambda: served.client.status().state == "folder_missing", timeout=20)
    time.sleep(2.0)  # several passes of the worker with the folder gone
    assert served.client.status().indexed == count  # nothing wiped
    assert served.client.search(next(backup.iterdir()).read_bytes(), limit=1).matches
    shutil.copytree(backup, photo_folder)
    wait_until(lambda: served.client.status().state == "watching", timeout=30)
    # events flow again on the restored folder
    (photo_folder / "after.png").write_bytes(encode(load(next(backup.iterdir())).rotate(90), "PNG"))
    wait_until(lambda: served.client.status().indexed == count + 1, timeout=30)
    assert_index_equals_folder(served, photo_folder)


def test_corrupt_files_beside_good_ones_and_retry_when_fixed(
    tmp_path: Path, photo_folder: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    good = photo_folder.joinpath(sample_photos[0].name).read_bytes()
    (photo_folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (photo_folder / "random.jpg").write_bytes(bytes(range(256)) * 40)
    (photo_folder / "empty.png").write_bytes(b"")
    (photo_folder / "notes.txt").write_text("not an image, and not a failure either")
    old = time.time() - 60  # written long ago: not a writer that is still busy
    for name in ("truncated.jpg", "random.jpg", "empty.png"):
        os.utime(photo_folder / name, (old, old))
    served = serve(photo_folder)
    served.wait_idle()
    status = served.client.status()
    reasons = {f.path: f.reason for f in status.failures}
    assert set(reasons) == {"truncated.jpg", "random.jpg", "empty.png"}
    assert "truncated" in reasons["truncated.jpg"]
    assert "not a recognised image format" in reasons["random.jpg"]
    assert "empty" in reasons["empty.png"]
    bad = set(reasons)
    assert_index_equals_folder(served, photo_folder, bad=bad)
    # fixing a file makes it indexed and clears its failure
    (photo_folder / "truncated.jpg").write_bytes(encode(load(sample_photos[1]).rotate(180)))
    wait_until(lambda: "truncated.jpg" not in {f.path for f in served.client.status().failures})
    wait_until(lambda: served.client.status().pending == 0)
    assert_index_equals_folder(served, photo_folder, bad=bad - {"truncated.jpg"})


def test_heic_and_lying_extensions(
    tmp_path: Path, photo_folder: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    image = load(sample_photos[2])
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=90)
    (photo_folder / "phone.heic").write_bytes(buffer.getvalue())
    (photo_folder / "png_named.jpg").write_bytes(encode(load(sample_photos[3]).rotate(90), "PNG"))
    (photo_folder / "no_extension").write_bytes(encode(load(sample_photos[4]).rotate(270)))
    served = serve(photo_folder)
    served.wait_idle()
    assert served.client.status().failed == 0
    assert_index_equals_folder(served, photo_folder)
    query = encode(image.resize((image.width // 2, image.height // 2)), quality=40)
    paths = [m.path for m in served.client.search(query, limit=2).matches]
    assert "phone.heic" in paths


def test_changes_while_stopped_converge_on_start(
    tmp_path: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    images = variants(sample_photos, 20)
    for i, data in enumerate(images[:15]):
        (folder / f"{i}.jpg").write_bytes(data)
    data_dir = tmp_path / "data"
    first = serve(folder, data_dir)
    first.wait_idle()
    first.stop()
    for i in range(3):
        (folder / f"{i}.jpg").unlink()
    (folder / "5.jpg").write_bytes(images[15])  # modified
    for i in range(16, 20):
        (folder / f"{i}.jpg").write_bytes(images[i])  # added
    (folder / "6.jpg").rename(folder / "six.jpg")  # moved
    embedded_before = _counter("embedded")
    second = serve(folder, data_dir)
    second.wait_idle()
    assert _counter("embedded") - embedded_before == 5  # 1 modified + 4 new; the move reused
    assert_index_equals_folder(second, folder)


def test_mass_deletion_is_held_until_confirmed(
    tmp_path: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, data in enumerate(variants(sample_photos, 30)):
        (folder / f"{i}.jpg").write_bytes(data)
    data_dir = tmp_path / "data"
    first = serve(folder, data_dir)
    first.wait_idle()
    first.stop()
    for i in range(20):  # e.g. a drive that was not mounted when the service came back
        (folder / f"{i}.jpg").unlink()
    second = serve(folder, data_dir)
    assert second.app.indexer is not None
    second.app.indexer.wait_ready(30)
    status = second.client.status()
    assert status.state == "deletion_held"
    assert status.held_deletions == 20
    assert status.indexed == 30
    second.client.rescan(allow_mass_delete=True)
    wait_until(lambda: second.client.status().indexed == 10, timeout=30)
    assert second.client.status().state == "watching"
    assert_index_equals_folder(second, folder)


def test_polling_fallback_when_native_events_fail(
    monkeypatch: pytest.MonkeyPatch, photo_folder: Path, serve: Callable[..., Served]
) -> None:
    import imgsearch.embedder.watcher as watcher_module

    class NoInotify(watcher_module.Observer):  # type: ignore[misc,valid-type]
        def schedule(self, *args: object, **kwargs: object) -> object:
            raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(watcher_module, "Observer", NoInotify)
    served = serve(photo_folder, watch_mode="auto")
    served.wait_idle()
    assert served.client.status().observer == "polling"
    shutil.copy(next(photo_folder.iterdir()), photo_folder / "copy.jpg")
    wait_until(lambda: served.client.status().indexed == len(_images_in(photo_folder)))
    assert_index_equals_folder(served, photo_folder)
