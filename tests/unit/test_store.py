"""Both embedded engines behind VectorStore, for real: qdrant-edge and qdrant-client local mode."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from imgsearch.descriptors import DescriptorSet
from imgsearch.errors import StoreMismatchError, StoreUnavailableError
from imgsearch.settings import StoreEngine
from imgsearch.store import FileState, StoreLocation, VectorStore, open_store

DIM = 32
ENGINES = [StoreEngine.EDGE, StoreEngine.LOCAL]


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _state(path: str, seed: int) -> FileState:
    return FileState(path, 100 + seed, 1_000 + seed, f"sha{seed}")


def _set(seed: int, regions: int = 3) -> DescriptorSet:
    """Whole image `seed`, plus region vectors (seeds 1000 * (seed + 1) + r)."""
    vectors = [_unit(seed)] + [_unit(1000 * (seed + 1) + r) for r in range(1, regions)]
    boxes = [[0, 0, 1, 1]] + [[0.5 * (r % 2), 0, 0.5 + 0.5 * (r % 2), 1] for r in range(1, regions)]
    return DescriptorSet(np.stack(vectors), np.asarray(boxes, dtype=np.float32))


def _open(
    path: Path, engine: StoreEngine, dimensions: int = DIM, *, grouped: bool = False
) -> VectorStore:
    return open_store(
        StoreLocation(path=path, engine=engine),
        collection="t",
        dimensions=dimensions,
        model="m",
        grouped=grouped,
    )


@pytest.fixture(params=ENGINES, ids=str)
def engine(request: pytest.FixtureRequest) -> StoreEngine:
    return StoreEngine(request.param)


@pytest.fixture
def store(tmp_path: Path, engine: StoreEngine) -> Iterator[VectorStore]:
    store = _open(tmp_path / "q", engine, grouped=True)
    yield store
    store.close()


def test_upsert_search_delete(store: VectorStore) -> None:
    items = [(_state(p, i), _set(i)) for i, p in enumerate(["a.jpg", "x/b.jpg", "x/y/c.jpg"])]
    store.upsert(items)
    store.upsert(items)  # idempotent
    assert store.count() == 3  # images, not points
    hits = store.search(_unit(1), 3)
    assert hits[0].path == "x/b.jpg"
    assert len({h.path for h in hits}) == len(hits) == 3  # one hit per image
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)  # edge: int8, rescored
    assert hits[0].box == (0.0, 0.0, 1.0, 1.0)
    region_hit = store.search(_unit(3001), 1)[0]  # region 1 of x/y/c.jpg
    assert (region_hit.path, region_hit.box) == ("x/y/c.jpg", (0.5, 0.0, 1.0, 1.0))
    two_queries = store.search(np.stack([_unit(0), _unit(2)]), 2)
    assert {h.path for h in two_queries} == {"a.jpg", "x/y/c.jpg"}
    assert {h.path for h in store.search(_unit(1), 3, subfolder="x")} == {"x/b.jpg", "x/y/c.jpg"}
    assert {h.path for h in store.search(_unit(1), 3, subfolder="/x/y/")} == {"x/y/c.jpg"}
    assert [h.path for h in store.search(_unit(1), 3, min_score=0.9)] == ["x/b.jpg"]
    assert {s.path for s in store.indexed_files()} == {"a.jpg", "x/b.jpg", "x/y/c.jpg"}
    assert store.indexed_among(["a.jpg", "nope.jpg", "x/b.jpg"]) == {"a.jpg", "x/b.jpg"}
    assert store.indexed_among([]) == set()
    vector = store.vector_of("x/b.jpg")
    assert vector is not None
    np.testing.assert_allclose(vector, _unit(1), atol=1e-6)
    assert store.vector_of("nope.jpg") is None
    stored = store.descriptors_with_sha256("sha2")
    assert stored is not None
    np.testing.assert_allclose(stored.vectors, _set(2).vectors, atol=1e-6)
    np.testing.assert_allclose(stored.boxes, _set(2).boxes, atol=1e-4)
    assert store.descriptors_with_sha256("sha9") is None
    assert set(store.descriptors_of(["a.jpg", "x/b.jpg", "nope.jpg"])) == {"a.jpg", "x/b.jpg"}
    store.delete_paths(["x/b.jpg", "x/y/c.jpg"])
    assert {s.path for s in store.indexed_files()} == {"a.jpg"}
    store.delete_paths(["a.jpg"])
    assert store.count() == 0
    assert store.search(_unit(0), 3) == []


def test_sha256_lookup_ignores_another_model(tmp_path: Path, engine: StoreEngine) -> None:
    store = _open(tmp_path / "q", engine)
    store.upsert([(_state("a.jpg", 0), _set(0, regions=1))])
    store.close()
    other = open_store(
        StoreLocation(path=tmp_path / "q", engine=engine),
        collection="t",
        dimensions=DIM,
        model="other",
    )
    assert other.descriptors_with_sha256("sha0") is None  # made by model "m"
    other.close()


def test_grouped_search_finds_enough_images(store: VectorStore) -> None:
    """Images with many regions close to the query must not crowd out other images."""
    near = _unit(7)
    crowd = []
    for i in range(6):
        vectors = np.stack([near + 0.01 * _unit(100 + 20 * i + r) for r in range(20)])
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        boxes = np.tile(np.asarray([0, 0, 1, 1], dtype=np.float32), (20, 1))
        crowd.append((_state(f"crowd{i}.jpg", i), DescriptorSet(vectors, boxes)))
    store.upsert(crowd + [(_state(f"far{i}.jpg", 50 + i), _set(50 + i)) for i in range(10)])
    hits = store.search(near, 10)
    assert len(hits) == 10
    assert {h.path for h in hits[:6]} == {f"crowd{i}.jpg" for i in range(6)}


def test_reopen_keeps_data_and_checks_dimensions(tmp_path: Path, engine: StoreEngine) -> None:
    store = _open(tmp_path / "q", engine)
    store.upsert([(_state("a.jpg", 0), _set(0))])
    store.close()
    again = _open(tmp_path / "q", engine)
    assert [s.path for s in again.indexed_files()] == ["a.jpg"]
    assert again.search(_unit(0), 1)[0].path == "a.jpg"
    again.close()
    with pytest.raises(StoreMismatchError, match="size 32"):
        _open(tmp_path / "q", engine, dimensions=64)


def _hold(path: Path, engine: str, ready: multiprocessing.synchronize.Event) -> None:
    store = _open(path, StoreEngine(engine))
    ready.set()
    signal.pause()
    store.close()


def test_second_process_finds_the_store_busy(tmp_path: Path, engine: StoreEngine) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold, args=(tmp_path / "q", str(engine), ready))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreUnavailableError, match="busy"):
            _open(tmp_path / "q", engine)
    finally:
        holder.kill()
        holder.join()
    _open(tmp_path / "q", engine).close()  # free again once the holder is gone


def _write_and_die(path: Path, engine: str, count: int) -> None:
    store = _open(path, StoreEngine(engine))
    store.upsert([(_state(f"{i}.jpg", i), _set(i, regions=2)) for i in range(count)])
    store.delete_paths(["0.jpg"])
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no flush


def test_writes_survive_sigkill(tmp_path: Path) -> None:
    """Edge only: local mode persists on close and its own process exit (not under SIGKILL)."""
    context = multiprocessing.get_context("spawn")
    writer = context.Process(target=_write_and_die, args=(tmp_path / "q", "edge", 50))
    writer.start()
    writer.join(60)
    assert writer.exitcode == -signal.SIGKILL
    store = _open(tmp_path / "q", StoreEngine.EDGE)
    assert store.count() == 49
    assert store.search(_unit(7), 1)[0].path == "7.jpg"
    store.close()


def test_paging_through_many_points(store: VectorStore) -> None:
    store.upsert([(_state(f"{i}.jpg", i), _set(i, regions=1)) for i in range(2500)])
    assert len({s.path for s in store.indexed_files()}) == 2500
    assert store.count() == 2500
    store.delete_paths([f"{i}.jpg" for i in range(1500)])  # more than one delete page
    assert store.count() == 1000


def test_closed_store_is_unavailable(tmp_path: Path, engine: StoreEngine) -> None:
    store = _open(tmp_path / "q", engine)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreUnavailableError):
        store.ping()


def test_indexing_and_searching_from_threads(store: VectorStore) -> None:
    """`imgsearch serve`: the embedder writes while the searcher reads, through one store."""
    errors: list[BaseException] = []

    def write(start: int) -> None:
        try:
            for i in range(start, start + 100, 20):
                store.upsert(
                    [(_state(f"w/{j}.jpg", j), _set(j, regions=2)) for j in range(i, i + 20)]
                )
                store.delete_paths([f"w/{i}.jpg"])
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            for i in range(30):
                store.search(_unit(i), 5, subfolder="w")
                store.indexed_among([f"w/{i}.jpg"])
                store.count()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in (0, 100)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert store.count() == 200 - 10
    assert {s.path for s in store.indexed_files()} == {f"w/{j}.jpg" for j in range(200) if j % 20}
