"""`python -m bench.speed [--quick] [--out DIR]`: indexing throughput, search latency, scale.

Writes results.json, results.md (tables: measured / target / met / where the time goes) and
PNG plots into --out (default bench/results/speed). --quick is the CI smoke run: bundled
photos only, small sizes, seconds to a couple of minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from bench.speed import accuracy, compat, corpus, indexing, report, serving
from bench.speed.common import JSON, loadavg, log, machine, run_isolated
from bench.speed.models import Encoders, model_files


def _environment() -> JSON:
    return {
        **machine(),
        "onnxruntime": version("onnxruntime"),
        "qdrant_client": version("qdrant-client"),
        "qdrant_edge": version("qdrant-edge-py"),
        "pillow": version("pillow"),
        "points_per_image": compat.POINTS_PER_IMAGE,
        "production": {
            "engine": compat.PRODUCTION_ENGINE,
            "embed_workers": compat.PRODUCTION_WORKERS,
            "inference_threads": compat.PRODUCTION_THREADS,
            "regions": compat.PRODUCTION_REGIONS,
            "image_size": compat.PRODUCTION_SIDE,
            "query_sizes": compat.QUERY_SIZES,
        },
        "load_start": loadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _hnsw_overdue(cap: float) -> Callable[[JSON], str | None]:
    def check(partial: JSON) -> str | None:
        started = partial.get("started")
        if started and "build_s" not in partial and time.time() - started > cap:
            return f"HNSW build did not finish within the {cap:.0f} s cap (stopped)"
        return None

    return check


def _serving_plan(quick: bool) -> list[JSON]:
    """Isolated runs, smallest first. Production = edge engine, regions off (1 point/image);
    qdrant-client local mode and regions on are the compared alternatives, at 1k only."""
    if quick:
        return [
            {"engine": "local", "images": 150, "restart": True},
            {"engine": "edge", "images": 150, "restart": True, "hnsw": True},
        ]
    return [
        {"engine": "local", "images": 1_000, "restart": True},
        {"engine": "edge", "images": 1_000, "restart": True},
        {"engine": "edge", "images": 1_000, "regions": True, "restart": True},
        {"engine": "edge", "images": 10_000, "restart": True},
        {"engine": "edge", "images": 100_000, "restart": True, "hnsw": True},
        # The scale point: a million vectors (= images, one point each), store only, then
        # the same store after `imgsearch optimize` has built its graph.
        {"engine": "edge", "images": 1_000_000, "restart": True, "grpc": False, "hnsw": True},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (small, fast)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/speed"))
    parser.add_argument("--images", type=int, help="indexing images (default 160, quick 16)")
    parser.add_argument(
        "--hnsw-cap",
        type=float,
        default=1800.0,
        help="seconds for the offline HNSW build (imgsearch optimize)",
    )
    parser.add_argument(
        "--sections",
        default="indexing,accuracy,serving",
        help="comma-separated subset of indexing,accuracy,serving",
    )
    parser.add_argument("--from-json", type=Path, help="only re-render a results.json")
    args = parser.parse_args(argv)
    if args.from_json:
        _write(json.loads(args.from_json.read_text()), args.out, with_json=False)
        return 0
    quick: bool = args.quick
    sections = set(args.sections.split(","))
    started = time.perf_counter()
    results: JSON = {"quick": quick, "environment": _environment()}
    log(
        f"bench.speed {'quick' if quick else 'full'} run, production {_environment()['production']}"
    )

    sources = corpus.photo_sources(quick)
    images = args.images or (16 if quick else 160)
    files = corpus.make_jpegs(sources, images, "quick" if quick else "full")
    results["corpus"] = {"sources": len(sources), "jpegs": len(files)}
    encoders = Encoders(model_files(fp16=False))
    base = Path(tempfile.mkdtemp(prefix="imgsearch-speed-"))
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs on purpose, see _serving
    fast_dir = Path(tempfile.mkdtemp(prefix="imgsearch-speed-", dir=shm if shm.is_dir() else None))
    try:
        if "indexing" in sections:
            results["indexing"] = indexing.run(
                files, base / "indexing", encoders, rounds=1 if quick else 3, quick=quick
            )
        if "accuracy" in sections or "serving" in sections:
            side = compat.PRODUCTION_SIDE
            variants = [("fp32", side, False), ("fp32", side, True)]
            if not quick:
                variants += [("fp32", 320, False), ("fp32", 256, False), ("int8", side, False)]
            variants = [v for v in variants if v[0] in encoders.files]
            photos = corpus.index_photos(sources, "quick" if quick else "full")
            results["accuracy"], inputs = accuracy.run(
                photos, encoders, 2 if quick else 3, variants, base / "queries"
            )
            inputs.save(base / "inputs")
        del encoders  # the serving runs have their own processes and models
        if "serving" in sections:
            results["serving"] = _serving(base, fast_dir, quick, args.hnsw_cap)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(fast_dir, ignore_errors=True)
    results["environment"]["load_end"] = loadavg()
    results["environment"]["wall_s"] = time.perf_counter() - started
    print(_write(results, args.out, with_json=True))
    log(f"done in {results['environment']['wall_s']:.0f} s; results in {args.out}")
    return 0


def _write(results: JSON, out: Path, *, with_json: bool) -> str:
    out.mkdir(parents=True, exist_ok=True)
    if with_json:
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = report.markdown(results)
    (out / "results.md").write_text(markdown)
    report.plots(results, out)
    return markdown


def _serving(base: Path, fast_dir: Path, quick: bool, hnsw_cap: float) -> list[JSON]:
    runs = []
    for step in _serving_plan(quick):
        engine, images = step["engine"], step["images"]
        # Local mode commits every point to sqlite: its files go to tmpfs so that filling
        # 100k+ points takes minutes, not hours (search and memory are not affected).
        tag = "-regions" if step.get("regions") else ""
        data_dir = (fast_dir if engine == "local" else base) / f"{engine}-{images}{tag}"
        config: JSON = {
            "engine": engine,
            "images": images,
            "data_dir": str(data_dir),
            "inputs": str(base / "inputs"),
            "queries": 8 if quick else 30,
            "phase_budget_s": 10 if quick else 30,
            "ground_truth": engine == "edge",
            "recall_queries": 8 if quick else 40,
            "regions": step.get("regions", False),
            "grpc": step.get("grpc", True),
            "partial": str(base / f"partial-{engine}-{images}{tag}.json"),
            "graph_min_segment_kb": 1 if quick else None,
        }
        regions = step.get("regions", False)
        points = images * compat.points_per_image(regions)
        log(f"serving: {engine} store, {images} images ({points} points, regions {regions})")
        result = run_isolated(serving.measure_size, config, timeout=3600)
        result.setdefault("engine", engine)
        result.setdefault("images", images)
        if "error" in result:
            log(f"serving: {engine} {images}: {result['error']}")
        if step.get("restart") and data_dir.exists():
            log(f"serving: restart of the {engine} store at {images} images")
            result["restart"] = run_isolated(serving.measure_restart, config, timeout=1800)
        if step.get("hnsw") and data_dir.exists() and "error" not in result:
            log(f"serving: offline HNSW build of the {engine} store at {images} images")
            hnsw = run_isolated(
                serving.measure_hnsw, config, timeout=3600, stop_when=_hnsw_overdue(hnsw_cap)
            )
            result["hnsw"] = {**(hnsw.pop("partial", None) or {}), **hnsw}
            if "build_s" in result["hnsw"] and "error" not in result["hnsw"]:
                log(f"serving: restarted on the optimized store at {images} images")
                result["after_graph"] = run_isolated(
                    serving.measure_after_graph, config, timeout=1800
                )
        runs.append(result)
        shutil.rmtree(data_dir, ignore_errors=True)
    return runs


if __name__ == "__main__":
    sys.exit(main())
