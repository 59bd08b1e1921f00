"""`python -m bench.speed.hnsw [--vectors N] [--quick] [--out DIR]`: where the embedded
graph's recall goes at a million vectors, and what the search parameters buy back (issue 16).

bench.speed.live measured recall@10 0.82 at 1M after a live build (0.998 at 100k). This
separates the two suspects with one graph: the production EdgeStore is filled with the same
synthetic 512-d descriptors (modelled on `sscd-mnv4s`, bench.speed.live), its graph built
offline with the production parameters (`EdgeStore.build_graph`, as `imgsearch optimize`
does), then the production `EdgeStore.search` runs the same 100 noisy-copy queries with its
search parameters swapped, one setting at a time: the candidate list (`hnsw_ef`), the int8
oversampling before rescoring, and the graph walked on the original float vectors instead
of the int8 copy. Each setting reports recall@10 and recall@1 against exact search and its
latency (p50/p99 over 200 searches).

Writes hnsw.md and hnsw.json into --out (default bench/results/speed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import imgsearch.store.edge as edge_module
from bench.speed import live
from bench.speed.common import JSON, latency_summary, loadavg, log, machine, memory, write_result
from bench.speed.vectors import DescriptorModel
from imgsearch.store.base import HNSW_EF
from imgsearch.store.edge import EdgeStore

# (label, hnsw_ef, oversampling, walk the int8 copy); the first is production's.
SETTINGS: tuple[tuple[str, int, float, bool], ...] = (
    ("production", HNSW_EF, 2.0, True),
    ("ef 128", 128, 2.0, True),
    ("ef 256", 256, 2.0, True),
    ("ef 512", 512, 2.0, True),
    ("ef 1024", 1024, 2.0, True),
    ("ef 1536", 1536, 2.0, True),
    ("ef 2048", 2048, 2.0, True),
    ("ef 256, oversampling 4", 256, 4.0, True),
    ("ef 512, oversampling 4", 512, 4.0, True),
    ("ef 256, float vectors (no int8)", 256, 1.0, False),
    ("ef 512, float vectors", 512, 1.0, False),
)


def measure(vectors: int, data: Path, *, quick: bool = False) -> JSON:
    log("hnsw: describing the photos the synthetic vectors are modelled on")
    real = live.real_descriptors(quick=quick)
    model = DescriptorModel.fit(real, rank=min(128, len(real) - 1)).calibrated(real)
    queries = live.make_queries(model, vectors, 100, among=vectors)
    corpus = live.Corpus(model, vectors, queries)
    store = EdgeStore.open_path(
        data, collection=live.COLLECTION, dimensions=live.DIMENSIONS, model="bench"
    )
    result: JSON = {
        "vectors": vectors,
        "photos": len(real),
        "machine": machine(),
        "load_start": loadavg(),
    }
    try:
        log(f"hnsw: filling {vectors} vectors")
        result["fill_seconds"] = live.fill(store, corpus, vectors)
        exact = corpus.exact.result()[0]
        log("hnsw: building the graph (production parameters, offline)")
        start = time.perf_counter()
        minimum = 1 if vectors < 100_000 else edge_module.GRAPH_MIN_SEGMENT_KB
        result["graph_vectors"] = store.build_graph(minimum)
        result["build_seconds"] = time.perf_counter() - start
        result["graph"] = {"m": edge_module._HNSW_M, "ef_construct": edge_module._HNSW_EF_CONSTRUCT}
        rows = []
        for label, hnsw_ef, oversampling, quantized in SETTINGS:
            with live.search_params(hnsw_ef, oversampling, quantized):
                live.searches(store, queries, 10)  # warm the pages this setting reads
                row = {
                    "setting": label,
                    "hnsw_ef": hnsw_ef,
                    "oversampling": oversampling if quantized else None,
                    "int8_walk": quantized,
                    **live.recalls(store, queries, exact),
                    "search": latency_summary(live.searches(store, queries, 200)),
                }
            log(f"hnsw: {row}")
            rows.append(row)
        result["settings"] = rows
        result["memory"] = memory()
    finally:
        store.close()
    result["load_end"] = loadavg()
    result["versions"] = {p: version(p) for p in ("qdrant-edge-py", "numpy")}
    return result


def report(result: JSON) -> str:
    graph = result["graph"]
    lines = [
        "# Recall of the embedded graph against its search parameters (issue 16)",
        "",
        f"`python -m bench.speed.hnsw --vectors {result['vectors']}`; {result['machine']}; "
        f"load average at start {result['load_start']}, at end {result['load_end']}; "
        f"{result['versions']}. {result['vectors']:,} synthetic 512-d vectors modelled on "
        f"`sscd-mnv4s` descriptors of {result['photos']} photos (bench.speed.live), the "
        "graph built offline with the production parameters"
        f" (m {graph['m']}, ef_construct {graph['ef_construct']}) in "
        f"{result['build_seconds']:.0f} s, {result['graph_vectors']:,} vectors in it; "
        "100 noisy-copy queries, exact top 10 by brute force; latency of the production "
        "`EdgeStore.search` (top 10, one query vector) over 200 searches.",
        "",
        "| setting | hnsw_ef | int8 oversampling | recall@10 | exact nearest first "
        "| p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["settings"]:
        oversampling = "float walk" if row["oversampling"] is None else f"{row['oversampling']}"
        lines.append(
            f"| {row['setting']} | {row['hnsw_ef']} | {oversampling} | "
            f"{row['recall_at_10']:.3f} | {100 * row['recall_at_1']:.0f}% | "
            f"{row['search']['p50_ms']:.1f} | {row['search']['p99_ms']:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 3,000 vectors")
    parser.add_argument("--out", type=Path, default=Path("bench/results/speed"))
    args = parser.parse_args(argv)
    vectors = 3_000 if args.quick else args.vectors
    with tempfile.TemporaryDirectory(prefix="bench-hnsw-") as tmp:
        result = measure(vectors, Path(tmp), quick=args.quick)
    write_result(args.out, "hnsw", result, report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
