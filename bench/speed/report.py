"""results.json -> results.md (targets table first, then the details) and PNG plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.speed.common import JSON

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


def _runs(results: JSON, engine: str) -> list[JSON]:
    """Serving runs of one engine, by size, with partial results of stopped runs merged in."""
    out = []
    for run in results.get("serving") or []:
        if run.get("engine") != engine:
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
    stages = _get(run, "grpc_1_client", "stage_mean_ms")
    if not stages:
        return ""
    return "mean per query: " + ", ".join(f"{k} {v:.1f} ms" for k, v in stages.items())


def target_rows(results: JSON) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    idx = results.get("indexing") or {}
    prod = idx.get("production") or {}
    limit = idx.get("limit") or {}
    if prod:
        rows.append(
            (
                "Indexing, production path (sequential, fp32 384, local store)",
                _fmt(prod.get("rate"), " img/s"),
                ">= 100 img/s",
                _met(prod.get("rate"), 100, at_most=False),
                "per image: "
                + _stage_cause(prod.get("stages_ms") or {})
                + f"; limit (decode alone + model alone) {_fmt(limit.get('rate'), ' img/s')}, "
                f"production reaches {_fmt(100 * (limit.get('production_fraction') or 0), '%', 0)}"
                " of it",
            )
        )
    pipelines = [p for p in idx.get("pipelines") or [] if not p["name"].startswith("production")]
    if pipelines:
        best = max(pipelines, key=lambda p: p["rate"])
        rows.append(
            (
                f"Indexing, best candidate ({best['name']})",
                _fmt(best["rate"], " img/s"),
                ">= 100 img/s",
                _met(best["rate"], 100, at_most=False),
                f"{best['ratio_vs_production']:.1f}x production in the same rounds; per image "
                "(summed over workers): " + _stage_cause(best.get("stages_ms") or {}),
            )
        )
    local, edge = _runs(results, "local"), _runs(results, "edge")
    for name, runs in (("embedded default (qdrant-client local)", local), ("qdrant-edge", edge)):
        run = _at(runs, 10_000) or (runs[-1] if results.get("quick") and runs else None)
        size = f"{run['images']:,}" if run else "10,000"
        p50 = _get(run, "grpc_1_client", "p50_ms")
        p99 = _get(run, "grpc_1_client", "p99_ms")
        cause = _search_cause(run)
        note = f"4 clients: {_fmt(_get(run, 'grpc_4_clients', 'throughput_qps'), ' queries/s')}"
        if run is None and runs:  # too slow to measure there: scale the brute-force part
            largest = runs[-1]
            factor = 10_000 / largest["images"]
            ann = _get(largest, "ann", "p50_ms") or 0.0
            p50 = _get(largest, "grpc_1_client", "p50_ms")
            p99 = _get(largest, "grpc_1_client", "p99_ms")
            p50 = p50 and p50 + ann * (factor - 1)
            p99 = p99 and p99 + ann * (factor - 1)
            size = "10,000 (extrapolated)"
            cause = (
                f"measured at {largest['images']:,} images, store search (brute force, "
                f"{_fmt(ann, ' ms')} there) scaled x{factor:.0f} with the points; at "
                f"{largest['images']:,}: " + _search_cause(largest)
            )
            note = cause

        rows.append(
            (
                f"Search p50 via gRPC at {size} images, {name}",
                _fmt(p50, " ms"),
                "<= 30 ms",
                _met(p50, 30, at_most=True),
                cause,
            )
        )
        hnsw = _get(run, "hnsw", "grpc_1_client")
        if hnsw:
            rows.append(
                (
                    f"Search p50 via gRPC at {size} images, {name} with its HNSW graph",
                    _fmt(hnsw["p50_ms"], " ms"),
                    "<= 30 ms",
                    _met(hnsw["p50_ms"], 30, at_most=True),
                    "mean per query: "
                    + ", ".join(f"{k} {v:.1f} ms" for k, v in hnsw["stage_mean_ms"].items())
                    + f"; p99 {_fmt(hnsw['p99_ms'], ' ms')}",
                )
            )
        rows.append(
            (
                f"Search p99 via gRPC at {size} images, {name}",
                _fmt(p99, " ms"),
                "<= 100 ms",
                _met(p99, 100, at_most=True),
                note,
            )
        )
        if len(runs) >= 2:
            small, large = runs[0], runs[-1]
            a = _get(small, "ann", "p50_ms")
            b = _get(large, "ann", "p50_ms")
            growth = b / a if a and b else None
            factor = large["images"] / small["images"]
            rows.append(
                (
                    f"ANN cost growth {small['images']:,} -> {large['images']:,} images, {name}",
                    _fmt(growth, "x", 1),
                    f"sub-linear (< {factor:.0f}x)",
                    "n/a" if growth is None else _met(growth, factor * 0.5, at_most=True),
                    f"ANN p50 {_fmt(a, ' ms')} -> {_fmt(b, ' ms')} (no index: brute force)",
                )
            )
            indexed = [r for r in runs if _get(r, "hnsw", "ann", "p50_ms") is not None]
            if len(indexed) >= 2:
                a = _get(indexed[0], "hnsw", "ann", "p50_ms")
                b = _get(indexed[-1], "hnsw", "ann", "p50_ms")
                factor = indexed[-1]["images"] / indexed[0]["images"]
                rows.append(
                    (
                        f"ANN cost growth {indexed[0]['images']:,} -> "
                        f"{indexed[-1]['images']:,} images, {name} with HNSW",
                        _fmt(b / a if a and b else None, "x", 1),
                        f"sub-linear (< {factor:.0f}x)",
                        _met(b / a if a and b else None, factor * 0.5, at_most=True),
                        f"ANN p50 {_fmt(a, ' ms')} -> {_fmt(b, ' ms')}",
                    )
                )
    rows += _scale_rows(results, local, edge)
    return rows


def _scale_rows(
    results: JSON, local: list[JSON], edge: list[JSON]
) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    points = _get(results, "environment", "points_per_image") or 1
    million = next((r for r in edge if r.get("points", 0) >= 1_000_000), None)
    if million is not None:
        label = f"{million['points']:,} vectors ({million['images']:,} images), qdrant-edge"
        plain = _get(million, "ann", "p50_ms")
        hnsw = _get(million, "hnsw", "ann", "p50_ms")
        built = _get(million, "hnsw", "build_s")
        rows.append(
            (
                f"Search p50 at {label}, no HNSW",
                _fmt(plain, " ms"),
                "<= 50 ms",
                _met(plain, 50, at_most=True),
                "brute force over every point, for each query scale the nearest "
                f"{10 * points} points (limit 10 x {points} points per image); "
                f"fill {_fmt(million.get('fill_s'), ' s', 0)}",
            )
        )
        rows.append(
            (
                f"Search p50 at {label}, HNSW",
                _fmt(hnsw, " ms"),
                "<= 50 ms",
                _met(hnsw, 50, at_most=True),
                f"HNSW build {_fmt(built, ' s', 0)}"
                if built
                else f"{million.get('error') or 'HNSW build not run'}; "
                + _build_estimate(edge, million["points"]),
            )
        )
        for key, what in (("ann", "no HNSW"), ("hnsw", "HNSW")):
            recall = _get(million, key, "recall_at_10") if key == "ann" else None
            if key == "hnsw":
                recall = _get(million, "hnsw", "ann", "recall_at_10")
            rows.append(
                (
                    f"Recall@10 vs exact at {label}, {what}",
                    _fmt(recall, "", 3),
                    ">= 0.99",
                    _met(recall, 0.99, at_most=False),
                    "top-10 points for real degraded-query descriptors among synthetic "
                    "look-alikes, vs exact numpy search",
                )
            )
        for key, what in (("memory_served", "after filling and serving"),
                          ("restart", "after a restart and 5 searches")):  # fmt: skip
            mem = (
                _get(million, key)
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
                    f"anonymous {_fmt(_get(mem, 'anon_mb'), ' MB', 0)}, "
                    f"mmapped files {_fmt(_get(mem, 'file_mb'), ' MB', 0)} (page cache the "
                    "kernel can evict, at the price of disk reads)",
                )
            )
    if local:
        target_images = 1_000_000 // points
        largest = local[-1]
        ann = _get(largest, "ann", "p50_ms")
        ann = ann and ann * target_images / largest["images"]  # brute force: per point
        rss = _extrapolate(local, ("memory_served", "rss_mb"), target_images)
        rows.append(
            (
                f"1M vectors ({target_images:,} images), embedded default, extrapolated",
                f"ANN p50 ~{_fmt(ann and ann / 1e3, ' s')}, RSS ~{_fmt(rss and rss / 1024, ' GB')}",
                "<= 50 ms, <= 2 GB",
                "**not met**" if ann and ann > 50 else "n/a",
                f"store search scaled with the points from {largest['images']:,} images; "
                "memory linear through the two sizes measured",
            )
        )
    for name, runs in (("embedded default", local), ("qdrant-edge", edge)):
        run = _at(runs, 100_000)
        rss = _get(run, "memory_served", "rss_mb")
        how = "measured"
        if rss is None:
            rss = _extrapolate(runs, ("memory_served", "rss_mb"), 100_000)
            how = "extrapolated (linear)"
        restart = _get(run, "restart", "memory_searched", "rss_mb") or _extrapolate(
            runs, ("restart", "memory_searched", "rss_mb"), 100_000
        )
        rows.append(
            (
                f"Service RSS at 100,000 images, {name}",
                _fmt(rss and rss / _MB_PER_GB, " GB", 2),
                "<= 1 GB",
                _met(rss and rss / _MB_PER_GB, 1, at_most=True),
                f"{how}; after a restart and 5 searches "
                f"{_fmt(restart and restart / _MB_PER_GB, ' GB', 2)}",
            )
        )
    return rows


def _build_estimate(edge: list[JSON], points: int) -> str:
    """HNSW build time at `points`, from the largest finished build, as n log n."""
    built = [r for r in edge if _get(r, "hnsw", "build_s") is not None and r["points"] > 1000]
    if not built:
        return "no finished build to extrapolate from"
    ref = built[-1]
    n, t = ref["points"], ref["hnsw"]["build_s"]
    estimate = t * (points / n) * (math.log(points) / math.log(n))
    return f"estimated ~{estimate / 60:.0f} min from {t:.0f} s at {n:,} points (n log n)"


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
        f"result. Descriptor layout of this checkout: {env.get('points_per_image')} point(s) "
        f"per image. onnxruntime {env.get('onnxruntime')}, qdrant-client "
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
        f"| limit: decode alone + model alone | {limit['rate']:.1f} | | "
        f"{limit['decode_ms']:.1f} | | {limit['model_ms']:.1f} | |"
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
    base = next((m for m in models if (m["precision"], m["side"], m["threads"], m["batch"]) ==
                 ("fp32", 384, 2, 16)), None)  # fmt: skip
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
        "| model | side | rank-1 | margin | top-1 = production "
        "| cosine vs fp32 (mean / 1% / min) |",
        "|---|---|---|---|---|---|",
    ]
    for v in acc["variants"]:
        cosine = (
            f"{v['cosine_vs_fp32_mean']:.4f} / {v['cosine_vs_fp32_p01']:.4f} / "
            f"{v['cosine_vs_fp32_min']:.4f}"
            if "cosine_vs_fp32_mean" in v
            else ""
        )
        lines.append(
            f"| {v['precision']} | {v['side']} | {v['rank1']:.3f} | {v['margin_mean']:.3f} | "
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
        key=lambda r: (r["engine"], r["images"]),
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
        "| decode / embed / ann ms | ann p50 / p99 ms | recall@10 | RSS MB (anon / file) "
        "| after restart: open s, RSS MB | dedupe lookup ms | upsert ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        stages = _get(r, "grpc_1_client", "stage_mean_ms") or {}
        mem = r.get("memory_served") or {}
        restart = r.get("restart") or {}
        lines.append(
            f"| {r['engine']} | {r['images']:,} | {_fmt(r.get('points'), '', 0)} | "
            f"{_fmt(r.get('fill_s'), '', 0)} | "
            f"{_fmt(_get(r, 'grpc_1_client', 'p50_ms'))} / "
            f"{_fmt(_get(r, 'grpc_1_client', 'p99_ms'))} | "
            f"{_fmt(_get(r, 'grpc_4_clients', 'throughput_qps'))} | "
            + " / ".join(_fmt(stages.get(k)) for k in ("decode", "embed", "ann"))
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
            "qdrant-edge with its HNSW graph (m 16, ef_construct 100) built by optimize():",
            "",
            "| images | points | build s | ann p50 / p99 ms | recall@10 | ef 256: p50 ms, "
            "recall@10 | gRPC p50 / p99 ms | RSS MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in hnsw_runs:
            h = r["hnsw"]
            lines.append(
                f"| {r['images']:,} | {_fmt(r.get('points'), '', 0)} | "
                f"{_fmt(h.get('build_s'), '', 0)} | {_fmt(_get(h, 'ann', 'p50_ms'))} / "
                f"{_fmt(_get(h, 'ann', 'p99_ms'))} | "
                f"{_fmt(_get(h, 'ann', 'recall_at_10'), '', 3)} | "
                f"{_fmt(_get(h, 'ann_ef256', 'p50_ms'))}, "
                f"{_fmt(_get(h, 'ann_ef256', 'recall_at_10'), '', 3)} | "
                f"{_fmt(_get(h, 'grpc_1_client', 'p50_ms'))} / "
                f"{_fmt(_get(h, 'grpc_1_client', 'p99_ms'))} | "
                f"{_fmt(_get(h, 'memory', 'rss_mb'), '', 0)} |"
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
    for engine, colour in (("local", "tab:red"), ("edge", "tab:green")):
        engine_runs = _runs(results, engine)
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
