"""A killed `imgsearch optimize` leaves nothing behind once the store is opened again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from imgsearch.descriptors import WHOLE_IMAGE_BOX, DescriptorSet
from imgsearch.store import FileState
from imgsearch.store.edge import EdgeStore

POINTS = 60_000
DIM = 256


def _fill(data: Path) -> None:
    store = EdgeStore.open_path(data / "edge", collection="images", dimensions=DIM, model="m")
    rng = np.random.default_rng(0)
    for start in range(0, POINTS, 5_000):
        vectors = rng.normal(size=(5_000, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.upsert(
            [
                (
                    FileState(f"{start + i}.jpg", 1, 1, f"{start + i}"),
                    DescriptorSet(v[None], WHOLE_IMAGE_BOX),
                )
                for i, v in enumerate(vectors)
            ]
        )
    store.close()


def test_a_killed_graph_build_leaves_nothing_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _fill(data)
    temp = data / "edge" / "images" / "temp_segments"
    command = [sys.executable, "-m", "imgsearch.cli", "optimize", "--data", str(data)]
    command += ["--collection", "images"]  # the test store's name (unnamed: one per model)
    build = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (temp.is_dir() and any(temp.iterdir())):
            assert time.monotonic() < deadline, "the build never started a segment"
            assert build.poll() is None, "the build ended before it could be killed"
            time.sleep(0.05)
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait(30)
    assert any(temp.iterdir())  # what the kill left: as large as the data

    store = EdgeStore.open_existing(data / "edge", collection="images")
    assert store is not None
    try:
        assert not any(temp.iterdir())
        assert store.count() == POINTS  # nothing lost
    finally:
        store.close()
