"""Query-path tuning of an embedding backbone (`sscd-mnv4s` by default), stage by stage.

`python -m bench.accuracy.tune [--quick] [--per-family N] [--model NAME]` embeds the
benchmark's indexed photos (and a sample of its distractors) at each input size (short side
224, 288, 320) and a stratified sample of its queries in every view the product could use:
the whole query, its mirror image, a second, smaller scale, the framed view (content inside
flat borders) and the photo-like blocks of a page. Then it scores variants side by side by
exact cosine search in numpy: which views, raw score or margin, with or without a PCA
whitening learned on the indexed images. Nothing here is served: `python -m bench.accuracy`
measures what the product does with the chosen ones.

Per variant: recall@1 over sourced queries; calibrated recall, the share of sourced queries
whose first candidate is right and scores above the threshold that lets through at most 1 in
1,000 no-source queries; and both on the hard families (crop20, screenshot, page). Writes
bench/results/tune/results.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.accuracy import corpus as corpus_module
from bench.accuracy import queries as queries_module
from bench.accuracy.cli import FULL, QUICK
from bench.accuracy.probe import MARGIN_WEIGHT, stratified
from bench.accuracy.progress import Progress, log
from bench.accuracy.queries import Query
from bench.accuracy.transforms import FAMILIES, QUICK_FAMILIES
from imgsearch.backbones import SSCD
from imgsearch.model import ImageEncoder
from imgsearch.model.preprocess import DecodedImage, photo_boxes, rescaled
from imgsearch.model.whitening import learn_whitening
from imgsearch.searcher.verdict import BACKGROUND_SIZE
from imgsearch.settings import ModelSettings

F32 = NDArray[np.float32]
REPO = Path(__file__).resolve().parents[2]
SIZES = (224, 288, 320)
SECOND_SCALE = 0.75  # the second-scale view: the query at 3/4 of the input size
HARD = ("crop20", "screenshot", "page")
VIEWS = ("whole", "mirror", "scale", "framed", "blocks")


@dataclass(frozen=True)
class Embedded:
    index: F32  # [N, C]
    views: list[dict[str, F32]]  # per query: view name -> [k, C] (absent views missing)


def _embed(
    model: str, size: int, db: Path, ids: list[str], folder: Path, sample: list[Query]
) -> Embedded:
    encoder = ImageEncoder(ModelSettings(model=model, image_size=size), threads=2)
    progress = Progress(f"tune {size}: embedding the indexed folder", len(ids))
    index = []
    for item in ids:
        index.append(encoder.describe_file((db / item).read_bytes(), regions=False).vectors[0])
        progress.step()
    progress.close()
    progress = Progress(f"tune {size}: embedding the queries", len(sample))
    views: list[dict[str, F32]] = []
    for query in sample:
        data = (folder / query.file).read_bytes()
        image = encoder.decode(data)
        mirror = DecodedImage(
            np.ascontiguousarray(image.pixels[:, ::-1]),
            image.original_width,
            image.original_height,
            image.format,
        )
        made: dict[str, list[DecodedImage]] = {
            "whole": [image],
            "mirror": [mirror],
            "scale": [rescaled(image, round(SECOND_SCALE * size), encoder.fit)],
        }
        framed = encoder.decode_framed(data, image)
        if framed is not None:
            made["framed"] = [framed]
        blocks = [encoder.decode(data, box) for box in photo_boxes(image)]
        if blocks:
            made["blocks"] = blocks
        views.append({name: encoder.encode(images) for name, images in made.items()})
        progress.step()
    progress.close()
    return Embedded(np.stack(index), views)


def _margin(scores: F32) -> F32:
    nearest = np.sort(scores)[::-1][:BACKGROUND_SIZE]
    margin: F32 = scores - np.float32(MARGIN_WEIGHT * nearest.mean())
    return margin


@dataclass(frozen=True)
class Variant:
    name: str
    views: tuple[str, ...]
    margin: bool = True
    whiten: bool = False


VARIANTS = (
    Variant("whole, raw cosine", ("whole",), margin=False),
    Variant("whole, margin", ("whole",)),
    Variant("whole + framed", ("whole", "framed"), margin=False),
    Variant("whole + framed + page blocks (the product)", ("whole", "framed", "blocks"), False),
    Variant("the product, margin", ("whole", "framed", "blocks")),
    Variant("+ mirror", ("whole", "framed", "blocks", "mirror"), margin=False),
    Variant("+ second scale", ("whole", "framed", "blocks", "scale"), margin=False),
    Variant("the product, whitened", ("whole", "framed", "blocks"), False, whiten=True),
)


def _score(
    embedded: Embedded, ids: list[str], sample: list[Query], variant: Variant
) -> dict[str, object]:
    index = embedded.index
    transform: Callable[[F32], F32] = lambda x: x  # noqa: E731 - identity
    if variant.whiten:
        whitening = learn_whitening(index, dimensions=min(index.shape[1], index.shape[0] - 1))
        transform = whitening.apply
        index = transform(index)
    best: list[tuple[float, bool, Query]] = []
    for query, views in zip(sample, embedded.views, strict=True):
        stacked = np.concatenate([views[v] for v in variant.views if v in views])
        scores = (transform(stacked) @ index.T).max(axis=0)
        if variant.margin:
            scores = _margin(scores)
        top = int(np.argmax(scores))
        right = query.source is not None and ids[top] == query.source
        best.append((float(scores[top]), right, query))
    negatives = sorted((s for s, _, q in best if q.source is None), reverse=True)
    allowed = len(negatives) // 1000
    threshold = negatives[allowed] + 1e-6 if negatives else float("-inf")

    def share(family: str | None) -> tuple[float, float]:
        rows = [(s, ok) for s, ok, q in best if q.source and family in (None, q.family)]
        return (
            sum(ok for _, ok in rows) / len(rows),
            sum(ok and s >= threshold for s, ok in rows) / len(rows),
        )

    return {
        "variant": variant.name,
        "threshold": threshold,
        "all": share(None),
        **{family: share(family) for family in HARD},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy.tune", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick corpus")
    parser.add_argument(
        "--model", default=SSCD, help="an embedding backbone (default: %(default)s)"
    )
    parser.add_argument("--per-family", type=int, default=60, help="sourced queries per family")
    parser.add_argument(
        "--distractors",
        type=int,
        default=1000,
        help="indexed distractors kept (a sample: the photos make the false matches)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tune")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "imgsearch-bench")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    spec = QUICK if args.quick else FULL
    started = time.monotonic()
    corpus = corpus_module.build(spec, args.cache, args.workers)
    families = list(QUICK_FAMILIES if args.quick else FAMILIES)
    folder, queries = queries_module.build(corpus, families, args.workers)
    sample = stratified(queries, args.per_family, spec.seed)
    distractors = sorted(i.id for i in corpus.items if i.role == "distractor")
    rng = random.Random(spec.seed)  # noqa: S311 - a reproducible sample
    kept = set(rng.sample(distractors, min(args.distractors, len(distractors))))
    ids = sorted(i.id for i in corpus.items if i.role in ("source", "burst") or i.id in kept)
    rows = []
    for size in SIZES:
        embedded = _embed(args.model, size, corpus.db, ids, folder, sample)
        for variant in VARIANTS:
            row = _score(embedded, ids, sample, variant)
            rows.append({"size": size, **row})
            log(f"tune {size} {variant.name}: {row['all']}")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": args.model,
        "corpus": spec.name,
        "indexed": len(ids),
        "sample": len(sample),
        "sourced": sum(1 for q in sample if q.source),
        "minutes": (time.monotonic() - started) / 60,
    }
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "results.md").write_text(_markdown(meta, rows))
    print(_markdown(meta, rows))
    return 0


def _markdown(meta: dict[str, object], rows: list[dict[str, object]]) -> str:
    def pair(value: object) -> str:
        assert isinstance(value, tuple)
        return f"{100 * value[0]:.1f} / {100 * value[1]:.1f}"

    lines = [
        f"# Query-path tuning: {meta['model']}",
        "",
        f"Made by `python -m bench.accuracy.tune` on the {meta['corpus']} corpus: "
        f"{meta['indexed']} indexed images, a stratified sample of {meta['sample']} queries "
        f"({meta['sourced']} with a source), {meta['minutes']:.0f} minutes on 2 cores. "
        "Each cell: recall@1 / calibrated recall (right first candidate above the threshold "
        "that lets at most 1 in 1,000 no-source queries through), in %. Exact search, no "
        "geometric check: the descriptor alone.",
        "",
        "| short side | variant | threshold | all | " + " | ".join(HARD) + " |",
        "|---|---|---|---|" + "---|" * len(HARD),
    ]
    for row in rows:
        lines.append(
            f"| {row['size']} | {row['variant']} | {float(row['threshold']):.3f} | "  # type: ignore[arg-type]
            + " | ".join(pair(row[k]) for k in ("all", *HARD))
            + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
