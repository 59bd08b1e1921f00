"""Synthetic descriptors that look like real ones, and exact nearest neighbours to grade ANN.

Random unit vectors in 1280-d are all nearly orthogonal, which is nothing like GeM
descriptors (non-negative, mean pairwise cosine ~0.4, photo series close together), and an
ANN index behaves differently on them. So the filler is drawn from a model fitted on real
descriptors of the benchmark photos: their mean plus a Gaussian in their leading principal
directions plus isotropic residual noise, clipped at zero like ReLU6 features and
L2-normalised. Points come in "series" (a shared component, like bursts of photos of one
scene), so near neighbours are close, as in a real folder. Generation is chunked and seeded
per chunk, so a million vectors never need to be held at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
_SERIES_SIZE = 20  # photos per series on average


@dataclass(frozen=True)
class DescriptorModel:
    mean: F32  # [D]
    components: F32  # [k, D] orthonormal directions
    scales: F32  # [k] standard deviations along them
    residual: float  # standard deviation of the rest, per dimension
    spread: float = 1.0  # scales every deviation from the mean (see calibrated())
    non_negative: bool = True  # GeM of ReLU6 features; a copy-detection embedding is signed

    @classmethod
    def fit(cls, real: F32, rank: int = 128) -> DescriptorModel:
        """Fit on real descriptors [n, D] (n >= 3)."""
        mean = real.mean(axis=0)
        centred = real - mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        variances = singular**2 / max(1, len(real) - 1)
        k = min(rank, len(variances) - 1)
        left = float(variances[k:].sum()) / max(1, real.shape[1] - k)
        return cls(
            mean=mean.astype(np.float32),
            components=vt[:k].astype(np.float32),
            scales=np.sqrt(variances[:k]).astype(np.float32),
            residual=float(np.sqrt(left)),
            non_negative=bool(real.min() >= 0),
        )

    def calibrated(self, real: F32, iterations: int = 14) -> DescriptorModel:
        """The same model with `spread` set so that the mean pairwise cosine of samples
        matches that of `real` (clipping at zero otherwise makes samples too alike)."""
        target = similarity_profile(real)["mean_cosine"]
        low, high = 0.25, 8.0
        model = self
        for _ in range(iterations):
            middle = (low * high) ** 0.5
            model = replace(self, spread=middle)
            if similarity_profile(model.sample(400, 7))["mean_cosine"] > target:
                low = middle  # samples too alike: spread them more
            else:
                high = middle
        return model

    @property
    def dimensions(self) -> int:
        return int(self.mean.shape[0])

    def sample(self, count: int, seed: int, total: int | None = None) -> F32:
        """`count` unit vectors; `seed` picks the chunk, `total` sets the number of series."""
        rng = np.random.default_rng([seed, 1])
        series_count = max(1, (total or count) // _SERIES_SIZE)
        series = rng.integers(0, series_count, size=count)
        # Series centres are drawn from their own seed, so every chunk sees the same ones.
        centres = _series_centres(series_count, len(self.scales))
        share = rng.uniform(0.2, 0.8, size=(count, 1)).astype(np.float32)
        fresh = rng.standard_normal((count, len(self.scales)), dtype=np.float32)
        latent = np.sqrt(share) * centres[series] + np.sqrt(1 - share) * fresh
        spread = np.float32(self.spread)
        vectors = self.mean + (latent * (self.scales * spread)) @ self.components
        noise = np.float32(self.residual * self.spread)
        vectors += rng.standard_normal(vectors.shape, dtype=np.float32) * noise
        if self.non_negative:
            np.clip(vectors, 0.0, None, out=vectors)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
        return vectors.astype(np.float32, copy=False)


def _series_centres(count: int, rank: int) -> F32:
    rng = np.random.default_rng([count, rank, 2])
    return rng.standard_normal((count, rank), dtype=np.float32)


class ExactTopK:
    """Brute-force top-k by cosine (dot product of unit vectors), fed chunk by chunk."""

    def __init__(self, queries: F32, k: int) -> None:
        self.queries = queries
        self.k = k
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), k), -1, dtype=np.int64)

    def add(self, vectors: F32, first_id: int) -> None:
        scores = self.queries @ vectors.T  # [q, n]
        ids = np.broadcast_to(np.arange(first_id, first_id + len(vectors)), scores.shape)
        all_scores = np.concatenate([self.scores, scores], axis=1)
        all_ids = np.concatenate([self.ids, ids], axis=1)
        top = np.argpartition(-all_scores, self.k - 1, axis=1)[:, : self.k]
        self.scores = np.take_along_axis(all_scores, top, axis=1)
        self.ids = np.take_along_axis(all_ids, top, axis=1)

    def result(self) -> tuple[NDArray[np.int64], F32]:
        """Ids and scores [q, k], best first."""
        order = np.argsort(-self.scores, axis=1)
        return np.take_along_axis(self.ids, order, axis=1), np.take_along_axis(
            self.scores, order, axis=1
        )


def similarity_profile(vectors: F32, sample: int = 500, seed: int = 3) -> dict[str, float]:
    """Mean pairwise cosine and mean nearest-neighbour cosine of a sample (realism check)."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)]
    gram = picked @ picked.T
    np.fill_diagonal(gram, -1.0)
    n = len(picked)
    off_diagonal = (gram.sum() + n) / max(1, n * (n - 1))
    return {"mean_cosine": float(off_diagonal), "nn_cosine": float(gram.max(axis=1).mean())}
