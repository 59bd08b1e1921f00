"""`imgsearch optimize`: the embedded qdrant-edge index gets its HNSW graph offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgsearch.cli import main
from imgsearch.descriptors import DescriptorSet
from imgsearch.store import FileState
from imgsearch.store.edge import EdgeStore

DIM = 32
IMAGES = 3000
WHOLE = np.array([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)


def _vectors(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _fill(store: EdgeStore, vectors: np.ndarray, start: int = 0) -> None:
    items = [
        (FileState(f"img{start + i}.jpg", 1, 1, f"sha{start + i}"), DescriptorSet(v[None], WHOLE))
        for i, v in enumerate(vectors)
    ]
    for first in range(0, len(items), 500):
        store.upsert(items[first : first + 500])


def _open(data: Path) -> EdgeStore:
    return EdgeStore.open_path(data / "edge", collection="images", dimensions=DIM, model="m")


def test_graph_is_built_kept_and_searched_like_the_plain_index(tmp_path: Path) -> None:
    vectors = _vectors(IMAGES)
    queries = vectors[:25] + 0.05 * _vectors(25, seed=1)
    store = _open(tmp_path)
    _fill(store, vectors)
    before = [[h.path for h in store.search(q, 5)] for q in queries]
    assert store.build_graph(min_segment_kb=1) == IMAGES
    after = [[h.path for h in store.search(q, 5)] for q in queries]
    assert [b[0] for b in before] == [f"img{i}.jpg" for i in range(25)]
    agreeing = sum(len(set(b) & set(a)) for b, a in zip(before, after, strict=True))
    assert agreeing >= 0.99 * 5 * len(queries)  # the graph's recall@5 against the scan
    # Written after the build: searchable at once (scanned until the next build).
    _fill(store, _vectors(1, seed=7), start=IMAGES)
    assert store.search(_vectors(1, seed=7)[0], 1)[0].path == f"img{IMAGES}.jpg"
    store.close()
    again = _open(tmp_path)  # reopened with the serving config: the graph is still there
    assert again.graph_vectors() == IMAGES
    assert again.count() == IMAGES + 1
    assert [h.path for h in again.search(queries[3], 1)] == ["img3.jpg"]
    again.close()


# The test store is named, so the collection is too (unnamed: one per model).
OPTIMIZE = ["optimize", "--collection", "images", "--data"]


def test_cli_builds_the_graph_and_refuses_while_the_index_is_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*OPTIMIZE, str(tmp_path)]) == 4  # failed: nothing to optimize
    assert "no embedded index 'images'" in capsys.readouterr().err
    store = _open(tmp_path)
    _fill(store, _vectors(50))
    assert main([*OPTIMIZE, str(tmp_path)]) == 4  # the service holds it
    assert "busy" in capsys.readouterr().err
    store.close()
    assert main([*OPTIMIZE, str(tmp_path)]) == 0
    # 50 small vectors are below the graph's minimum segment size: plain search stays.
    assert "0 of 50 vectors are in the graph" in capsys.readouterr().out
