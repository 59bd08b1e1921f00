"""`python -m bench.speed.live [--vectors N] [--added N] [--quick] [--out DIR]`: the
embedded index's graph built while it serves (issue 16).

One process plays the service: the production EdgeStore (qdrant-edge) is filled with N
descriptors through `VectorStore.upsert`, then the production `LiveGraph` builds the graph
while a client searches `--search-rate` times a second (default 20) and the indexer
writes 50 images a second (batches of 16); then `--added` more images are indexed and the
store is measured as it then serves: search p50/p99, recall@10 against exact search,
memory (anonymous and file-backed apart), and the same after a restart. Store calls only
(no gRPC, no model in the search path).

The descriptors are synthetic 512-d vectors drawn from a model fitted on real `sscd-mnv4s`
descriptors of the benchmark photos (bench.speed.vectors: leading principal directions,
series of near neighbours), so the graph sees the structure of a real folder. Queries are
stored vectors with noise added (like a degraded copy), and their exact top 10 is computed
chunk by chunk as the vectors are written.

Writes live.md, live.json and live.png into --out (default bench/results/speed).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import numpy as np
import qdrant_edge as qe
from numpy.typing import NDArray

import imgsearch.store.edge as edge_module
from bench.speed.common import (
    JSON,
    latency_summary,
    loadavg,
    log,
    machine,
    memory,
)
from bench.speed.vectors import F32, DescriptorModel, ExactTopK
from imgsearch.descriptors import DescriptorSet
from imgsearch.store.base import HNSW_EF, FileState
from imgsearch.store.edge import CopyPage, EdgeStore, JournalEntry, SwapTimes
from imgsearch.store.graph import LiveGraph

DIMENSIONS = 512
COLLECTION = "images"
_FILL_BATCH = 256
_WRITE_BATCH = 16  # the indexer's batch
# The traffic during the build: a client searching `--search-rate` times a second (each
# search a GIL-holding engine call: a client without pause would leave the copy no turn at
# 1M vectors, where a scan takes ~0.1 s) and the indexer writing at its measured rate.
_WRITES_PER_SECOND = 50.0
_QUERIES = 200
# 300 queries (3,000 neighbours) put recall@10's standard error near 0.002, under the gap
# between the hnsw_ef settings compared (hnsw.md: 0.985 / 0.995 at 1024 / 1536).
_RECALL_QUERIES = 300
# The candidate lists the restarted store is searched with, beside production's.
EF_COMPARED = (1024, 1536)
_ROUNDS = 4
_QUERY_NOISE = 0.35  # relative to a stored vector: cosine ~0.94 to its source


def real_descriptors(limit: int = 120, *, quick: bool) -> F32:
    """`sscd-mnv4s` descriptors of bench.speed's photos, which the synthetic vectors are
    modelled on: the bundled samples and the Debian packages' photos (made if not cached),
    or the samples alone for a smoke run. Never the samples in a full run: a model fitted to
    their 9 vectors has rank 8, and its corpus is so easy that every search setting finds
    the exact top 10 (a run that fell back to them measured recall@10 1.000 at hnsw_ef 128)."""
    from bench.speed import corpus
    from imgsearch.model import ImageEncoder
    from imgsearch.settings import ModelSettings

    encoder = ImageEncoder(ModelSettings(model="sscd-mnv4s"))
    photos = corpus.photo_files(quick)[:limit]
    if not quick and len(photos) <= len(corpus.bundled_photos()):
        raise RuntimeError("the Debian packages' photos could not be fetched (apt-get download)")
    vectors = [encoder.describe_file(p.read_bytes(), regions=False).vectors[0] for p in photos]
    return np.stack(vectors).astype(np.float32)


def items(vectors: F32, first: int) -> list[tuple[FileState, DescriptorSet]]:
    box = np.asarray([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)
    return [
        (FileState(path_of(first + i), 1, 1, f"{first + i:064x}"), DescriptorSet(v[None], box))
        for i, v in enumerate(vectors)
    ]


def path_of(index: int) -> str:
    return f"synthetic/{index // 1000:04d}/{index:07d}.jpg"


class Corpus:
    """Vectors by index, drawn chunk by chunk; the exact top 10 of the queries follows them."""

    def __init__(self, model: DescriptorModel, total: int, queries: F32) -> None:
        self.model = model
        self.total = total
        self.written = 0
        self.exact = ExactTopK(queries, 10)

    def chunk(self, count: int) -> tuple[F32, int]:
        first = self.written
        vectors = self.model.sample(count, seed=first, total=self.total)
        self.exact.add(vectors, first)
        self.written += count
        return vectors, first


def make_queries(model: DescriptorModel, total: int, count: int, among: int) -> F32:
    """Noisy copies of `count` of the first `among` vectors of a corpus of `total`, drawn as
    the corpus draws them (`total` sets its series: a different one draws other vectors)."""
    rng = np.random.default_rng(7)
    picked = sorted(rng.choice(among, size=count, replace=False))
    out = []
    for index in picked:
        chunk_first = (index // _FILL_BATCH) * _FILL_BATCH
        vector = model.sample(_FILL_BATCH, seed=chunk_first, total=total)[index - chunk_first]
        out.append(vector)
    queries = np.stack(out)
    queries += rng.standard_normal(queries.shape).astype(np.float32) * (
        _QUERY_NOISE / np.sqrt(queries.shape[1])
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries.astype(np.float32)


@contextmanager
def search_params(
    hnsw_ef: int, oversampling: float = 2.0, quantized: bool = True
) -> Iterator[None]:
    """The production search with other parameters (the store reads them per call)."""
    saved = edge_module._SEARCH_PARAMS
    quantization = (
        qe.QuantizationSearchParams(rescore=True, oversampling=oversampling)
        if quantized
        else qe.QuantizationSearchParams(ignore=True)
    )
    edge_module._SEARCH_PARAMS = qe.SearchParams(hnsw_ef=hnsw_ef, quantization=quantization)
    try:
        yield
    finally:
        edge_module._SEARCH_PARAMS = saved


def searches(store: EdgeStore, queries: F32, count: int, first: int = 0) -> list[float]:
    seconds = []
    for i in range(first, first + count):
        start = time.perf_counter()
        store.search(queries[i % len(queries)][None], 10)
        seconds.append(time.perf_counter() - start)
    return seconds


def recalls(store: EdgeStore, queries: F32, exact: NDArray[np.int64]) -> JSON:
    """recall@10 against exact search, and recall@1: whether the first hit is the exact
    nearest (for a copy, its source; the rest of the 10 are merely similar images)."""
    found = first = 0
    for query, wanted in zip(queries, exact, strict=True):
        hits = store.search(query[None], 10)
        found += len({path_of(int(i)) for i in wanted} & {h.path for h in hits})
        first += bool(hits) and hits[0].path == path_of(int(wanted[0]))
    return {"recall_at_10": found / (10 * len(queries)), "recall_at_1": first / len(queries)}


def fill(store: EdgeStore, corpus: Corpus, count: int, batch: int = _FILL_BATCH) -> float:
    start = time.perf_counter()
    done = 0
    while done < count:
        vectors, first = corpus.chunk(min(batch, count - done))
        store.upsert(items(vectors, first))
        done += len(vectors)
        if done % 100_000 < batch:
            log(f"live: {corpus.written} vectors written")
    return time.perf_counter() - start


class _WatchedBuild:
    """The store's build steps, timed and counted: wrapped on the instance until `restore`."""

    def __init__(self, store: EdgeStore) -> None:
        self.store = store
        self.phases: dict[str, float] = {}
        self.swapped: list[SwapTimes] = []
        self.handed: list[int] = []  # journalled writes handed to the builder, per round
        self._copy, self._swap, self._take = (
            store.copy_pages,
            store.swap_in_copy,
            store.take_journal,
        )
        store.copy_pages = self.copy_pages  # type: ignore[method-assign,assignment]
        store.swap_in_copy = self.swap_in_copy  # type: ignore[method-assign]
        store.take_journal = self.take_journal  # type: ignore[method-assign]

    def copy_pages(self, *page_size: int) -> Iterator[CopyPage]:
        self.phases["copy_start"] = time.perf_counter()
        yield from self._copy(*page_size)
        self.phases["copy_end"] = time.perf_counter()

    def swap_in_copy(self) -> SwapTimes:
        self.phases["swap_start"] = time.perf_counter()
        self.swapped.append(self._swap())
        self.phases["swap_end"] = time.perf_counter()
        return self.swapped[-1]

    def take_journal(self) -> list[JournalEntry]:
        writes = self._take()
        self.handed.append(len(writes))
        return writes

    def restore(self) -> None:
        del self.store.copy_pages, self.store.swap_in_copy, self.store.take_journal


def build_under_traffic(store: EdgeStore, corpus: Corpus, queries: F32, rate: float) -> JSON:
    """The production LiveGraph's build, with a client searching throughout and the indexer
    writing a batch every 10 searches; each search's latency is kept with its time."""
    watched = _WatchedBuild(store)
    phases, swapped, handed = watched.phases, watched.swapped, watched.handed
    graph = LiveGraph(store, min_scanned=1)
    done = threading.Event()
    timeline: list[tuple[float, float]] = []
    written = [0]

    def client() -> None:
        i = 0
        next_write = time.perf_counter()
        while not done.is_set():
            start = time.perf_counter()
            store.search(queries[i % len(queries)][None], 10)
            timeline.append((start, time.perf_counter() - start))
            i += 1
            if time.perf_counter() >= next_write:
                vectors, first = corpus.chunk(_WRITE_BATCH)
                store.upsert(items(vectors, first))
                written[0] += _WRITE_BATCH
                next_write += _WRITE_BATCH / _WRITES_PER_SECOND
            done.wait(max(0.0, start + 1 / rate - time.perf_counter()))

    traffic = threading.Thread(target=client)
    started = time.perf_counter()
    traffic.start()
    try:
        graph.build_now()
    finally:
        done.set()
        traffic.join()
        watched.restore()
    ended = time.perf_counter()
    status = graph.status()
    during = [s for t, s in timeline if t < phases.get("swap_start", ended)]
    swap = [s for t, s in timeline if phases.get("swap_start", ended) <= t + s]
    return {
        "build_seconds": ended - started,
        "copy_seconds": phases["copy_end"] - phases["copy_start"],
        "child_seconds": phases["swap_start"] - phases["copy_end"],
        "swap_seconds": phases["swap_end"] - phases["swap_start"],
        "swap": asdict(swapped[0]),
        "handed_to_builder": handed,
        "graph_vectors": status.graph_vectors,
        "scanned_after": status.scanned_vectors,
        "writes_during_build": written[0],
        "searches_during_build": latency_summary(during),
        "slowest_search_ms": 1e3 * max(s for _, s in timeline),
        "searches_touching_swap": len(swap),
        "timeline": [(round(t - started, 3), round(1e3 * s, 2)) for t, s in timeline],
        "phases": {k: round(v - started, 3) for k, v in phases.items()},
        "state_after": status.state,
        "error": status.last_error,
    }


def measure_serving(store: EdgeStore, queries: F32, exact: NDArray[np.int64]) -> JSON:
    gc.collect()
    total, graphed = store.vector_counts()
    return {
        "vectors": total,
        "graph_vectors": graphed,
        "search": latency_summary(searches(store, queries, _QUERIES)),
        **recalls(store, queries, exact),
        "memory": memory(),
    }


def measure_restart(data: Path) -> JSON:
    """In a fresh process (the service restarted): open the store, then measure it."""
    arrays = np.load(data / "queries.npz")
    started = time.perf_counter()
    store = EdgeStore.open_path(data, collection=COLLECTION, dimensions=DIMENSIONS, model="bench")
    opened = time.perf_counter() - started
    try:
        return {
            "open_seconds": opened,
            **measure_serving(store, arrays["queries"], arrays["exact"]),
            "hnsw_ef": compare_candidate_lists(store, arrays["queries"], arrays["exact"]),
        }
    finally:
        store.close()


def compare_candidate_lists(store: EdgeStore, queries: F32, exact: NDArray[np.int64]) -> JSON:
    """Recall and latency with each of EF_COMPARED and production's hnsw_ef, on one graph;
    the searches alternate between them in rounds (side by side on a noisy machine)."""
    settings = sorted({HNSW_EF, *EF_COMPARED})
    seconds: dict[int, list[float]] = {ef: [] for ef in settings}
    per_round = _QUERIES // _ROUNDS
    for round_ in range(_ROUNDS):
        for ef in settings:
            with search_params(ef):
                seconds[ef] += searches(store, queries, per_round, first=round_ * per_round)
    rows: JSON = {}
    for ef in settings:
        with search_params(ef):
            rows[str(ef)] = {
                "production": ef == HNSW_EF,
                "search": latency_summary(seconds[ef]),
                **recalls(store, queries, exact),
            }
    return rows


def run(vectors: int, added: int, data: Path, rate: float, *, quick: bool = False) -> JSON:
    log("live: describing the photos the synthetic vectors are modelled on")
    real = real_descriptors(quick=quick)
    model = DescriptorModel.fit(real, rank=min(128, len(real) - 1)).calibrated(real)
    total = vectors + added
    queries = make_queries(model, total, _RECALL_QUERIES, among=vectors)
    corpus = Corpus(model, total, queries)
    store = EdgeStore.open_path(data, collection=COLLECTION, dimensions=DIMENSIONS, model="bench")
    result: JSON = {
        "vectors": vectors,
        "photos": len(real),
        "added": added,
        "recall_queries": len(queries),
        "search_rate": rate,
        "load_start": loadavg(),
    }
    log(f"live: filling {vectors} vectors")
    result["fill_seconds"] = fill(store, corpus, vectors)
    result["before"] = measure_serving(store, queries, corpus.exact.result()[0])
    log(f"live: before the build {result['before']['search']}")
    log("live: building the graph under traffic")
    result["build"] = build_under_traffic(store, corpus, queries, rate)
    log(f"live: built in {result['build']['build_seconds']:.0f} s; adding {added} more")
    result["add_seconds"] = fill(store, corpus, added, _WRITE_BATCH)
    exact = corpus.exact.result()[0]
    result["after"] = measure_serving(store, queries, exact)
    log(f"live: after {result['after']['search']} recall {result['after']['recall_at_10']}")
    store.close()
    np.savez(data / "queries.npz", queries=queries, exact=exact)
    code = (
        "import json, sys; from pathlib import Path; from bench.speed.live import measure_restart;"
        " print(json.dumps(measure_restart(Path(sys.argv[1]))))"
    )
    restarted = subprocess.run(
        [sys.executable, "-c", code, str(data)], capture_output=True, text=True, check=True
    )
    result["restart"] = json.loads(restarted.stdout.strip().splitlines()[-1])
    result["load_end"] = loadavg()
    return result


def report(result: JSON, environment: JSON) -> str:
    build, before, after, restart = (
        result["build"],
        result["before"],
        result["after"],
        result["restart"],
    )
    during = build["searches_during_build"]
    rows = [
        ("store search p50 (live, after the build + added)", after["search"]["p50_ms"], "<= 10 ms"),
        ("store search p99", after["search"]["p99_ms"], "<= 30 ms"),
    ]
    met = ["met" if value <= float(t.split()[1]) else "not met" for _, value, t in rows]
    mem = restart["memory"]
    lines = [
        "# The embedded index's graph, built while it serves (issue 16)",
        "",
        f"Made by `python -m bench.speed.live --vectors {result['vectors']} --added "
        f"{result['added']} --search-rate {result['search_rate']:g}` on "
        f"{environment['date']} (commit {environment['commit']}), "
        f"{environment['cores']} cores ({environment['cpu']}), qdrant-edge-py "
        f"{environment['qdrant_edge']}, Python {environment['python']}. Load average "
        f"{result['load_start'][0]} at the start, {result['load_end'][0]} at the end. "
        f"The synthetic vectors are modelled on `sscd-mnv4s` descriptors of {result['photos']} "
        "photos. How it works: the docstring of `bench/speed/live.py`.",
        "",
        "| | measured | target | |",
        "|---|---|---|---|",
    ]
    for (name, value, target), verdict in zip(rows, met, strict=True):
        lines.append(f"| {name} | {value:.1f} ms | {target} | {verdict} |")
    recall = after["recall_at_10"]
    lines += [
        f"| recall@10 against exact search | {recall:.3f} | >= 0.99 | "
        f"{'met' if recall >= 0.99 else 'not met'} |",
        f"| recall@1 (the exact nearest first: a copy's source) | {after['recall_at_1']:.3f} | | |",
        f"| RSS after a restart (anonymous + file-backed) | {mem['rss_mb'] / 1024:.2f} GB "
        f"({mem['anon_mb'] / 1024:.2f} + {mem['file_mb'] / 1024:.2f}) | <= 1.5 GB | "
        f"{'met' if mem['rss_mb'] <= 1.5 * 1024 else 'not met'} |",
        "",
        "## Where the time goes",
        "",
        "| stage | value |",
        "|---|---|",
        f"| filling {result['vectors']} vectors through `VectorStore.upsert` | "
        f"{result['fill_seconds']:.0f} s |",
        f"| store search before the build (a scan of int8 vectors) | p50 "
        f"{before['search']['p50_ms']:.1f} ms, p99 {before['search']['p99_ms']:.1f} ms, "
        f"recall@10 {before['recall_at_10']:.3f} |",
        f"| live build, in all | {build['build_seconds']:.0f} s |",
        f"| - streaming the points to the child (searches go on between pages) | "
        f"{build['copy_seconds']:.0f} s |",
        f"| - the child writing its copy and building the graph (nice 10) | "
        f"{build['child_seconds']:.0f} s |",
        *_handed_row(build.get("handed_to_builder")),
        f"| - the swap (searches and writes wait) | {build['swap_seconds']:.2f} s |",
        *_swap_rows(build.get("swap")),
        f"| searches during the build ({result['search_rate']:g}/s, or back to back when "
        f"slower) | {during['n']}, p50 "
        f"{during['p50_ms']:.1f} ms, p99 {during['p99_ms']:.1f} ms; slowest "
        f"{build['slowest_search_ms']:.0f} ms (the swap) |",
        f"| writes during the build (replayed on the copy) | {build['writes_during_build']} |",
        f"| vectors in the graph / scanned, right after the build | {build['graph_vectors']} / "
        f"{build['scanned_after']} |",
        f"| then {result['added']} more indexed (batches of 16) | {result['add_seconds']:.0f} s |",
        f"| vectors in the graph / all, when measured | {after['graph_vectors']} / "
        f"{after['vectors']} |",
        f"| after a restart (a fresh process): open | {restart['open_seconds']:.1f} s |",
        f"| after a restart: search p50 / p99, recall@10 / @1 | "
        f"{restart['search']['p50_ms']:.1f} / {restart['search']['p99_ms']:.1f} ms, "
        f"{restart['recall_at_10']:.3f} / {restart['recall_at_1']:.3f} |",
        f"| after a restart: RSS (anonymous + file-backed) | "
        f"{restart['memory']['rss_mb'] / 1024:.2f} GB ({restart['memory']['anon_mb'] / 1024:.2f}"
        f" + {restart['memory']['file_mb'] / 1024:.2f}) |",
        "",
        "## After a restart, by the graph's candidate list (`hnsw_ef`)",
        "",
        f"The restarted store's graph searched with each setting, {_ROUNDS} alternating rounds "
        f"of {_QUERIES // _ROUNDS} searches each; recall over the {result['recall_queries']} "
        "queries.",
        "",
        "| hnsw_ef | search p50 / p99 ms | p50 / production's | recall@10 | recall@1 |",
        "|---|---|---|---|---|",
    ]
    by_ef = restart.get("hnsw_ef", {})
    base = next((row for row in by_ef.values() if row["production"]), None)
    for ef, row in by_ef.items():
        label = f"{ef} (production)" if row["production"] else ef
        ratio = row["search"]["p50_ms"] / base["search"]["p50_ms"] if base else float("nan")
        lines.append(
            f"| {label} | {row['search']['p50_ms']:.1f} / {row['search']['p99_ms']:.1f} | "
            f"{ratio:.2f}x | {row['recall_at_10']:.3f} | {row['recall_at_1']:.3f} |"
        )
    lines += [
        "",
        "RSS of the first rows includes what the benchmark's own Python heap kept after "
        "writing a million points; the restart rows are a fresh process that only opens the "
        "store and searches, as a restarted service would. `live.png` plots every search's "
        "latency over the build.",
    ]
    return "\n".join(lines) + "\n"


def _handed_row(handed: list[int] | None) -> list[str]:
    """The writes made during the build that the builder applied to its copy (in rounds,
    before the swap); runs before it did have none."""
    if handed is None:
        return []
    return [
        f"| - writes made meanwhile, applied by the builder to its copy ({len(handed)} rounds) "
        f"| {' + '.join(str(n) for n in handed)} indexer batches |"
    ]


def _swap_rows(swap: JSON | None) -> list[str]:
    """Where the swap's pause went (runs before these were measured have none)."""
    if swap is None:
        return []
    return [
        f"| -- the old shard flushed and closed | {swap['close']:.2f} s |",
        f"| -- the copy opened (graph mapped, payload indexes opened) | {swap['open']:.2f} s |",
        f"| -- the {swap['replayed']} writes journalled during the build replayed on it | "
        f"{swap['replay']:.2f} s |",
        f"| -- the copy flushed, the old shard renamed away | {swap['commit']:.2f} s |",
    ]


def plot(result: JSON, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    build = result["build"]
    times = [t for t, _ in build["timeline"]]
    latency = [ms for _, ms in build["timeline"]]
    figure, axis = plt.subplots(figsize=(9, 4))
    axis.scatter(times, latency, s=2)
    phases = build["phases"]
    axis.axvspan(phases["copy_start"], phases["copy_end"], alpha=0.15, label="copy streamed")
    axis.axvspan(
        phases["copy_end"],
        phases["swap_start"],
        alpha=0.08,
        color="green",
        label="child builds the graph",
    )
    axis.axvspan(phases["swap_start"], phases["swap_end"], alpha=0.3, color="red", label="swap")
    axis.set_yscale("log")
    axis.set_xlabel("seconds since the build began")
    axis.set_ylabel("store search, ms")
    axis.set_title(f"Searches during a live graph build of {result['vectors']:,} vectors")
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def environment() -> JSON:
    return {
        **machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "qdrant_edge": version("qdrant-edge-py"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--added", type=int, default=10_000)
    parser.add_argument("--search-rate", type=float, default=20.0, help="searches/s in the build")
    parser.add_argument("--quick", action="store_true", help="20k + 2k vectors (CI smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/speed"))
    args = parser.parse_args()
    if args.quick:
        args.vectors, args.added = 20_000, 2_000
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imgsearch-live-") as data:
        result = run(args.vectors, args.added, Path(data), args.search_rate, quick=args.quick)
    env = environment()
    (args.out / "live.json").write_text(json.dumps({"environment": env, **result}, indent=1))
    (args.out / "live.md").write_text(report(result, env))
    plot(result, args.out / "live.png")
    print((args.out / "live.md").read_text())


if __name__ == "__main__":
    main()
