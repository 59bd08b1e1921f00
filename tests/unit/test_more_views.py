"""A query's further views (a screenshot's layout blocks) are described only when its first
views find nothing conclusive; then they take part in the search. Real qdrant-edge store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from imgsearch.backbones import Contract
from imgsearch.descriptors import WHOLE_IMAGE_BOX, DescriptorSet
from imgsearch.model import QueryDescription
from imgsearch.searcher.verdict import Ranker
from imgsearch.settings import TUNING, VerdictSettings
from imgsearch.store import FileState, StoreLocation, VectorStore, open_store

DIM = 32


def _unit(seed: int) -> NDArray[np.float32]:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VectorStore]:
    store = open_store(
        StoreLocation(path=tmp_path / "q"), collection="t", dimensions=DIM, model="m"
    )
    store.upsert(
        [
            (
                FileState(f"{seed}.jpg", 100, 1_000, f"sha{seed}"),
                DescriptorSet(np.atleast_2d(_unit(seed)), WHOLE_IMAGE_BOX),
            )
            for seed in range(20)
        ]
    )
    yield store
    store.close()


class _More:
    """Further views that count how often they are asked for."""

    def __init__(self, vectors: NDArray[np.float32]) -> None:
        self.vectors, self.calls = vectors, 0

    def __call__(self) -> NDArray[np.float32]:
        self.calls += 1
        return self.vectors


def test_further_views_only_when_not_conclusive(store: VectorStore) -> None:
    ranker = Ranker(store, VerdictSettings().for_model(TUNING[Contract.EMBEDDING]), threads=1)
    # The first view is an indexed image itself: conclusive, the further views stay undone.
    more = _More(np.atleast_2d(_unit(3)))
    ranking = ranker.rank(QueryDescription(np.atleast_2d(_unit(7)), None, more), 5)
    assert ranking.matches[0].path == "7.jpg" and ranking.matches[0].match
    assert more.calls == 0
    # The first view resembles nothing; a further view is image 3: asked for, and it wins.
    more = _More(np.atleast_2d(_unit(3)))
    ranking = ranker.rank(QueryDescription(np.atleast_2d(_unit(999)), None, more), 5)
    assert more.calls == 1
    assert ranking.matches[0].path == "3.jpg" and ranking.matches[0].match
