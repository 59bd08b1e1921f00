"""An index belongs to its folder, remembers what failed, and reports progress that adds up."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imgsearch.errors import FolderError
from tests.conftest import Served, wait_until
from tests.imaging import variants

LONG_AGO = 1_000_000_000  # a file written long ago: failed at once, not retried as in progress


def _warnings_about(caplog: pytest.LogCaptureFixture, name: str) -> int:
    return sum(
        1
        for r in caplog.records
        if r.levelno == logging.WARNING and f"cannot index path={name}" in r.getMessage()
    )


def test_another_folder_does_not_inherit_an_index(
    serve: Callable[..., Served], photo_folder: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = serve(photo_folder, data)
    first.wait_idle()
    indexed = first.client.status().indexed
    first.stop()

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy2(next(photo_folder.iterdir()), other / "only.jpg")
    with pytest.raises(FolderError, match=rf"holds {indexed} images of {photo_folder}, not of"):
        serve(other, data)

    again = serve(photo_folder, data)  # its own folder: the index as it was, nothing lost
    again.wait_idle()
    assert again.client.status().indexed == indexed
    again.stop()

    # An unmounted folder is still its index's folder: served, waiting, nothing removed.
    unmounted = tmp_path / "unmounted"
    photo_folder.rename(unmounted)
    waiting = serve(photo_folder, data)
    wait_until(lambda: waiting.client.status().state == "folder_missing")
    unmounted.rename(photo_folder)
    wait_until(lambda: waiting.client.status().state == "watching", 60)
    assert waiting.client.status().indexed == indexed


def test_failures_are_remembered_across_restarts(
    serve: Callable[..., Served],
    photo_folder: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imgsearch")
    broken = photo_folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a whole JPEG")
    os.utime(broken, (LONG_AGO, LONG_AGO))
    data = tmp_path / "data"
    first = serve(photo_folder, data)
    first.wait_idle()
    assert first.client.status().failed == 1
    first.stop()
    assert _warnings_about(caplog, "broken.jpg") == 1

    second = serve(photo_folder, data)
    second.wait_idle()
    status = second.client.status()
    assert (status.failed, [f.path for f in status.failures]) == (1, ["broken.jpg"])
    second.stop()
    assert _warnings_about(caplog, "broken.jpg") == 1  # not read, not warned again

    os.utime(broken, (LONG_AGO + 60, LONG_AGO + 60))  # changed: tried again
    third = serve(photo_folder, data)
    third.wait_idle()
    assert third.client.status().failed == 1
    assert _warnings_about(caplog, "broken.jpg") == 2


def test_progress_adds_up_and_the_initial_index_is_reported_once(
    serve: Callable[..., Served],
    sample_photos: list[Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imgsearch")
    folder = tmp_path / "many"
    folder.mkdir()
    images = variants(sample_photos, 60)
    for i, data in enumerate(images):
        path = folder / f"v{i:03d}.jpg"
        path.write_bytes(data)
        os.utime(path, (LONG_AGO, LONG_AGO))
    served = serve(folder, tmp_path / "data", batch_size=4)
    samples = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = served.client.status()
        samples.append(status)
        if status.state == "watching" and status.pending == 0:
            break
        time.sleep(0.02)
    counted = [s for s in samples if s.state == "indexing"]
    assert len(counted) >= 3, [s.state for s in samples]
    for status in counted:
        assert status.indexed + status.failed + status.pending == len(images), status
        assert status.eta_seconds >= 0
    assert samples[-1].indexed == len(images)

    # The worker logs the line right after the batch that empties the queue is recorded.
    def initial_lines() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if "initial index complete" in r.getMessage()
        ]

    wait_until(lambda: bool(initial_lines()), 10)
    lines = initial_lines()
    assert len(lines) == 1 and lines[0].startswith(f"initial index complete: {len(images)} images")
