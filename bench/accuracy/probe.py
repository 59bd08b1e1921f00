"""Descriptor probe: which scoring and descriptor variants would pay off, before building them.

`python -m bench.accuracy.probe` embeds the benchmark's indexed folder once with the product's
encoder (whole image and regions from one forward pass) and a stratified sample of its
queries (both query scales, and the framed view where the query has flat borders), then scores
every variant by exact cosine search in numpy: raw scores or the margin over the query's
background, global or regional index vectors, with or without query framing, and PCA
whitening learned on the indexed images (all of them, or only a small part as a tiny folder
would have). Nothing here is served; the full benchmark measures what the product does.

Per variant: recall@1 over sourced queries, and "calibrated recall": the share of sourced
queries whose first candidate is right and scores above every no-source query's first score
(zero false matches in the sample).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.accuracy import corpus as corpus_module
from bench.accuracy import queries as queries_module
from bench.accuracy.cli import FULL, QUICK
from bench.accuracy.progress import Progress, log
from bench.accuracy.queries import Query
from bench.accuracy.transforms import FAMILIES, QUICK_FAMILIES
from imgsearch.backbones import Contract
from imgsearch.model import ImageEncoder
from imgsearch.searcher.verdict import BACKGROUND_SIZE
from imgsearch.settings import TUNING, ModelSettings

F32 = NDArray[np.float32]
REPO = Path(__file__).resolve().parents[2]
# The margin variants subtract the share of the background the feature-map backbone uses.
MARGIN_WEIGHT = TUNING[Contract.FEATURE_MAP].background_weight


@dataclass(frozen=True)
class Embedded:
    ids: list[str]
    index: F32  # [N, R, C]: row 0 whole image, then regions
    queries: F32  # [M, V, C]: the query's views (scales, then framed or a repeat of view 0)
    framed: NDArray[np.bool_]  # [M]
    sample: list[Query]


def _embed(db: Path, folder: Path, ids: list[str], sample: list[Query]) -> Embedded:
    encoder = ImageEncoder(ModelSettings(model="efficientnet-lite0"), threads=2)
    index = []
    progress = Progress("probe: embedding the indexed folder", len(ids))
    for item in ids:
        image = encoder.decode((db / item).read_bytes())
        index.append(encoder.describe([image], regions=True)[0].vectors)
        progress.step()
    progress.close()
    views, framed = [], []
    progress = Progress("probe: embedding the sampled queries", len(sample))
    for query in sample:
        data = (folder / query.file).read_bytes()
        image = encoder.decode(data)
        frame = encoder.decode_framed(data, image)
        vectors = encoder.encode_query(image, frame)
        if frame is None:
            vectors = np.concatenate([vectors, vectors[:1]])
        views.append(vectors)
        framed.append(frame is not None)
        progress.step()
    progress.close()
    return Embedded(ids, np.stack(index), np.stack(views), np.asarray(framed), sample)


def _l2(x: F32) -> F32:
    out: F32 = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    return out


def learn_whitening(
    vectors: F32, dims: int, power: float = 0.5, shrink: float = 1e-3
) -> Callable[[F32], F32]:
    """PCA whitening (eigenvalues raised by `shrink` of the largest, which tames the noisy
    small ones of a small sample), then L2."""
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    values, basis = np.linalg.eigh(centred.T @ centred / len(vectors))
    order = np.argsort(values)[::-1][:dims]
    scale = np.power(values[order] + values[order][0] * shrink, power)
    projection = (basis[:, order] / scale[None, :]).astype(np.float32)
    return lambda x: _l2(((x - mean) @ projection).astype(np.float32))


@dataclass(frozen=True)
class Scores:
    recall_at_1: float
    calibrated: float
    by_family: dict[str, tuple[float, float]]


def evaluate(data: Embedded, index: F32, queries: F32, *, margin: bool) -> Scores:
    """Exact search: an image scores its best (query view, index row) pair."""
    rows = index.reshape(-1, index.shape[-1]).T  # one matrix product per view (BLAS)
    scores = np.max(
        [
            (view @ rows).reshape(len(view), *index.shape[:2]).max(axis=2)
            for view in queries.transpose(1, 0, 2)
        ],
        axis=0,
    )
    order = np.argsort(-scores, axis=1)[:, :BACKGROUND_SIZE]
    best = np.take_along_axis(scores, order, axis=1)
    confidence = best[:, 0] - (MARGIN_WEIGHT * best.mean(axis=1) if margin else 0.0)
    position = {item: i for i, item in enumerate(data.ids)}
    no_source = [i for i, q in enumerate(data.sample) if q.source is None]
    bar = max((float(confidence[i]) for i in no_source), default=-np.inf)
    tallies: dict[str, list[int]] = {}
    for i, query in enumerate(data.sample):
        if query.source is None:
            continue
        right = int(order[i, 0]) == position[query.source]
        tally = tallies.setdefault(query.family, [0, 0, 0])
        tally[0] += 1
        tally[1] += right
        tally[2] += right and float(confidence[i]) > bar
    total = [sum(t[k] for t in tallies.values()) for k in range(3)]
    return Scores(
        total[1] / total[0],
        total[2] / total[0],
        {f: (t[1] / t[0], t[2] / t[0]) for f, t in tallies.items()},
    )


def _variants(data: Embedded) -> list[tuple[str, F32, F32, bool]]:
    """(name, index vectors, query views, margin) per variant."""
    whole, regions = data.index[:, :1], data.index
    plain = data.queries[:, :-1]  # without the framed view
    framed = data.queries
    out = [
        ("score, global (before this session)", whole, plain, False),
        ("margin, global", whole, plain, True),
        ("margin, global, framed queries (production default)", whole, framed, True),
        ("margin, regions, framed queries (REGIONS=true)", regions, framed, True),
    ]
    # What production could do with regions off: learn on the whole-image rows it stores.
    rows = data.index[:, 0]
    subset = np.random.default_rng(0).permutation(len(rows))
    for dims, size in ((512, len(rows)), (1024, len(rows)), (1024, 1000), (512, 300)):
        white = learn_whitening(rows[subset[:size]], dims, shrink=1e-3 if size > dims else 1e-1)
        learned = "all indexed" if size == len(rows) else f"{size} random indexed images"
        out.append(
            (
                f"margin, global, framed, PCA-whitened {dims}-d (learned on {learned})",
                white(whole),
                white(framed),
                True,
            )
        )
    everything = data.index.reshape(-1, data.index.shape[-1])
    sources = np.asarray([i.startswith("photos/") for i in data.ids])
    for dims in (256, 512):
        white = learn_whitening(everything, dims)
        out.append(
            (
                f"margin, regions, framed, PCA-whitened {dims}-d (learned on all indexed)",
                white(regions),
                white(framed),
                True,
            )
        )
    tiny = learn_whitening(data.index[sources][:100].reshape(-1, data.index.shape[-1]), 512)
    out.append(
        (
            "margin, regions, framed, PCA-whitened 512-d (learned on 100 images)",
            tiny(regions),
            tiny(framed),
            True,
        )
    )
    return out


def stratified(queries: Sequence[Query], per_family: int, seed: int = 0) -> list[Query]:
    """`per_family` sourced and half as many no-source queries of every family."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret
    sample: list[Query] = []
    for family in sorted({q.family for q in queries}):
        sourced = [q for q in queries if q.family == family and q.source is not None]
        none = [q for q in queries if q.family == family and q.source is None]
        sample += rng.sample(sourced, min(per_family, len(sourced)))
        sample += rng.sample(none, min(per_family // 2, len(none)))
    return sample


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy.probe", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick corpus")
    parser.add_argument("--per-family", type=int, default=80, help="sourced queries per family")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "imgsearch-bench")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the last run's embeddings (same code only)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "probe")
    args = parser.parse_args(argv)
    spec = QUICK if args.quick else FULL
    corpus = corpus_module.build(spec, args.cache, 2)
    families = list(QUICK_FAMILIES if args.quick else FAMILIES)
    folder, queries = queries_module.build(corpus, families, 2)
    ids = [i.id for i in corpus.items if i.role != "heldout"]
    sample = stratified(sorted(queries, key=lambda q: q.id), args.per_family)
    cached = args.cache / spec.name / "probe-embeddings.npz"
    if args.reuse and cached.exists():
        stored = np.load(cached)
        data = Embedded(ids, stored["index"], stored["queries"], stored["framed"], sample)
        log(f"reusing the embeddings in {cached}")
    else:
        data = _embed(corpus.db, folder, ids, sample)
        np.savez(cached, index=data.index, queries=data.queries, framed=data.framed)
    rows = []
    for name, index, views, margin in _variants(data):
        result = evaluate(data, index, views, margin=margin)
        log(f"{name}: recall@1 {result.recall_at_1:.1%}, calibrated {result.calibrated:.1%}")
        rows.append((name, result))
    args.out.mkdir(parents=True, exist_ok=True)
    sourced = sum(q.source is not None for q in sample)
    lines = [
        "# Descriptor probe (`python -m bench.accuracy.probe`)",
        "",
        f"{spec.name} corpus, {len(ids)} indexed images; a stratified sample of {sourced} "
        f"sourced and {len(sample) - sourced} no-source queries; exact search in numpy. "
        "Calibrated recall: right at rank 1 AND above every no-source query's best "
        "(0 false matches in the sample). See the module docstring.",
        "",
        "| variant | recall@1 | calibrated recall | "
        + " | ".join(sorted(rows[0][1].by_family))
        + " |",
        "|---|---|---|" + "---|" * len(rows[0][1].by_family),
    ]
    for name, result in rows:
        cells = [
            f"{100 * r1:.0f} / {100 * cal:.0f}" for _, (r1, cal) in sorted(result.by_family.items())
        ]
        lines.append(
            f"| {name} | {100 * result.recall_at_1:.1f} | {100 * result.calibrated:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Family cells: recall@1 / calibrated recall (%)."]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(
        json.dumps({n: r.__dict__ for n, r in rows}, indent=1) + "\n"
    )
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
