"""`python -m bench.speed.rescore`: what the searcher's whitened re-scoring costs per query.

The full speed run (results.md) measured the rescore stage at 15-31 ms per query with the
first implementation: the candidates' descriptors fetched by a filtered scroll
(`descriptors_of`), 100 candidates. Production now fetches whole-image vectors by point id
(`vectors_of`) for 50 candidates: `imgsearch.searcher.verdict.rescore_whitened`, timed here as
it is, not copied. This measures both, interleaved round by round on the same production
EdgeStore (10,000 images), and writes rescore.md next to results.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.speed.common import loadavg
from imgsearch.descriptors import WHOLE_IMAGE_BOX, DescriptorSet
from imgsearch.model.whitening import learn_whitening
from imgsearch.searcher.verdict import RESCORE_POOL, rescore_whitened
from imgsearch.settings import StoreEngine
from imgsearch.store import FileState, StoreLocation, open_store

DIMENSIONS = 1280


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/speed"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.images, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    box = WHOLE_IMAGE_BOX
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(
            StoreLocation(path=Path(folder), engine=StoreEngine.EDGE),
            collection="images",
            dimensions=DIMENSIONS,
            model="bench",
        )
        for start in range(0, args.images, 1000):
            store.upsert(
                [
                    (FileState(f"{i}.jpg", 1, 1, f"{i}"), DescriptorSet(vectors[i][None], box))
                    for i in range(start, min(start + 1000, args.images))
                ]
            )
        white = learn_whitening(store.sample_vectors(10_000), 1024)
        queries = vectors[:3]  # three query views, as a framed query has

        def scored(rows: np.ndarray) -> object:
            return white.apply(rows) @ white.apply(queries).T

        old_paths = [h.path for h in store.search(queries, 100)]
        new_hits = store.search(queries, RESCORE_POOL)
        variants: dict[str, Callable[[], object]] = {
            "first version: filtered scroll (descriptors_of), 100 candidates": lambda: scored(
                np.stack([d.vectors[0] for d in store.descriptors_of(old_paths).values()])
            ),
            f"production: rescore_whitened, by point id, {RESCORE_POOL} candidates": lambda: (
                rescore_whitened(store, new_hits, queries, white)
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        load_start = loadavg()
        for _ in range(args.rounds):
            for name, run in variants.items():
                started = time.perf_counter()
                run()
                times[name].append(1e3 * (time.perf_counter() - started))
        store.close()
    medians = {name: statistics.median(t) for name, t in times.items()}
    old, new = medians.values()
    lines = [
        "# Whitened re-scoring cost per query (`python -m bench.speed.rescore`)",
        "",
        f"Production EdgeStore with {args.images:,} images, 3 query views, {args.rounds} rounds "
        f"interleaved; load average at start {load_start}, at end {loadavg()} (the machine "
        "was shared: the ratio is the result).",
        "",
        "| re-scoring | median ms | p95 ms |",
        "|---|---|---|",
    ]
    for name, t in times.items():
        p95 = float(np.percentile(t, 95))
        lines.append(f"| {name} | {medians[name]:.2f} | {p95:.2f} |")
    lines += ["", f"Production costs {new / old:.2f}x the first version ({old / new:.1f}x faster)."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rescore.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
