"""VectorStore on the real qdrant-client in local mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgsearch.errors import StoreMismatchError, StoreUnavailableError
from imgsearch.store import FileState, VectorStore

DIM = 32


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _state(path: str, seed: int) -> FileState:
    return FileState(path, 100 + seed, 1_000 + seed, f"sha{seed}")


@pytest.fixture
def store(tmp_path: Path) -> VectorStore:
    return VectorStore.open(path=tmp_path / "q", collection="t", dimensions=DIM, model="m")


def test_upsert_search_delete(store: VectorStore) -> None:
    items = [(_state(p, i), _unit(i)) for i, p in enumerate(["a.jpg", "x/b.jpg", "x/y/c.jpg"])]
    store.upsert(items)
    store.upsert(items)  # idempotent
    assert store.count() == 3
    hits = store.search(_unit(1), 3)
    assert hits[0].path == "x/b.jpg"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert {h.path for h in store.search(_unit(1), 3, subfolder="x")} == {"x/b.jpg", "x/y/c.jpg"}
    assert {s.path for s in store.indexed_files()} == {"a.jpg", "x/b.jpg", "x/y/c.jpg"}
    vector = store.vector_with_sha256("sha2")
    assert vector is not None
    np.testing.assert_allclose(vector, _unit(2), atol=1e-6)
    store.delete_folder("x")
    assert {s.path for s in store.indexed_files()} == {"a.jpg"}
    store.delete_paths(["a.jpg"])
    assert store.count() == 0


def test_reopen_keeps_data_and_checks_dimensions(tmp_path: Path) -> None:
    store = VectorStore.open(path=tmp_path / "q", collection="t", dimensions=DIM, model="m")
    store.upsert([(_state("a.jpg", 0), _unit(0))])
    with pytest.raises(StoreUnavailableError, match="busy"):
        VectorStore.open(path=tmp_path / "q", collection="t", dimensions=DIM, model="m")
    store.close()
    again = VectorStore.open(path=tmp_path / "q", collection="t", dimensions=DIM, model="m")
    assert [s.path for s in again.indexed_files()] == ["a.jpg"]
    again.close()
    with pytest.raises(StoreMismatchError, match="size 32"):
        VectorStore.open(path=tmp_path / "q", collection="t", dimensions=64, model="m")


def test_paging_through_many_points(store: VectorStore) -> None:
    store.upsert([(_state(f"{i}.jpg", i), _unit(i)) for i in range(2500)])
    assert len({s.path for s in store.indexed_files()}) == 2500
