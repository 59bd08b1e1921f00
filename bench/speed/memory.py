"""`python -m bench.speed.memory [--vectors N] [--quick] [--out DIR]`: the embedded index's
memory after a restart, with its payload indexes in memory or on disk (issue 16).

For each variant a fresh process fills a production EdgeStore (qdrant-edge, through
`VectorStore.upsert`, the payload the indexer writes: path, folders, sha256, region, box)
with N synthetic 512-d vectors and builds its graph; then another fresh process (the
service restarted) opens it, runs the calls the service makes (searches, sha256 dedupe
lookups, path lookups) and reports its resident memory, anonymous and file-backed apart,
and those calls' latency. The variants run one after the other on the same vectors.

Writes memory.md and memory.json into --out (default bench/results/speed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

import imgsearch.store.edge as edge_module
from bench.speed import live
from bench.speed.common import (
    JSON,
    latency_summary,
    loadavg,
    log,
    machine,
    memory,
    run_isolated,
    write_result,
)
from bench.speed.vectors import DescriptorModel
from imgsearch.store.edge import EdgeStore

VARIANTS = {"payload indexes in memory": False, "payload indexes on disk": True}
_CALLS = 100


def _model(quick: bool, seed_photos: int = 60) -> DescriptorModel:
    real = live.real_descriptors(seed_photos, quick=quick)
    return DescriptorModel.fit(real, rank=min(128, len(real) - 1)).calibrated(real)


def fill(config: JSON) -> JSON:
    """In a fresh process: a new store of config['vectors'] vectors."""
    edge_module.PAYLOAD_INDEXES_ON_DISK = config["on_disk"]
    model = _model(config["quick"])
    vectors = config["vectors"]
    corpus = live.Corpus(model, vectors, model.sample(1, seed=0))
    store = EdgeStore.open_path(
        Path(config["data"]), collection=live.COLLECTION, dimensions=live.DIMENSIONS, model="b"
    )
    try:
        seconds = live.fill(store, corpus, vectors)
        start = time.perf_counter()
        # As the live graph leaves it: the immutable segments are where on-disk indexes apply.
        minimum = 1 if vectors < 100_000 else edge_module.GRAPH_MIN_SEGMENT_KB
        graphed = store.build_graph(minimum)
        built = time.perf_counter() - start
    finally:
        store.close()
    return {"fill_seconds": seconds, "graph_vectors": graphed, "build_seconds": built}


def restarted(config: JSON) -> JSON:
    """In a fresh process: open the store, make the service's calls, read the memory."""
    before = memory()
    start = time.perf_counter()
    store = EdgeStore.open_path(
        Path(config["data"]), collection=live.COLLECTION, dimensions=live.DIMENSIONS, model="b"
    )
    opened = time.perf_counter() - start
    rng = np.random.default_rng(5)
    picked = rng.choice(config["vectors"], size=_CALLS, replace=False)
    queries = rng.standard_normal((_CALLS, live.DIMENSIONS)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    try:
        timings: dict[str, list[float]] = {"search": [], "sha256 lookup": [], "path lookup": []}
        for query, index in zip(queries, picked, strict=True):
            start = time.perf_counter()
            store.search(query[None], 10)
            timings["search"].append(time.perf_counter() - start)
            start = time.perf_counter()
            found = store.descriptors_with_sha256(f"{int(index):064x}")
            timings["sha256 lookup"].append(time.perf_counter() - start)
            if found is None:
                raise RuntimeError(f"vector {index} not found by its sha256")
            start = time.perf_counter()
            indexed = store.indexed_among([live.path_of(int(index))])
            timings["path lookup"].append(time.perf_counter() - start)
            if not indexed:
                raise RuntimeError(f"vector {index} not found by its path")
        return {
            "open_seconds": opened,
            "memory_before": before,
            "memory": memory(),
            "calls": {name: latency_summary(values) for name, values in timings.items()},
            "points": store.point_count(),
        }
    finally:
        store.close()


def measure(vectors: int, *, quick: bool = False) -> JSON:
    result: JSON = {"vectors": vectors, "machine": machine(), "load_start": loadavg()}
    rows = []
    for label, on_disk in VARIANTS.items():
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            config: JSON = {"vectors": vectors, "data": tmp, "on_disk": on_disk, "quick": quick}
            log(f"memory: {label}: filling {vectors} vectors")
            filled = run_isolated(fill, config, timeout=3600)
            if "error" in filled:
                raise RuntimeError(f"{label}: {filled['error']}")
            log(f"memory: {label}: restarting")
            after = run_isolated(restarted, config, timeout=600)
            if "error" in after:
                raise RuntimeError(f"{label}: {after['error']}")
            rows.append({"variant": label, "on_disk": on_disk, **filled, **after})
            log(f"memory: {label}: {after['memory']}")
    result["variants"] = rows
    result["load_end"] = loadavg()
    result["versions"] = {p: version(p) for p in ("qdrant-edge-py",)}
    return result


def report(result: JSON) -> str:
    lines = [
        "# Memory of the embedded index after a restart: payload indexes in memory or on disk",
        "",
        f"`python -m bench.speed.memory --vectors {result['vectors']}`; {result['machine']}; "
        f"load average at start {result['load_start']}, at end {result['load_end']}; "
        f"{result['versions']}. {result['vectors']:,} synthetic 512-d vectors (bench.speed."
        "live) with the indexer's payload, the graph built (as a live build leaves the shard); "
        "each variant filled in a fresh process, "
        f"then opened in another (a restart) that ran {_CALLS} searches, sha256 lookups and "
        "path lookups before its memory was read. The process holds only the store (no "
        "model, no gRPC).",
        "",
        "| variant | RSS MB | anonymous MB | file-backed MB | open s | search p50 / p99 ms "
        "| sha256 lookup p50 / p99 ms | path lookup p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["variants"]:
        mem, calls = row["memory"], row["calls"]
        timing = " | ".join(
            f"{calls[name]['p50_ms']:.2f} / {calls[name]['p99_ms']:.2f}"
            for name in ("search", "sha256 lookup", "path lookup")
        )
        lines.append(
            f"| {row['variant']} | {mem['rss_mb']:.0f} | {mem['anon_mb']:.0f} | "
            f"{mem['file_mb']:.0f} | {row['open_seconds']:.1f} | {timing} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 3,000 vectors")
    parser.add_argument("--out", type=Path, default=Path("bench/results/speed"))
    args = parser.parse_args(argv)
    result = measure(3_000 if args.quick else args.vectors, quick=args.quick)
    write_result(args.out, "memory", result, report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
