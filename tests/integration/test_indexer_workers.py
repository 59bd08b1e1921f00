"""Parallel embedding workers: the same index as one worker, and the indexer's invariants kept
when files are deleted or changed while they are being embedded. Real model, real store."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from imgsearch.descriptors import DescriptorSet
from imgsearch.embedder.indexer import Indexer
from imgsearch.model import DecodedImage, ImageEncoder
from imgsearch.settings import IndexSettings, ModelSettings
from imgsearch.store import StoreLocation, VectorStore, open_store
from tests.conftest import wait_until
from tests.imaging import crop, encode, load


def _open_store(path: Path, encoder: ImageEncoder) -> VectorStore:
    return open_store(
        StoreLocation(path=path),
        collection="t",
        dimensions=encoder.dimensions,
        model=encoder.name,
        grouped=True,
    )


@pytest.fixture(scope="module")
def worker_encoder() -> ImageEncoder:
    return ImageEncoder(ModelSettings(model="efficientnet-lite0"), threads=1)


@pytest.fixture
def many_photos(tmp_path: Path, sample_photos: list[Path]) -> Path:
    """Real photos and crops of them, a byte-identical copy, a broken JPEG and a text file."""
    folder = tmp_path / "many"
    (folder / "sub").mkdir(parents=True)
    for i, photo in enumerate(sample_photos):
        shutil.copy2(photo, folder / photo.name)
        image = load(photo)
        for j, (area, anchor) in enumerate([(0.5, (0.2, 0.3)), (0.3, (0.8, 0.6))]):
            data = encode(crop(image, area, anchor), quality=70 + 10 * j)
            (folder / "sub" / f"crop{i}_{j}.jpg").write_bytes(data)
    shutil.copy2(sample_photos[0], folder / "sub" / "twin.jpg")
    (folder / "broken.jpg").write_bytes(sample_photos[1].read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image")
    old = 1_000_000_000  # long settled: no waiting for writers
    for path in folder.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))
    return folder


def _indexer(
    folder: Path, encoder: ImageEncoder, store: VectorStore, workers: int, batch: int = 16
) -> Indexer:
    settings = IndexSettings(
        batch_size=batch, settle_seconds=0.0, rescan_interval=0, regions=True, embed_workers=workers
    )
    return Indexer(folder, encoder, store, settings)


def _wait_idle(indexer: Indexer, timeout: float = 120.0) -> None:
    assert indexer.wait_ready(timeout)
    wait_until(lambda: indexer.status().state == "watching", timeout)


def _files(folder: Path) -> dict[str, str]:
    """Image files below `folder` by relative path, with the sha256 of their content."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and p.name not in ("broken.jpg", "notes.txt")
    }


def _indexed(store: VectorStore) -> dict[str, DescriptorSet]:
    paths = [state.path for state in store.indexed_files()]
    return store.descriptors_of(paths)


def _assert_same(got: DescriptorSet, expected: DescriptorSet) -> None:
    assert got.vectors.shape == expected.vectors.shape
    np.testing.assert_allclose(got.vectors, expected.vectors, atol=2e-5)
    np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-4)  # stored rounded


def test_two_workers_build_the_index_one_worker_builds(
    tmp_path: Path,
    many_photos: Path,
    sample_photos: list[Path],
    encoder: ImageEncoder,
    worker_encoder: ImageEncoder,
) -> None:
    built: list[dict[str, DescriptorSet]] = []
    for name, enc, workers in [("one", encoder, 1), ("two", worker_encoder, 2)]:
        store = _open_store(tmp_path / name, enc)
        indexer = _indexer(many_photos, enc, store, workers, batch=5)
        indexer.start()
        try:
            _wait_idle(indexer)
            status = indexer.status()
        finally:
            indexer.stop()
        assert (status.indexed, status.failed, status.pending) == (len(_files(many_photos)), 1, 0)
        assert [path for path, _ in status.failures] == ["broken.jpg"]
        states = {s.path: s.sha256 for s in store.indexed_files()}
        assert states == _files(many_photos)
        built.append(_indexed(store))
        store.close()
    one, two = built
    assert one.keys() == two.keys()
    for path in one:
        _assert_same(two[path], one[path])
    _assert_same(two["sub/twin.jpg"], two[sample_photos[0].name])


class _GatedEncoder(ImageEncoder):
    """Holds every forward pass until released, so the test can act while files embed."""

    def __init__(self) -> None:
        super().__init__(ModelSettings(model="efficientnet-lite0"), threads=1)
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def describe(
        self, images: Sequence[DecodedImage], *, regions: bool = True
    ) -> list[DescriptorSet]:
        self.entered.release()
        assert self.release.wait(60)
        return super().describe(images, regions=regions)


@pytest.fixture
def gated() -> Iterator[_GatedEncoder]:
    encoder = _GatedEncoder()
    yield encoder
    encoder.release.set()


def test_deletes_and_changes_during_embedding_keep_the_index_equal_to_the_folder(
    tmp_path: Path,
    many_photos: Path,
    sample_photos: list[Path],
    gated: _GatedEncoder,
    worker_encoder: ImageEncoder,
) -> None:
    store = _open_store(tmp_path / "q", gated)
    indexer = _indexer(many_photos, gated, store, workers=2, batch=8)
    indexer.start()
    try:
        # Both workers are inside a forward pass: their files were read and hashed.
        assert gated.entered.acquire(timeout=60) and gated.entered.acquire(timeout=60)
        first_batch = sorted(p.name for p in many_photos.iterdir() if p.is_file())
        # Whatever the first batch holds, act on every top-level photo: delete half, rewrite
        # the other half with another photo's content (the watcher would schedule each).
        touched = sorted(p for p in first_batch if p not in ("broken.jpg", "notes.txt"))
        deleted, rewritten = touched[::2], touched[1::2]
        for name in deleted:
            (many_photos / name).unlink()
            indexer.schedule(name, delay=0)
        for name in rewritten:
            (many_photos / name).write_bytes(encode(crop(load(sample_photos[-1]), 0.4), quality=60))
            os.utime(many_photos / name, (1_000_000_100, 1_000_000_100))
            indexer.schedule(name, delay=0)
        (many_photos / "late.jpg").write_bytes(sample_photos[2].read_bytes())
        os.utime(many_photos / "late.jpg", (1_000_000_100, 1_000_000_100))
        indexer.schedule("late.jpg", delay=0)
        gated.release.set()
        _wait_idle(indexer)
    finally:
        indexer.stop()
    try:
        files = _files(many_photos)
        assert {s.path: s.sha256 for s in store.indexed_files()} == files
        indexed = _indexed(store)
        for name in deleted:
            assert name not in indexed
        expected = {
            path: worker_encoder.describe(
                [worker_encoder.decode((many_photos / path).read_bytes())]
            )[0]
            for path in [*rewritten, "late.jpg", "sub/crop0_0.jpg"]
        }
        for path, descriptors in expected.items():
            _assert_same(indexed[path], descriptors)
    finally:
        store.close()


def test_stopping_mid_way_loses_nothing(
    tmp_path: Path, many_photos: Path, worker_encoder: ImageEncoder
) -> None:
    store = _open_store(tmp_path / "q", worker_encoder)
    first = _indexer(many_photos, worker_encoder, store, workers=2, batch=3)
    first.start()
    assert first.wait_ready(60)
    wait_until(lambda: first.status().indexed >= 3, 60)
    first.stop()  # mid-way: the files not written yet are found again by the next scan
    second = _indexer(many_photos, worker_encoder, store, workers=2, batch=3)
    second.start()
    try:
        _wait_idle(second)
    finally:
        second.stop()
    assert {s.path: s.sha256 for s in store.indexed_files()} == _files(many_photos)
    store.close()


class _PriorityRecordingEncoder(ImageEncoder):
    """Notes the scheduling priority (nice) of each thread its forward passes run on."""

    def __init__(self) -> None:
        super().__init__(ModelSettings(model="efficientnet-lite0"), threads=1)
        self.nice: set[int] = set()

    def describe(
        self, images: Sequence[DecodedImage], *, regions: bool = True
    ) -> list[DescriptorSet]:
        self.nice.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return super().describe(images, regions=regions)


@pytest.mark.parametrize("nice", [10, 0])
def test_indexing_runs_below_searches(tmp_path: Path, sample_photos: list[Path], nice: int) -> None:
    """The embedding threads run `nice` steps down, so searches (on the other threads of the
    process, which keep their priority) get the cores first during a large indexing run."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sample_photos[:4]:
        shutil.copy2(photo, folder / photo.name)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    encoder = _PriorityRecordingEncoder()
    store = _open_store(tmp_path / "store", encoder)
    settings = IndexSettings(
        batch_size=2, settle_seconds=0.0, rescan_interval=0, embed_workers=2, nice=nice
    )
    indexer = Indexer(folder, encoder, store, settings)
    indexer.start()
    try:
        _wait_idle(indexer)
    finally:
        indexer.stop()
        store.close()
    assert indexer.status().indexed == 4
    assert encoder.nice == {min(19, base + nice)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
