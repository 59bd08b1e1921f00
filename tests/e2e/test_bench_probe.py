"""The descriptor probe's scoring (bench/accuracy/probe.py) on vectors with known answers."""

from __future__ import annotations

import numpy as np

from bench.accuracy.probe import Embedded, evaluate, learn_whitening
from bench.accuracy.queries import Query


def _query(i: int, source: str | None) -> Query:
    return Query(f"q{i}", "jpeg", source, source or "held-out", "test", f"q{i}.jpg", {})


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def test_recall_and_calibrated_recall() -> None:
    rng = np.random.default_rng(0)
    index = _unit(rng.normal(size=(20, 1, 16)))
    # Queries 0-9: noisy copies of images 0-9; query 9's noise is large, so its source is
    # still first but a no-source query (10), a near copy of image 15, outscores it.
    noise = [0.05] * 9 + [0.9]
    sourced = [index[i, 0] + noise[i] * rng.normal(size=16) for i in range(10)]
    queries = _unit(np.stack([*sourced, index[15, 0] + 0.01 * rng.normal(size=16)]))[:, None]
    ids = [f"img{i}" for i in range(20)]
    sample = [_query(i, ids[i]) for i in range(10)] + [_query(10, None)]
    data = Embedded(ids, index, queries, np.zeros(11, dtype=bool), sample)

    result = evaluate(data, index, queries, margin=False)
    first = np.argmax(queries[:, 0] @ index[:, 0].T, axis=1)
    right = sum(int(first[i]) == i for i in range(10))
    assert result.recall_at_1 == right / 10
    assert result.calibrated < result.recall_at_1  # the near copy of image 15 sets the bar
    assert result.by_family["jpeg"] == (result.recall_at_1, result.calibrated)


def test_whitening_decorrelates_what_it_learned_on() -> None:
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(8, 8)) * np.linspace(3, 0.1, 8)
    vectors = (rng.normal(size=(4000, 8)) @ mixing + 5).astype(np.float32)
    white = learn_whitening(vectors, dims=4)
    out = white(vectors)
    assert out.shape == (4000, 4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Before the final L2 the kept components are uncorrelated with equal variance, so after
    # it no component dominates: every one carries roughly a quarter of the energy.
    energy = (out**2).mean(axis=0)
    np.testing.assert_allclose(energy, 0.25, atol=0.05)
