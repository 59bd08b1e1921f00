"""VectorStore on the real qdrant-client in local mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from imgsearch.errors import StoreMismatchError, StoreUnavailableError
from imgsearch.model import DescriptorSet
from imgsearch.store import FileState, VectorStore

DIM = 32


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _state(path: str, seed: int) -> FileState:
    return FileState(path, 100 + seed, 1_000 + seed, f"sha{seed}")


def _set(seed: int, regions: int = 3) -> DescriptorSet:
    """Whole image `seed`, plus region vectors (seeds 1000 * seed + r)."""
    vectors = [_unit(seed)] + [_unit(1000 * seed + r) for r in range(1, regions)]
    boxes = [[0, 0, 1, 1]] + [[0.5 * (r % 2), 0, 0.5 + 0.5 * (r % 2), 1] for r in range(1, regions)]
    return DescriptorSet(np.stack(vectors), np.asarray(boxes, dtype=np.float32))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VectorStore]:
    store = VectorStore.open(
        path=tmp_path / "q", collection="t", dimensions=DIM, model="m", grouped=True
    )
    yield store
    store.close()


def test_upsert_search_delete(store: VectorStore) -> None:
    items = [(_state(p, i), _set(i)) for i, p in enumerate(["a.jpg", "x/b.jpg", "x/y/c.jpg"])]
    store.upsert(items)
    store.upsert(items)  # idempotent
    assert store.count() == 3  # images, not points
    hits = store.search(_unit(1), 3)
    assert hits[0].path == "x/b.jpg"
    assert len({h.path for h in hits}) == len(hits)  # one hit per image
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].box == (0.0, 0.0, 1.0, 1.0)
    region_hit = store.search(_unit(2001), 1)[0]  # region 1 of x/y/c.jpg
    assert (region_hit.path, region_hit.box) == ("x/y/c.jpg", (0.5, 0.0, 1.0, 1.0))
    two_queries = store.search(np.stack([_unit(0), _unit(2)]), 2)
    assert {h.path for h in two_queries} == {"a.jpg", "x/y/c.jpg"}
    assert {h.path for h in store.search(_unit(1), 3, subfolder="x")} == {"x/b.jpg", "x/y/c.jpg"}
    assert {s.path for s in store.indexed_files()} == {"a.jpg", "x/b.jpg", "x/y/c.jpg"}
    stored = store.descriptors_with_sha256("sha2")
    assert stored is not None
    np.testing.assert_allclose(stored.vectors, _set(2).vectors, atol=1e-6)
    np.testing.assert_allclose(stored.boxes, _set(2).boxes, atol=1e-4)
    store.delete_folder("x")
    assert {s.path for s in store.indexed_files()} == {"a.jpg"}
    store.delete_paths(["a.jpg"])
    assert store.count() == 0


def test_reopen_keeps_data_and_checks_dimensions(tmp_path: Path) -> None:
    store = VectorStore.open(path=tmp_path / "q", collection="t", dimensions=DIM, model="m")
    store.upsert([(_state("a.jpg", 0), _set(0))])
    with pytest.raises(StoreUnavailableError, match="busy"):
        VectorStore.open(path=tmp_path / "q", collection="t", dimensions=DIM, model="m")
    store.close()
    again = VectorStore.open(path=tmp_path / "q", collection="t", dimensions=DIM, model="m")
    assert [s.path for s in again.indexed_files()] == ["a.jpg"]
    again.close()
    with pytest.raises(StoreMismatchError, match="size 32"):
        VectorStore.open(path=tmp_path / "q", collection="t", dimensions=64, model="m")


def test_paging_through_many_points(store: VectorStore) -> None:
    store.upsert([(_state(f"{i}.jpg", i), _set(i, regions=1)) for i in range(2500)])
    assert len({s.path for s in store.indexed_files()}) == 2500
