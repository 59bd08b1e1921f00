"""Search latency through gRPC, service memory and store scale, at a given number of images.

Each size runs in a fresh process (so its memory is its own): the store is filled with the
real descriptors of the query photos plus synthetic ones drawn from a model of real
descriptors (bench/speed/vectors.py), through the production VectorStore.upsert (embedded
Qdrant, local mode) or through the qdrant-edge prototype (bench/speed/edge.py), with the same
points per image as the production indexer writes. Then the production Application serves
it (searcher only, 127.0.0.1:0) and real degraded query photos are sent over gRPC.
"""

from __future__ import annotations

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

from bench.speed import compat
from bench.speed.common import JSON, latency_summary, loadavg, memory, write_partial
from bench.speed.edge import EdgeStore, region_id
from bench.speed.vectors import DescriptorModel, ExactTopK

F32 = NDArray[np.float32]
MODEL_NAME = "efficientnet-lite0"
DIMENSIONS = 1280
_CHUNK_POINTS = 4096
_REGION_SHARE = 0.6  # region rows = this much of their image's whole vector + fresh noise


@dataclass(frozen=True)
class Inputs:
    """What the parent computed with the production encoder, shared through files."""

    photo_paths: list[str]
    photo_rows: F32  # [P, R, C]
    photo_sha256: list[str]
    query_files: list[Path]
    query_sources: list[str]  # path of the photo each query was made from
    query_vectors: F32  # [nQ, Q, C] what the searcher embeds each query into
    model: DescriptorModel

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / "inputs.npz",
            photo_rows=self.photo_rows,
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


def _open_store(engine: str, data_dir: Path, *, quantized: bool) -> Any:  # noqa: ANN401
    if engine == "edge":
        return EdgeStore(data_dir / "edge", DIMENSIONS, MODEL_NAME, quantized=quantized)
    from imgsearch.store import VectorStore

    return VectorStore.open(
        path=data_dir / "qdrant", collection="images", dimensions=DIMENSIONS, model=MODEL_NAME
    )


def _fill(store: Any, inputs: Inputs, images: int, gt: ExactTopK | None) -> JSON:  # noqa: ANN401
    """Real photos first, then synthetic images, through the store's production upsert."""
    from imgsearch.store import FileState

    points = compat.POINTS_PER_IMAGE
    start = time.perf_counter()
    photos = len(inputs.photo_paths)
    for first in range(0, photos, 16):
        items = [
            compat.item(
                FileState(inputs.photo_paths[i], 1000, 0, inputs.photo_sha256[i]),
                inputs.photo_rows[i],
            )
            for i in range(first, min(photos, first + 16))
        ]
        store.upsert(items)
    if gt is not None:
        gt.add(inputs.photo_rows.reshape(-1, DIMENSIONS), 0)
    synthetic = max(0, images - photos)
    per_chunk = max(1, _CHUNK_POINTS // points)
    for chunk, first in enumerate(range(0, synthetic, per_chunk)):
        count = min(per_chunk, synthetic - first)
        rows = synthetic_rows(inputs.model, count, points, seed=chunk, total=synthetic)
        for sub in range(0, count, 64):  # upsert calls of 64 images
            last = min(count, sub + 64)
            if isinstance(store, EdgeStore):  # bulk load: same ids, path/folders/region only
                store.upsert_bulk(
                    [_synthetic_path(first + i) for i in range(sub, last)], rows[sub:last]
                )
                continue
            items = [
                compat.item(
                    FileState(_synthetic_path(first + i), 1000, 0, f"{first + i:064x}"), rows[i]
                )
                for i in range(sub, last)
            ]
            store.upsert(items)  # the production VectorStore.upsert
        if gt is not None:
            gt.add(rows.reshape(-1, DIMENSIONS), (photos + first) * points)
    return {"fill_s": time.perf_counter() - start, "points": images * points}


def _point_id(inputs: Inputs, row: int) -> str:
    """Production point id of global row `row` (photos first, then synthetic images)."""
    points = compat.POINTS_PER_IMAGE
    image, region = divmod(row, points)
    photos = len(inputs.photo_paths)
    path = inputs.photo_paths[image] if image < photos else _synthetic_path(image - photos)
    return region_id(path, region)


def _stage_means() -> dict[str, tuple[float, float]]:
    from prometheus_client import REGISTRY

    out = {}
    for stage in ("decode", "embed", "ann"):
        total = REGISTRY.get_sample_value("imgsearch_search_stage_seconds_sum", {"stage": stage})
        count = REGISTRY.get_sample_value("imgsearch_search_stage_seconds_count", {"stage": stage})
        out[stage] = (total or 0.0, count or 0.0)
    return out


def _grpc_phase(port: int, queries: list[bytes], sources: list[str], clients: int, n: int) -> JSON:
    """`n` searches spread over `clients` concurrent clients (threads, one channel each)."""
    from imgsearch.client import Client

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
    return {
        "clients": clients,
        **latency_summary(latencies),
        "throughput_qps": len(latencies) / wall,
        "stage_mean_ms": stages,
        "rank1_source": correct / max(1, len(latencies)),
    }


def _ann_phase(
    store: Any,  # noqa: ANN401
    inputs: Inputs,
    gt_ids: list[list[str]] | None,
    n: int,
    hnsw_ef: int | None = None,
) -> JSON:
    """Store search alone (what the searcher's `ann` stage runs), and recall vs exact."""
    times = []
    for i in range(n):
        vectors = inputs.query_vectors[i % len(inputs.query_vectors)]
        start = time.perf_counter()
        if hnsw_ef is None:
            store.search(compat.store_query(vectors), 10)
        else:
            store.search(compat.store_query(vectors), 10, hnsw_ef=hnsw_ef)
        times.append(time.perf_counter() - start)
    out: JSON = {"hnsw_ef": hnsw_ef, **latency_summary(times)}
    if gt_ids is not None and isinstance(store, EdgeStore):
        recall10, recall1 = [], []
        for i, exact in enumerate(gt_ids):
            found = store.search_ids(inputs.query_vectors[i][0], 10, hnsw_ef=hnsw_ef)
            recall10.append(len(set(found) & set(exact)) / len(exact))
            recall1.append(float(bool(found) and found[0] == exact[0]))
        out["recall_at_10"] = statistics.fmean(recall10)
        out["recall_at_1"] = statistics.fmean(recall1)
        out["recall_queries"] = len(gt_ids)
    return out


def _index_cost(store: Any, inputs: Inputs, images: int) -> JSON:  # noqa: ANN401
    """What indexing one more batch costs at this size: dedupe lookups and an upsert."""
    from imgsearch.store import FileState

    lookup = getattr(store, "descriptors_with_sha256", None) or getattr(
        store, "vector_with_sha256", None
    )
    if isinstance(store, EdgeStore):
        lookup = store.path_with_sha256
    lookup_s = []
    for i in range(3):
        start = time.perf_counter()
        assert lookup is not None
        lookup(f"{10**12 + i:064x}")  # content not in the index: the common case
        lookup_s.append(time.perf_counter() - start)
    rows = synthetic_rows(inputs.model, 16, compat.POINTS_PER_IMAGE, seed=10**6, total=images)
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


def _serve(store: Any, data_dir: Path) -> Any:  # noqa: ANN401 - Application, imported late
    """The production Application (searcher only) serving this very, already open store."""
    import imgsearch.app
    from imgsearch.settings import Settings

    original_open = imgsearch.app.open_store
    imgsearch.app.open_store = lambda *_a, **_k: store
    try:
        settings = Settings(
            data_dir=data_dir, listen="127.0.0.1:0", metrics_listen=None, log_level="WARNING"
        )
        app = imgsearch.app.Application(settings, with_embedder=False, with_searcher=True)
        app.start()
    finally:
        imgsearch.app.open_store = original_open
    return app


def measure_size(config: JSON) -> JSON:
    """Fill a store to config['images'], serve it, measure; see the module docstring."""
    engine: str = config["engine"]
    images: int = config["images"]
    data_dir = Path(config["data_dir"])
    inputs = Inputs.load(Path(config["inputs"]))
    result: JSON = {
        "engine": engine,
        "images": images,
        "points": images * compat.POINTS_PER_IMAGE,
        "load_start": loadavg(),
        "memory_start": memory(),
    }
    store = _open_store(engine, data_dir, quantized=config.get("quantized", True))
    gt = None
    if config.get("ground_truth"):
        gt = ExactTopK(inputs.query_vectors[: config["recall_queries"], 0].copy(), 10)
    result.update(_fill(store, inputs, images, gt))
    result["memory_filled"] = memory()
    gt_ids = None
    if gt is not None:
        ids, _ = gt.result()
        gt_ids = [[_point_id(inputs, int(r)) for r in row] for row in ids]
    write_partial(config, result)

    app = _serve(store, data_dir)
    try:
        queries = [p.read_bytes() for p in inputs.query_files]
        sources = inputs.query_sources
        warm = _grpc_phase(app.port, queries[:2], sources[:2], 1, 2)
        # As many queries per phase as fit the phase budget (slow engines get fewer).
        per_query = max(1e-3, warm["mean_ms"] / 1e3)
        n = max(4, min(config["queries"], int(config.get("phase_budget_s", 40) / per_query)))
        result["queries_per_phase"] = n
        config = {**config, "queries": n}
        result["grpc_1_client"] = _grpc_phase(app.port, queries, sources, 1, n)
        write_partial(config, result)
        result["grpc_4_clients"] = _grpc_phase(app.port, queries, sources, 4, n)
        result["memory_served"] = memory()
        write_partial(config, result)
        result["ann"] = _ann_phase(store, inputs, gt_ids, n)
        result["index_cost"] = _index_cost(store, inputs, images)
        write_partial(config, result)
        if config.get("hnsw"):
            result["hnsw"] = _hnsw_phase(config, result, store, inputs, gt_ids, app.port)
    finally:
        app.stop()  # closes the store
    result["load_end"] = loadavg()
    return result


def _hnsw_phase(
    config: JSON,
    result: JSON,
    store: EdgeStore,
    inputs: Inputs,
    gt_ids: list[list[str]] | None,
    port: int,
) -> JSON:
    out: JSON = {"started": time.time()}
    result["hnsw"] = out
    write_partial(config, result)
    start = time.perf_counter()
    store.build_index()
    out["build_s"] = time.perf_counter() - start
    out["indexed_vectors"] = store.indexed_vectors()
    out["memory"] = memory()
    n = config["queries"]
    out["ann"] = _ann_phase(store, inputs, gt_ids, n)
    out["ann_ef256"] = _ann_phase(store, inputs, gt_ids, n, hnsw_ef=256)
    queries = [p.read_bytes() for p in inputs.query_files]
    out["grpc_1_client"] = _grpc_phase(port, queries, inputs.query_sources, 1, n)
    return out


def measure_restart(config: JSON) -> JSON:
    """Open an existing store in a fresh process (a service restart): time and memory."""
    engine: str = config["engine"]
    inputs = Inputs.load(Path(config["inputs"]))
    before = memory()
    start = time.perf_counter()
    store = _open_store(engine, Path(config["data_dir"]), quantized=config.get("quantized", True))
    opened = time.perf_counter() - start
    after_open = memory()
    times = []
    for i in range(5):
        start = time.perf_counter()
        store.search(compat.store_query(inputs.query_vectors[i % len(inputs.query_vectors)]), 10)
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
