"""Search latency through gRPC, service memory and store scale, at a given number of images.

Each size runs in a fresh process (so its memory is its own): the store is opened with the
production `VectorStore.open` (qdrant-edge by default, qdrant-client local mode as the old
engine), filled through the production `VectorStore.upsert` with the real descriptors of the
query photos plus synthetic ones drawn from a model of real descriptors
(bench/speed/vectors.py), one point per image (production) or 14 with regional descriptors.
Then the production Application serves it (searcher only, 127.0.0.1:0, this very store) and
real degraded query photos are sent over gRPC. Store-only runs (`grpc: False`, the
1M-vector scale point) skip the service.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from bench.speed import compat
from bench.speed.common import JSON, latency_summary, loadavg, memory, write_partial
from bench.speed.vectors import DescriptorModel, ExactTopK
from imgsearch.ids import region_point_id

F32 = NDArray[np.float32]
MODEL_NAME = "efficientnet-lite0"
DIMENSIONS = 1280
COLLECTION = "images"
_CHUNK_POINTS = 8192
_GROUND_TRUTH = "gt_ids.json"  # exact top-10 ids of the recall queries, per store
_REGION_SHARE = 0.6  # region rows = this much of their image's whole vector + fresh noise


@dataclass(frozen=True)
class Inputs:
    """What the parent computed with the production encoder, shared through files."""

    photo_paths: list[str]
    photo_rows: F32  # [P, 1, C] production descriptors (whole image)
    photo_regions: F32  # [P, 14, C] with regional descriptors
    photo_sha256: list[str]
    query_files: list[Path]
    query_sources: list[str]  # path of the photo each query was made from
    query_vectors: F32  # [nQ, V, C] what the searcher embeds each query into
    model: DescriptorModel

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / "inputs.npz",
            photo_rows=self.photo_rows,
            photo_regions=self.photo_regions,
            query_vectors=self.query_vectors,
            mean=self.model.mean,
            components=self.model.components,
            scales=self.model.scales,
        )
        (folder / "inputs.json").write_text(
            json.dumps(
                {
                    "photo_paths": self.photo_paths,
                    "photo_sha256": self.photo_sha256,
                    "query_files": [str(p) for p in self.query_files],
                    "query_sources": self.query_sources,
                    "residual": self.model.residual,
                    "spread": self.model.spread,
                }
            )
        )

    @classmethod
    def load(cls, folder: Path) -> Inputs:
        arrays = np.load(folder / "inputs.npz")
        meta = json.loads((folder / "inputs.json").read_text())
        return cls(
            photo_paths=meta["photo_paths"],
            photo_rows=arrays["photo_rows"],
            photo_regions=arrays["photo_regions"],
            photo_sha256=meta["photo_sha256"],
            query_files=[Path(p) for p in meta["query_files"]],
            query_sources=meta["query_sources"],
            query_vectors=arrays["query_vectors"],
            model=DescriptorModel(
                arrays["mean"],
                arrays["components"],
                arrays["scales"],
                meta["residual"],
                meta.get("spread", 1.0),
            ),
        )

    def rows(self, regions: bool) -> F32:
        return self.photo_regions if regions else self.photo_rows


def synthetic_rows(model: DescriptorModel, images: int, points: int, seed: int, total: int) -> F32:
    """[images, R, C]: row 0 a whole-image vector, the others regions correlated with it."""
    whole = model.sample(images, seed, total)
    out = np.empty((images, points, whole.shape[1]), dtype=np.float32)
    out[:, 0] = whole
    if points > 1:
        fresh = model.sample(images * (points - 1), seed + 10**9, total)
        regions = _REGION_SHARE * whole[:, None, :] + (1 - _REGION_SHARE) * fresh.reshape(
            images, points - 1, -1
        )
        regions /= np.linalg.norm(regions, axis=2, keepdims=True)
        out[:, 1:] = regions
    return out


def _synthetic_path(index: int) -> str:
    return f"synthetic/{index // 1000:04d}/{index:07d}.jpg"


def bench_store(engine: str, data_dir: Path, *, regions: bool) -> Any:  # noqa: ANN401
    """The production store: VectorStore.open on an embedded engine (edge or local)."""
    from imgsearch.settings import StoreEngine
    from imgsearch.store import StoreLocation, open_store

    return open_store(
        StoreLocation(path=data_dir / "store", engine=StoreEngine(engine)),
        grouped=regions,
        collection=COLLECTION,
        dimensions=DIMENSIONS,
        model=MODEL_NAME,
    )


def _fill(store: Any, inputs: Inputs, images: int, regions: bool, gt: ExactTopK | None) -> JSON:  # noqa: ANN401
    """Real photos first, then synthetic images, through the production upsert."""
    from imgsearch.store import FileState

    points = compat.points_per_image(regions)
    photo_rows = inputs.rows(regions)
    start = time.perf_counter()
    photos = len(inputs.photo_paths)
    for first in range(0, photos, 16):
        items = [
            compat.item(
                FileState(inputs.photo_paths[i], 1000, 0, inputs.photo_sha256[i]), photo_rows[i]
            )
            for i in range(first, min(photos, first + 16))
        ]
        store.upsert(items)
    if gt is not None:
        gt.add(photo_rows.reshape(-1, DIMENSIONS), 0)
    synthetic = max(0, images - photos)
    per_chunk = max(1, _CHUNK_POINTS // points)
    per_call = max(1, 256 // points)  # upsert calls of ~256 points (the indexer: 16 images)
    generate = 0.0
    for chunk, first in enumerate(range(0, synthetic, per_chunk)):
        count = min(per_chunk, synthetic - first)
        t = time.perf_counter()
        rows = synthetic_rows(inputs.model, count, points, seed=chunk, total=synthetic)
        generate += time.perf_counter() - t
        for sub in range(0, count, per_call):
            last = min(count, sub + per_call)
            items = [
                compat.item(
                    FileState(_synthetic_path(first + i), 1000, 0, f"{first + i:064x}"), rows[i]
                )
                for i in range(sub, last)
            ]
            store.upsert(items)  # the production VectorStore.upsert
        if gt is not None:
            t = time.perf_counter()
            gt.add(rows.reshape(-1, DIMENSIONS), (photos + first) * points)
            generate += time.perf_counter() - t
    total = time.perf_counter() - start
    return {
        "fill_s": total,
        "fill_upsert_s": total - generate,  # without generating vectors / exact search
        "points": images * points,
        "points_per_image": points,
    }


def _point_id(inputs: Inputs, row: int, points: int) -> str:
    """Production point id of global row `row` (photos first, then synthetic images)."""
    image, region = divmod(row, points)
    photos = len(inputs.photo_paths)
    path = inputs.photo_paths[image] if image < photos else _synthetic_path(image - photos)
    return str(region_point_id(path, region))


def _stage_means() -> dict[str, tuple[float, float]]:
    from prometheus_client import REGISTRY

    out = {}
    for stage in ("decode", "embed", "ann", "rescore", "verify"):
        total = REGISTRY.get_sample_value("imgsearch_search_stage_seconds_sum", {"stage": stage})
        count = REGISTRY.get_sample_value("imgsearch_search_stage_seconds_count", {"stage": stage})
        out[stage] = (total or 0.0, count or 0.0)
    return out


def _grpc_phase(port: int, queries: list[bytes], sources: list[str], clients: int, n: int) -> JSON:
    """`n` searches spread over `clients` concurrent clients (threads, one channel each)."""
    from imgsearch.rpc.client import Client

    latencies: list[float] = []
    correct = 0
    lock = threading.Lock()

    def worker(offset: int) -> None:
        nonlocal correct
        with Client(f"127.0.0.1:{port}", timeout=120) as client:
            for i in range(offset, n, clients):
                q = i % len(queries)
                start = time.perf_counter()
                response = client.search(queries[q], limit=10)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    correct += bool(response.matches) and response.matches[0].path == sources[q]

    before = _stage_means()
    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = _stage_means()
    stages = {
        s: 1e3 * (after[s][0] - before[s][0]) / max(1.0, after[s][1] - before[s][1]) for s in after
    }
    sides = sorted(max(Image.open(io.BytesIO(q)).size) for q in queries)
    return {
        "clients": clients,
        **latency_summary(latencies),
        "throughput_qps": len(latencies) / wall,
        "stage_mean_ms": stages,
        # What the latency was measured on: how large the queries were, and how many of them
        # needed the geometric check (its cost is in stage_mean_ms["verify"] per checked query).
        "query_longer_side_px": {
            "min": sides[0],
            "median": sides[len(sides) // 2],
            "max": sides[-1],
        },
        "verified_share": (after["verify"][1] - before["verify"][1]) / max(1, len(latencies)),
        "rank1_source": correct / max(1, len(latencies)),
    }


def nearest_ids(store: Any, vector: F32, limit: int) -> list[str]:  # noqa: ANN401
    """Point ids of the nearest images by the production search (a store of one point per
    image), for recall checks against exact ids."""
    return [region_point_id(hit.path, 0) for hit in store.search(vector[None], limit)]


def _ann_phase(store: Any, inputs: Inputs, gt_ids: list[list[str]] | None, n: int) -> JSON:  # noqa: ANN401
    """Store search alone (what the searcher's `ann` stage runs), and recall vs exact."""
    times = []
    for i in range(n):
        vectors = compat.store_query(inputs.query_vectors[i % len(inputs.query_vectors)])
        start = time.perf_counter()
        store.search(vectors, 10)
        times.append(time.perf_counter() - start)
    out: JSON = latency_summary(times)
    if gt_ids is not None and store.engine_name == "qdrant-edge":
        out.update(_recall(store, inputs, gt_ids))
    return out


def _recall(store: Any, inputs: Inputs, gt_ids: list[list[str]]) -> JSON:  # noqa: ANN401
    recall10, recall1, times = [], [], []
    for i, exact in enumerate(gt_ids):
        start = time.perf_counter()
        found = nearest_ids(store, inputs.query_vectors[i][0], 10)
        times.append(time.perf_counter() - start)
        recall10.append(len(set(found) & set(exact)) / len(exact))
        recall1.append(float(bool(found) and found[0] == exact[0]))
    return {
        "recall_at_10": statistics.fmean(recall10),
        "recall_at_1": statistics.fmean(recall1),
        "recall_queries": len(gt_ids),
        "one_vector": latency_summary(times),  # one query vector, top-10 points
    }


def _index_cost(store: Any, inputs: Inputs, images: int, regions: bool) -> JSON:  # noqa: ANN401
    """What indexing one more batch costs at this size: dedupe lookups and an upsert."""
    from imgsearch.store import FileState

    lookup_s = []
    for i in range(3):
        start = time.perf_counter()
        store.descriptors_with_sha256(f"{10**12 + i:064x}")  # new content: the common case
        lookup_s.append(time.perf_counter() - start)
    points = compat.points_per_image(regions)
    rows = synthetic_rows(inputs.model, 16, points, seed=10**6, total=images)
    items = [
        compat.item(FileState(f"new/{i:03d}.jpg", 1000, 0, f"{2 * 10**12 + i:064x}"), rows[i])
        for i in range(16)
    ]
    start = time.perf_counter()
    store.upsert(items)
    upsert_s = time.perf_counter() - start
    return {
        "dedupe_lookup_ms": 1e3 * statistics.median(lookup_s),
        "upsert_ms_per_image": 1e3 * upsert_s / 16,
    }


def _serve(store: Any, data_dir: Path, regions: bool) -> Any:  # noqa: ANN401 - Application
    """The production Application (searcher only, default settings) serving this store."""
    from imgsearch.app import Application
    from imgsearch.settings import Settings

    settings = Settings(
        data_dir=data_dir,
        listen="127.0.0.1:0",
        metrics_listen=None,
        http_listen=None,
        log_level="WARNING",
        regions=regions,
        model=compat.SPEED_MODEL,
    )
    app = Application(settings, with_embedder=False, with_searcher=True, store=store)
    app.start()
    return app


def measure_size(config: JSON) -> JSON:
    """Fill a store to config['images'], serve it, measure; see the module docstring."""
    engine: str = config["engine"]
    images: int = config["images"]
    regions: bool = config.get("regions", False)
    points = compat.points_per_image(regions)
    data_dir = Path(config["data_dir"])
    inputs = Inputs.load(Path(config["inputs"]))
    result: JSON = {
        "engine": engine,
        "images": images,
        "regions": regions,
        "points": images * points,
        "load_start": loadavg(),
        "memory_start": memory(),
    }
    store = bench_store(engine, data_dir, regions=regions)
    gt = None
    if config.get("ground_truth"):
        gt = ExactTopK(inputs.query_vectors[: config["recall_queries"], 0].copy(), 10)
    result.update(_fill(store, inputs, images, regions, gt))
    result["memory_filled"] = memory()
    gt_ids = None
    if gt is not None:
        ids, _ = gt.result()
        gt_ids = [[_point_id(inputs, int(r), points) for r in row] for row in ids]
        (data_dir / _GROUND_TRUTH).write_text(json.dumps(gt_ids))  # for the graph runs
    write_partial(config, result)
    if not config.get("grpc", True):
        result["ann"] = _ann_phase(store, inputs, gt_ids, config["queries"])
        result["memory_served"] = memory()
        result["index_cost"] = _index_cost(store, inputs, images, regions)
        store.close()
        result["load_end"] = loadavg()
        return result

    app = _serve(store, data_dir, regions)
    try:
        result["whitening"] = _learn_whitening(app)
        queries = [p.read_bytes() for p in inputs.query_files]
        sources = inputs.query_sources
        warm = _grpc_phase(app.port, queries[:2], sources[:2], 1, 2)
        # As many queries per phase as fit the phase budget (slow engines get fewer).
        per_query = max(1e-3, warm["mean_ms"] / 1e3)
        n = max(4, min(config["queries"], int(config.get("phase_budget_s", 40) / per_query)))
        result["queries_per_phase"] = n
        result["grpc_1_client"] = _grpc_phase(app.port, queries, sources, 1, n)
        write_partial(config, result)
        result["grpc_4_clients"] = _grpc_phase(app.port, queries, sources, 4, 2 * n)
        result["memory_served"] = memory()
        write_partial(config, result)
        result["ann"] = _ann_phase(store, inputs, gt_ids, n)
        result["index_cost"] = _index_cost(store, inputs, images, regions)
        write_partial(config, result)
    finally:
        app.stop()  # closes the store
    result["load_end"] = loadavg()
    return result


def _ground_truth(data_dir: Path) -> list[list[str]] | None:
    """The exact top-10 point ids measure_size wrote for this store, if it computed them."""
    file = data_dir / _GROUND_TRUTH
    return json.loads(file.read_text()) if file.is_file() else None


def measure_hnsw(config: JSON) -> JSON:
    """`imgsearch optimize` on a closed store: the production `EdgeStore.build_graph()` in a
    process that serves nothing (optimize() holds the GIL), then searches through the
    production `search`. Writes partial results with "started", so the parent can stop a
    build that runs past its cap."""
    inputs = Inputs.load(Path(config["inputs"]))
    gt_ids = _ground_truth(Path(config["data_dir"]))
    out: JSON = {"started": time.time(), "images": config["images"]}
    write_partial(config, out)
    store = bench_store("edge", Path(config["data_dir"]), regions=False)
    try:
        start = time.perf_counter()
        # The smoke run's store is far below the production minimum segment size for a graph.
        minimum = config.get("graph_min_segment_kb")
        out["indexed_vectors"] = (
            store.build_graph(minimum) if minimum is not None else store.build_graph()
        )
        out["build_s"] = time.perf_counter() - start
        write_partial(config, out)
        out["memory"] = memory()
        out["ann"] = _ann_phase(store, inputs, gt_ids, config["queries"])
    finally:
        store.close()
    return out


def measure_after_graph(config: JSON) -> JSON:
    """A restarted service on the store `imgsearch optimize` left: the production searcher
    over gRPC (or the store alone for store-only sizes), its latency, recall and memory."""
    inputs = Inputs.load(Path(config["inputs"]))
    data_dir = Path(config["data_dir"])
    gt_ids = _ground_truth(data_dir)
    result: JSON = {"images": config["images"], "memory_start": memory()}
    store = bench_store("edge", data_dir, regions=False)
    result["graph_vectors"] = store.graph_vectors()
    if not config.get("grpc", True):
        try:
            result["ann"] = _ann_phase(store, inputs, gt_ids, config["queries"])
            result["memory_served"] = memory()
        finally:
            store.close()
        return result
    app = _serve(store, data_dir, False)
    try:
        result["whitening"] = _learn_whitening(app)
        queries = [p.read_bytes() for p in inputs.query_files]
        _grpc_phase(app.port, queries[:2], inputs.query_sources[:2], 1, 2)  # warm-up
        result["grpc_1_client"] = _grpc_phase(
            app.port, queries, inputs.query_sources, 1, config["queries"]
        )
        result["memory_served"] = memory()
        result["ann"] = _ann_phase(store, inputs, gt_ids, config["queries"])
    finally:
        app.stop()
    return result


def _learn_whitening(app: Any) -> JSON:  # noqa: ANN401 - Application
    """Learn the searcher's whitening before timing (it is learned in the background at
    start-up; a query meanwhile would be scored raw): from how many images, in how long."""
    start = time.perf_counter()
    whitening = app.whitening.refresh() if app.whitening is not None else None
    return {
        "images": whitening.images if whitening is not None else 0,
        "learn_s": time.perf_counter() - start,
    }


def measure_restart(config: JSON) -> JSON:
    """Open an existing store in a fresh process (a service restart): time and memory."""
    engine: str = config["engine"]
    inputs = Inputs.load(Path(config["inputs"]))
    before = memory()
    start = time.perf_counter()
    store = bench_store(engine, Path(config["data_dir"]), regions=config.get("regions", False))
    opened = time.perf_counter() - start
    after_open = memory()
    times = []
    for i in range(5):
        vectors = compat.store_query(inputs.query_vectors[i % len(inputs.query_vectors)])
        start = time.perf_counter()
        store.search(vectors, 10)
        times.append(time.perf_counter() - start)
    result = {
        "engine": engine,
        "images": config["images"],
        "open_s": opened,
        "memory_before": before,
        "memory_open": after_open,
        "memory_searched": memory(),
        "ann": latency_summary(times),
        "load": loadavg(),
        "pid": os.getpid(),
    }
    store.close()
    return result
