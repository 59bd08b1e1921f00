"""results.json -> results.md (targets table first, then the details) and PNG plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.speed.common import JSON
from imgsearch.store.base import HNSW_EF

_MB_PER_GB = 1024


def _get(data: Any, *keys: Any) -> Any:  # noqa: ANN401 - walks loosely shaped JSON
    for key in keys:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def _runs(results: JSON, engine: str, *, regions: bool = False) -> list[JSON]:
    """Serving runs of one engine (and descriptor layout), by size, with partial results of
    stopped runs merged in."""
    out = []
    for run in results.get("serving") or []:
        if run.get("engine") != engine or bool(run.get("regions")) != regions:
            continue
        merged = {**(run.get("partial") or {}), **run}
        merged.pop("partial", None)
        out.append(merged)
    return sorted(out, key=lambda r: r["images"])


def _at(runs: list[JSON], images: int) -> JSON | None:
    return next((r for r in runs if r["images"] == images), None)


def _extrapolate(runs: list[JSON], keys: tuple[str, ...], images: float) -> float | None:
    """Linear through the two largest measured sizes (cost of brute force and of memory)."""
    points = [(r["images"], _get(r, *keys)) for r in runs if _get(r, *keys) is not None]
    if len(points) < 2:
        return None
    (x0, y0), (x1, y1) = points[-2], points[-1]
    slope = (y1 - y0) / (x1 - x0)
    return float(y1 + slope * (images - x1))


def _met(value: float | None, limit: float, *, at_most: bool) -> str:
    if value is None:
        return "n/a"
    ok = value <= limit if at_most else value >= limit
    return "**met**" if ok else "**not met**"


def _stage_cause(stages: dict[str, float]) -> str:
    total = sum(stages.values()) or 1.0
    parts = sorted(stages.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.0f} ms ({100 * v / total:.0f}%)" for k, v in parts)


def _search_cause(run: JSON | None) -> str:
    phase = _get(run, "grpc_1_client")
    return _phase_text(phase) if phase and phase.get("stage_mean_ms") else ""


def _phase_text(phase: JSON) -> str:
    """Where a gRPC phase's time went, and what it was measured on."""
    stages = ", ".join(f"{k} {v:.1f} ms" for k, v in phase["stage_mean_ms"].items())
    sides = phase.get("query_longer_side_px")
    shown = f"queries {sides['min']}-{sides['max']} px (longer side); " if sides else ""
    share = phase.get("verified_share")
    checked = f"geometric check on {100 * share:.0f}% of them; " if share is not None else ""
    return f"{shown}{checked}mean per query (verify: per checked query): {stages}"


Row = tuple[str, str, str, str, str]


def target_rows(results: JSON) -> list[Row]:
    rows: list[Row] = []
    idx = results.get("indexing") or {}
    prod = idx.get("production") or {}
    limit = idx.get("limit") or {}
    if prod:
        rows.append(
            (
                "Indexing, production path (2 embedding threads x 1 onnxruntime thread, "
                "fp32 384, qdrant-edge, regions off)",
                _fmt(prod.get("rate"), " img/s"),
                ">= 100 img/s",
                _met(prod.get("rate"), 100, at_most=False),
                "per image, summed over the 2 workers: "
                + _stage_cause(prod.get("stages_ms") or {})
                + f"; limit (decode alone, then embed alone, both in the 2 workers) "
                f"{_fmt(limit.get('rate'), ' img/s')}: production reaches "
                f"{_fmt(100 * (limit.get('production_fraction') or 0), '%', 0)} of it",
            )
        )
    e2e = idx.get("indexer_e2e") or {}
    if e2e:
        rows.append(
            (
                "Indexing, the service's Indexer end to end (default settings)",
                _fmt(e2e.get("rate"), " img/s"),
                ">= 100 img/s",
                _met(e2e.get("rate"), 100, at_most=False),
                f"{e2e.get('images')} files in {_fmt(e2e.get('seconds'), ' s')} (polling watcher, "
                "dedupe lookups, batches of 16)",
            )
        )
    pipelines = [p for p in idx.get("pipelines") or [] if not p["name"].startswith("production")]
    if pipelines:
        best = max(pipelines, key=lambda p: p["rate"])
        rows.append(
            (
                f"Indexing, fastest alternative ({best['name']})",
                _fmt(best["rate"], " img/s"),
                ">= 100 img/s",
                _met(best["rate"], 100, at_most=False),
                f"{best['ratio_vs_production']:.2f}x production in the same rounds",
            )
        )
    edge = _runs(results, "edge")
    local = _runs(results, "local")
    served = [r for r in edge if _get(r, "grpc_1_client") is not None]
    quick = bool(results.get("quick"))
    for run in served:
        size = f"{run['images']:,}"
        one = run.get("grpc_1_client") or {}
        four = run.get("grpc_4_clients") or {}
        rows.append(
            (
                f"Search via gRPC at {size} images, production (qdrant-edge): p50 / p99",
                f"{_fmt(one.get('p50_ms'), ' ms')} / {_fmt(one.get('p99_ms'), ' ms')}",
                "<= 30 / 100 ms",
                f"p50 {_met(one.get('p50_ms'), 30, at_most=True)}, "
                f"p99 {_met(one.get('p99_ms'), 100, at_most=True)}",
                _search_cause(run)
                + f"; 4 clients: {_fmt(four.get('throughput_qps'), ' queries/s')}, "
                f"p50 {_fmt(four.get('p50_ms'), ' ms')}",
            )
        )
    if not any(r["images"] == 100_000 for r in served) and served and not quick:
        rows.append(
            (
                "Search via gRPC at 100,000 images, production",
                "not measured",
                "<= 30 / 100 ms",
                "n/a",
                "the 100k run did not finish",
            )
        )
    for run in local:
        one = run.get("grpc_1_client") or {}
        rows.append(
            (
                f"Search via gRPC at {run['images']:,} images, qdrant-client local mode "
                "(old engine): p50 / p99",
                f"{_fmt(one.get('p50_ms'), ' ms')} / {_fmt(one.get('p99_ms'), ' ms')}",
                "<= 30 / 100 ms",
                f"p50 {_met(one.get('p50_ms'), 30, at_most=True)}",
                _search_cause(run),
            )
        )
    if len(served) >= 2:
        small, large = served[0], served[-1]
        a, b = _get(small, "ann", "p50_ms"), _get(large, "ann", "p50_ms")
        factor = large["images"] / small["images"]
        rows.append(
            (
                f"Store search growth {small['images']:,} -> {large['images']:,} images",
                _fmt(b / a if a and b else None, "x", 1),
                f"sub-linear (< {factor:.0f}x)",
                _met(b / a if a and b else None, factor * 0.5, at_most=True),
                f"ann p50 {_fmt(a, ' ms')} -> {_fmt(b, ' ms')}: no graph, a scan of the int8 "
                "vectors, linear in the points",
            )
        )
    rows += _scale_rows(results, edge)
    return rows


def _scale_rows(results: JSON, edge: list[JSON]) -> list[Row]:
    rows: list[Row] = []
    million = next((r for r in edge if r.get("points", 0) >= 1_000_000), None)
    if million is not None:
        label = f"{million['points']:,} vectors, production EdgeStore (no graph)"
        ann = million.get("ann") or {}
        rows.append(
            (
                f"Store search at {label}: p50 / p99",
                f"{_fmt(ann.get('p50_ms'), ' ms')} / {_fmt(ann.get('p99_ms'), ' ms')}",
                "<= 50 ms",
                _met(ann.get("p50_ms"), 50, at_most=True),
                "2 query views (3 with a framed view), each a scan of 1M int8 vectors + "
                "rescoring; one "
                f"vector: p50 {_fmt(_get(ann, 'one_vector', 'p50_ms'), ' ms')}; filled in "
                f"{_fmt(million.get('fill_s'), ' s', 0)} through VectorStore.upsert "
                f"({_fmt(million.get('fill_upsert_s'), ' s', 0)} in upserts)",
            )
        )
        rows.append(
            (
                f"Recall@10 vs exact at {label}",
                _fmt(ann.get("recall_at_10"), "", 3),
                ">= 0.99",
                _met(ann.get("recall_at_10"), 0.99, at_most=False),
                f"{ann.get('recall_queries')} real query descriptors among synthetic "
                "look-alikes, production search parameters vs exact numpy",
            )
        )
        for key, what in (("memory_served", "after filling and searching"),
                          ("restart", "after a restart and 5 searches")):  # fmt: skip
            mem = (
                million.get(key)
                if key == "memory_served"
                else _get(million, key, "memory_searched")
            )
            rss = _get(mem, "rss_mb")
            rows.append(
                (
                    f"RSS at {label}, {what}",
                    _fmt(rss and rss / _MB_PER_GB, " GB", 2),
                    "<= 2 GB",
                    _met(rss and rss / _MB_PER_GB, 2, at_most=True),
                    f"anonymous {_fmt(_get(mem, 'anon_mb'), ' MB', 0)} (int8 copy pinned: "
                    f"~{million['points'] * 1280 / 2**20:,.0f} MB), mmapped files "
                    f"{_fmt(_get(mem, 'file_mb'), ' MB', 0)} (page cache the kernel can evict)",
                )
            )
    for built in (r for r in edge if _get(r, "hnsw", "build_s") is not None):
        rows += _graph_rows(built)
    stopped = next((r for r in edge if r.get("hnsw") and _get(r, "hnsw", "build_s") is None), None)
    if stopped is not None:
        rows.append(
            (
                f"`imgsearch optimize` (HNSW graph) at {stopped['points']:,} vectors",
                "not measured",
                "<= 50 ms",
                "n/a",
                str(_get(stopped, "hnsw", "error")),
            )
        )
    for images in (10_000, 100_000):
        run = _at(edge, images)
        if run is None:
            continue
        mem = run.get("memory_served") or {}
        restart = _get(run, "restart", "memory_searched") or {}
        rss = mem.get("rss_mb")
        rows.append(
            (
                f"Service RSS at {images:,} images, production (searcher serving)",
                _fmt(rss and rss / _MB_PER_GB, " GB", 2),
                "<= 1 GB",
                _met(rss and rss / _MB_PER_GB, 1, at_most=True),
                f"anonymous {_fmt(mem.get('anon_mb'), ' MB', 0)}, mmapped "
                f"{_fmt(mem.get('file_mb'), ' MB', 0)}; store alone after a restart and 5 "
                f"searches {_fmt(restart.get('rss_mb'), ' MB', 0)}",
            )
        )
    return rows


def _graph_rows(run: JSON) -> list[Row]:
    """What `imgsearch optimize` (the HNSW graph built offline) gives at one size: the build,
    then a restarted searcher (or store) on the optimized shard."""
    h, after = run["hnsw"], run.get("after_graph") or {}
    points = run["points"]
    label = f"{points:,} vectors after `imgsearch optimize`"
    ann = after.get("ann") or h.get("ann") or {}
    rows: list[Row] = [
        (
            f"Store search at {label}: p50 / p99",
            f"{_fmt(ann.get('p50_ms'), ' ms')} / {_fmt(ann.get('p99_ms'), ' ms')}",
            "<= 50 ms",
            _met(ann.get("p50_ms"), 50, at_most=True),
            f"{_fmt(after.get('graph_vectors') or h.get('indexed_vectors'), '', 0)} vectors in "
            f"the graph; built in {_fmt(h.get('build_s'), ' s', 0)} with the service stopped "
            "(optimize() holds the GIL); points added later are scanned until the next build",
        ),
        (
            f"Recall@10 vs exact at {label}",
            _fmt(ann.get("recall_at_10"), "", 3),
            ">= 0.99",
            _met(ann.get("recall_at_10"), 0.99, at_most=False),
            f"production search parameters (hnsw_ef {HNSW_EF}, int8 rescored) vs exact numpy",
        ),
    ]
    mem = after.get("memory_served") or {}
    rss = mem.get("rss_mb")
    served = after.get("grpc_1_client")
    target = 2 if points >= 1_000_000 else 1
    rows.append(
        (
            f"RSS at {label}, restarted {'service' if served else 'store'} after "
            f"{'searching over gRPC' if served else 'searching'}",
            _fmt(rss and rss / _MB_PER_GB, " GB", 2),
            f"<= {target} GB",
            _met(rss and rss / _MB_PER_GB, target, at_most=True),
            f"anonymous {_fmt(mem.get('anon_mb'), ' MB', 0)}, mmapped "
            f"{_fmt(mem.get('file_mb'), ' MB', 0)}",
        )
    )
    whitening = after.get("whitening") or {}
    if whitening.get("images"):
        rows.append(
            (
                f"Learning the search whitening at {label}",
                _fmt(whitening.get("learn_s"), " s"),
                "",
                "",
                f"from {whitening['images']:,} stored vectors, in the background at start-up "
                "and when the folder changed by a quarter",
            )
        )
    if served:
        rows.append(
            (
                f"gRPC search p50 / p99 at {label}",
                f"{_fmt(served.get('p50_ms'), ' ms')} / {_fmt(served.get('p99_ms'), ' ms')}",
                "<= 30 / 100 ms",
                f"p50 {_met(served.get('p50_ms'), 30, at_most=True)}",
                _phase_text(served),
            )
        )
    return rows


def _build_estimate(run: JSON, points: int) -> str:
    """HNSW build time at `points`, from a finished build, as n log n."""
    n, t = run["points"], run["hnsw"]["build_s"]
    if n < 1000:
        return ""
    estimate = t * (points / n) * (math.log(points) / math.log(n))
    return f"; at {points:,} vectors ~{estimate / 60:.0f} min (n log n estimate)"


def markdown(results: JSON) -> str:
    env = results.get("environment") or {}
    lines = [
        "# imgsearch speed benchmark" + (" (quick smoke run)" if results.get("quick") else ""),
        "",
        f"`python -m bench.speed{' --quick' if results.get('quick') else ''}` on "
        f"{env.get('cores')} cores ({env.get('cpu')}), {env.get('started')}, commit "
        f"{env.get('commit')}. Load average (1/5/15 min) at start {env.get('load_start')}, "
        f"at end {env.get('load_end')}: the machine is shared, so absolute numbers are noisy; "
        "alternatives were measured side by side in the same rounds and the ratios are the "
        f"result. Production defaults measured: {env.get('production')} "
        f"({env.get('points_per_image')} point per image). "
        f"onnxruntime {env.get('onnxruntime')}, qdrant-client "
        f"{env.get('qdrant_client')}, qdrant-edge-py {env.get('qdrant_edge')}. "
        f"Wall time {_fmt(env.get('wall_s'), ' s', 0)}.",
        "",
        "## Targets",
        "",
        "| measure | measured | target | | where the time / memory goes |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in target_rows(results)]
    lines += _indexing_details(results.get("indexing") or {})
    lines += _accuracy_details(results.get("accuracy") or {})
    lines += _serving_details(results)
    return "\n".join(lines) + "\n"


def _indexing_details(idx: JSON) -> list[str]:
    if not idx:
        return []
    lines = [
        "",
        "## Indexing",
        "",
        f"{idx['images']} JPEGs, {idx['megapixels_mean']:.1f} MP on average "
        f"({idx['megapixels_range'][0]:.1f}-{idx['megapixels_range'][1]:.1f} MP), "
        f"{idx['bytes_mean'] / 1e3:.0f} kB on average.",
        "",
        "| path | images/s | read+hash | decode | preprocess+pool | model | upsert (ms/img) |",
        "|---|---|---|---|---|---|---|",
    ]
    prod = idx["production"]
    s = prod["stages_ms"]
    lines.append(
        f"| production path | {prod['rate']:.1f} | {s.get('read_hash', 0):.1f} | "
        f"{s.get('decode', 0):.1f} | {s.get('preprocess', 0):.1f} | {s.get('model', 0):.1f} | "
        f"{s.get('upsert', 0):.1f} |"
    )
    e2e = idx.get("indexer_e2e") or {}
    lines.append(
        f"| the service's Indexer, end to end | {_fmt(e2e.get('rate'))} | | | | | |",
    )
    limit = idx["limit"]
    lines.append(
        f"| limit: decode alone, then embed alone, 2 workers (wall per image; embed in the "
        f"model column) | {limit['rate']:.1f} | | {limit['decode_ms']:.1f} | | "
        f"{limit['encode_ms']:.1f} | |"
    )
    single = idx.get("limit_sequential")
    if single:
        lines.append(
            f"| limit, one thread (2 onnxruntime threads, batch 16) | {single['rate']:.1f} | | "
            f"{single['decode_ms']:.1f} | {single['encode_ms'] - single['model_ms']:.1f} | "
            f"{single['model_ms']:.1f} | |"
        )
    lines += [
        "",
        "Pipelines, interleaved on the same images (stage times are summed over workers, so "
        "with 2 workers they add up to about twice the wall time):",
        "",
        "| pipeline | images/s | vs production | read+hash | decode | encode | upsert (ms/img) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in idx.get("pipelines") or []:
        st = p["stages_ms"]
        encode = st.get("encode", st.get("model", 0) + st.get("preprocess", 0))
        lines.append(
            f"| {p['name']} | {p['rate']:.1f} | {p['ratio_vs_production']:.2f}x | "
            f"{st.get('read_hash', 0):.1f} | {st.get('decode', 0):.1f} | {encode:.1f} | "
            f"{st.get('upsert', 0):.1f} |"
        )
    lines += [
        "",
        "Decode (JPEG DCT draft scale; cosine of descriptors vs a full-size decode):",
        "",
        "| decode | ms/img | cosine mean | cosine min |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {d['name']} | {d['decode_ms']:.1f} | {d['cosine_vs_full_mean']:.4f} | "
        f"{d['cosine_vs_full_min']:.4f} |"
        for d in idx.get("decode_candidates") or []
    ]
    models = idx.get("model_candidates") or []
    base = models[0] if models else None  # production: 1 thread, one image per call
    lines += [
        "",
        "Model (onnxruntime time per image; encode adds batch assembly and GeM pooling):",
        "",
        "| precision | side | threads | batch | model ms/img | encode ms/img | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in models:
        speedup = base["encode_ms"] / m["encode_ms"] if base and m["encode_ms"] else None
        lines.append(
            f"| {m['precision']} | {m['side']} | {m['threads']} | {m['batch']} | "
            f"{m['model_ms']:.1f} | {m['encode_ms']:.1f} | {_fmt(speedup, 'x', 2)} |"
        )
    return lines


def _accuracy_details(acc: JSON) -> list[str]:
    if not acc:
        return []
    lines = [
        "",
        "## What the descriptor speed-ups cost",
        "",
        f"{acc['photos']} photos indexed, {acc['queries']} degraded queries ("
        + ", ".join(f"{kind}: rank-1 {hit:.3f}" for kind, hit in acc["query_kinds"].items())
        + " with production; crop60/crop45 keep 60%/45% of the pixels, jpeg30 is the whole "
        "photo at quality 30, all at most 1024 px); each variant indexes and queries with its "
        "own model and size.",
        "",
        "| model | side | regions | rank-1 | margin | top-1 = production "
        "| cosine vs fp32 (mean / 1% / min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in acc["variants"]:
        cosine = (
            f"{v['cosine_vs_fp32_mean']:.4f} / {v['cosine_vs_fp32_p01']:.4f} / "
            f"{v['cosine_vs_fp32_min']:.4f}"
            if "cosine_vs_fp32_mean" in v
            else ""
        )
        lines.append(
            f"| {v['precision']} | {v['side']} | {'on' if v.get('regions') else 'off'} | "
            f"{v['rank1']:.3f} | {v['margin_mean']:.3f} | "
            f"{v['top1_agreement_with_production']:.3f} | {cosine} |"
        )
    real, synthetic = acc.get("real_profile") or {}, acc.get("synthetic_profile") or {}
    lines += [
        "",
        f"Synthetic filler vs real descriptors: mean pairwise cosine "
        f"{_fmt(synthetic.get('mean_cosine'), '', 3)} vs {_fmt(real.get('mean_cosine'), '', 3)}, "
        f"mean nearest-neighbour cosine {_fmt(synthetic.get('nn_cosine'), '', 3)} vs "
        f"{_fmt(real.get('nn_cosine'), '', 3)}.",
    ]
    return lines


def _serving_details(results: JSON) -> list[str]:
    runs = sorted(
        [{**(r.get("partial") or {}), **r} for r in results.get("serving") or []],
        key=lambda r: (r["engine"], bool(r.get("regions")), r["images"]),
    )
    if not runs:
        return []
    lines = [
        "",
        "## Search and memory by size",
        "",
        "gRPC Search with real degraded query photos (limit 10); `ann` = the store search "
        "alone; RSS of the serving process (anonymous + mmapped files).",
        "",
        "| engine | images | points | fill s | p50 / p99 ms (1 client) | queries/s (4 clients) "
        "| decode / embed / ann / rescore ms | ann p50 / p99 ms | recall@10 | RSS MB (anon / file) "
        "| after restart: open s, RSS MB | dedupe lookup ms | upsert ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        stages = _get(r, "grpc_1_client", "stage_mean_ms") or {}
        mem = r.get("memory_served") or {}
        restart = r.get("restart") or {}
        lines.append(
            f"| {r['engine']}{' + regions' if r.get('regions') else ''} | {r['images']:,} | "
            f"{_fmt(r.get('points'), '', 0)} | "
            f"{_fmt(r.get('fill_s'), '', 0)} | "
            f"{_fmt(_get(r, 'grpc_1_client', 'p50_ms'))} / "
            f"{_fmt(_get(r, 'grpc_1_client', 'p99_ms'))} | "
            f"{_fmt(_get(r, 'grpc_4_clients', 'throughput_qps'))} | "
            + " / ".join(_fmt(stages.get(k)) for k in ("decode", "embed", "ann", "rescore"))
            + f" | {_fmt(_get(r, 'ann', 'p50_ms'))} / {_fmt(_get(r, 'ann', 'p99_ms'))} | "
            f"{_fmt(_get(r, 'ann', 'recall_at_10'), '', 3)} | "
            f"{_fmt(mem.get('rss_mb'), '', 0)} ({_fmt(mem.get('anon_mb'), '', 0)} / "
            f"{_fmt(mem.get('file_mb'), '', 0)}) | "
            f"{_fmt(restart.get('open_s'))}, "
            f"{_fmt(_get(restart, 'memory_open', 'rss_mb'), '', 0)} | "
            f"{_fmt(_get(r, 'index_cost', 'dedupe_lookup_ms'))} | "
            f"{_fmt(_get(r, 'index_cost', 'upsert_ms_per_image'))} |"
        )
        if r.get("error"):
            lines.append(f"| | | | | {r['error']} | | | | | | | | |")
    hnsw_runs = [r for r in runs if r.get("hnsw")]
    if hnsw_runs:
        lines += [
            "",
            "`imgsearch optimize`: the HNSW graph built by the production "
            "`EdgeStore.build_graph()` with nothing served (the service never builds one: "
            "optimize() holds the GIL), then a restarted service (gRPC) or store (1M, store "
            f"only) on that shard, production search parameters (hnsw_ef {HNSW_EF}, int8 "
            "rescored):",
            "",
            "| images | points | build s | vectors in graph | ann p50 / p99 ms | recall@10 "
            "| gRPC p50 / p99 ms | RSS MB restarted (anon / file) | |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in hnsw_runs:
            h, after = r["hnsw"], r.get("after_graph") or {}
            ann = after.get("ann") or h.get("ann") or {}
            mem = after.get("memory_served") or {}
            lines.append(
                f"| {r['images']:,} | {_fmt(r.get('points'), '', 0)} | "
                f"{_fmt(h.get('build_s'), '', 0)} | "
                f"{_fmt(after.get('graph_vectors', h.get('indexed_vectors')), '', 0)} | "
                f"{_fmt(ann.get('p50_ms'))} / {_fmt(ann.get('p99_ms'))} | "
                f"{_fmt(ann.get('recall_at_10'), '', 3)} | "
                f"{_fmt(_get(after, 'grpc_1_client', 'p50_ms'))} / "
                f"{_fmt(_get(after, 'grpc_1_client', 'p99_ms'))} | "
                f"{_fmt(mem.get('rss_mb'), '', 0)} ({_fmt(mem.get('anon_mb'), '', 0)} / "
                f"{_fmt(mem.get('file_mb'), '', 0)}) | "
                f"{h.get('error') or after.get('error') or ''} |"
            )
    return lines


def plots(results: JSON, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    if results.get("indexing"):
        _indexing_plot(results["indexing"], out / "indexing.png")
    if results.get("serving"):
        _serving_plot(results, out / "serving.png")


def _indexing_plot(idx: JSON, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    names = [p["name"] for p in idx["pipelines"]]
    rates = [p["rate"] for p in idx["pipelines"]]
    axes[0].barh(range(len(names)), rates, color="tab:blue")
    axes[0].set_yticks(range(len(names)), [n.replace(", ", "\n", 1) for n in names], fontsize=7)
    axes[0].axvline(100, color="grey", linestyle="--", linewidth=1)
    axes[0].set_xlabel("images/s (target 100, dashed)")
    axes[0].set_title("Indexing pipelines, same images, interleaved")
    axes[0].invert_yaxis()
    stages = ("read_hash", "decode", "preprocess", "model", "upsert")
    left = 0.0
    for stage in stages:
        value = idx["production"]["stages_ms"].get(stage, 0.0)
        axes[1].barh([0], [value], left=left, label=stage)
        left += value
    axes[1].set_yticks([0], ["production"])
    axes[1].set_xlabel("ms per image")
    axes[1].set_title("Where an image's indexing time goes (production path)")
    axes[1].legend(fontsize=8, ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _serving_plot(results: JSON, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for kind, colour, regions in (
        ("local", "tab:red", False),
        ("edge", "tab:green", False),
        ("edge", "tab:blue", True),
    ):
        engine_runs = _runs(results, kind, regions=regions)
        engine = kind + (" + regions" if regions else "")
        xs = [r["images"] for r in engine_runs]
        for key, style in (("p50_ms", "-o"), ("p99_ms", "--o")):
            ys = [_get(r, "grpc_1_client", key) for r in engine_runs]
            pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if pairs:
                axes[0].plot(*zip(*pairs, strict=True), style, color=colour,
                             label=f"{engine} {key[:3]}")  # fmt: skip
        ann = [(r["points"], _get(r, "ann", "p50_ms")) for r in engine_runs]
        ann = [(x, y) for x, y in ann if y is not None]
        if ann:
            axes[1].plot(*zip(*ann, strict=True), "-o", color=colour, label=f"{engine} plain")
        hnsw = [(r["points"], _get(r, "hnsw", "ann", "p50_ms")) for r in engine_runs]
        hnsw = [(x, y) for x, y in hnsw if y is not None]
        if hnsw:
            axes[1].plot(*zip(*hnsw, strict=True), ":s", color=colour, label=f"{engine} HNSW")
        rss = [(r["images"], _get(r, "memory_served", "rss_mb")) for r in engine_runs]
        rss = [(x, y) for x, y in rss if y is not None]
        if rss:
            axes[2].plot(*zip(*rss, strict=True), "-o", color=colour, label=engine)
    axes[0].axhline(30, color="grey", linestyle="--", linewidth=1)
    axes[0].set_title("gRPC search latency (target p50 30 ms)")
    axes[0].set_xlabel("indexed images")
    axes[0].set_ylabel("ms")
    axes[1].axhline(50, color="grey", linestyle="--", linewidth=1)
    axes[1].set_title("store search alone (target 50 ms at 1M)")
    axes[1].set_xlabel("points (vectors)")
    axes[2].axhline(1024, color="grey", linestyle="--", linewidth=1)
    axes[2].set_title("serving process RSS (target 1 GB at 100k)")
    axes[2].set_xlabel("indexed images")
    axes[2].set_ylabel("MB")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
