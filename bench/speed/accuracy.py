"""What the speed-ups cost in retrieval: rank-1 on degraded queries, agreement with production.

Index: the source photos (bundled samples + Debian photos, at most 2048 px). Queries: crops,
a half-size copy and quality-30 JPEGs of each (bench/speed/corpus.py). Every variant indexes
and queries with its own model and input size, scoring like the production searcher (best
pair of query view and indexed region; production indexes one whole-image vector, "regions"
adds the 13 regional rows). The same pass produces the real descriptors the serving section
searches for (bench/speed/serving.py Inputs).
"""

from __future__ import annotations

import hashlib
import statistics
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.speed import compat
from bench.speed.common import JSON, log
from bench.speed.corpus import Query, make_queries
from bench.speed.models import Encoders
from bench.speed.serving import Inputs
from bench.speed.vectors import DescriptorModel, similarity_profile
from imgsearch.model import ImageEncoder
from imgsearch.model.preprocess import DecodeLimits, decode_image

F32 = NDArray[np.float32]
PRODUCTION_VARIANT = ("fp32", compat.PRODUCTION_SIDE, compat.PRODUCTION_REGIONS)
Variant = tuple[str, int, bool]  # precision, input side, regions


def _describe(encoder: ImageEncoder, datas: list[bytes], side: int, regions: bool) -> F32:
    limits = DecodeLimits()
    rows = []
    for start in range(0, len(datas), 16):
        images = [decode_image(d, side, limits) for d in datas[start : start + 16]]
        rows += [compat.rows(d) for d in compat.describe(encoder, images, regions=regions)]
    return np.stack(rows)


def _query_vectors(encoder: ImageEncoder, queries: list[Query], side: int) -> F32:
    """What the searcher embeds (at the production side: with the framed view)."""
    own = None if side == compat.PRODUCTION_SIDE else side
    return np.stack([compat.query_vectors(encoder, q.data, own) for q in queries])


def _scores(index_rows: F32, query_vectors: F32) -> F32:
    """[nQ, P]: each photo's best (query scale, indexed row) cosine, as the searcher scores."""
    flat = index_rows.reshape(-1, index_rows.shape[-1])  # [P*R, C]
    pair = np.einsum("qsc,nc->qsn", query_vectors, flat)  # [nQ, Q, P*R]
    best = pair.max(axis=1).reshape(len(query_vectors), index_rows.shape[0], -1)
    scores: F32 = best.max(axis=2)
    return scores


def run(
    photos: list[Path],
    encoders: Encoders,
    per_photo: int,
    variants: list[Variant],
    queries_dir: Path,
) -> tuple[JSON, Inputs]:
    datas = [p.read_bytes() for p in photos]
    queries = make_queries(photos, per_photo)
    # Kind-major order, so the first n queries of the serving section cover many photos.
    queries.sort(key=lambda q: (q.kind, q.source))
    queries_dir.mkdir(parents=True, exist_ok=True)
    query_files = []
    for i, q in enumerate(queries):
        query_files.append(queries_dir / f"{i:04d}_{q.kind}.jpg")
        query_files[-1].write_bytes(q.data)
    truth = np.array([q.source for q in queries])
    log(f"accuracy: {len(photos)} photos, {len(queries)} queries, {len(variants)} variants")
    results: list[JSON] = []
    kept: dict[Variant, tuple[F32, F32, NDArray[np.int64]]] = {}
    query_cache: dict[tuple[str, int], F32] = {}
    for precision, side, regions in variants:
        encoder = encoders.get(precision, 2)[0]
        index_rows = _describe(encoder, datas, side, regions)
        if (precision, side) not in query_cache:
            query_cache[(precision, side)] = _query_vectors(encoder, queries, side)
        query_vectors = query_cache[(precision, side)]
        scores = _scores(index_rows, query_vectors)
        top1 = scores.argmax(axis=1)
        true_score = scores[np.arange(len(queries)), truth]
        masked = scores.copy()
        masked[np.arange(len(queries)), truth] = -np.inf
        kept[(precision, side, regions)] = (index_rows, query_vectors, top1)
        results.append(
            {
                "precision": precision,
                "side": side,
                "regions": regions,
                "rank1": float(np.mean(top1 == truth)),
                "margin_mean": float(np.mean(true_score - masked.max(axis=1))),
                "true_score_mean": float(np.mean(true_score)),
            }
        )
    base_rows, base_queries, base_top1 = kept[PRODUCTION_VARIANT]
    for entry in results:
        rows, query_vectors, top1 = kept[(entry["precision"], entry["side"], entry["regions"])]
        entry["top1_agreement_with_production"] = float(np.mean(top1 == base_top1))
        fp32 = kept.get(("fp32", entry["side"], entry["regions"]))
        if fp32 is not None and entry["precision"] != "fp32":
            # Same images, same size: fp32 and this precision's vectors, row by row.
            cos = np.concatenate(
                [
                    np.sum(rows * fp32[0], axis=-1).ravel(),
                    np.sum(query_vectors * fp32[1], axis=-1).ravel(),
                ]
            )
            entry["cosine_vs_fp32_mean"] = float(cos.mean())
            entry["cosine_vs_fp32_p01"] = float(np.quantile(cos, 0.01))
            entry["cosine_vs_fp32_min"] = float(cos.min())
    by_kind: dict[str, list[bool]] = {}
    for q, hit in zip(queries, base_top1 == truth, strict=True):
        by_kind.setdefault(q.kind, []).append(bool(hit))
    regional = kept.get(("fp32", compat.PRODUCTION_SIDE, True))
    real = np.concatenate([base_rows.reshape(-1, base_rows.shape[-1]), base_queries[:, 0]])
    model = DescriptorModel.fit(real).calibrated(base_rows[:, 0])
    section: JSON = {
        "photos": len(photos),
        "queries": len(queries),
        "query_kinds": {k: statistics.fmean(v) for k, v in by_kind.items()},
        "variants": results,
        "real_profile": similarity_profile(base_rows[:, 0]),
        "synthetic_profile": similarity_profile(model.sample(len(photos), 0)),
        "synthetic_spread": model.spread,
    }
    inputs = Inputs(
        photo_paths=[f"photos/{p.name}" for p in photos],
        photo_rows=base_rows,
        photo_regions=regional[0] if regional is not None else base_rows,
        photo_sha256=[hashlib.sha256(d).hexdigest() for d in datas],
        query_files=query_files,
        query_sources=[f"photos/{photos[q.source].name}" for q in queries],
        query_vectors=base_queries,
        model=model,
    )
    return section, inputs
