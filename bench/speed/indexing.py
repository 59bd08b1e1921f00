"""Indexing throughput: the production path split by stage, its limit, and alternatives.

Production (imgsearch defaults): the indexer reads and hashes each file, `embed_workers` (2)
threads decode and describe one image at a time with one onnxruntime thread each, regions
off (one whole-image vector), and each batch of 16 is upserted into the qdrant-edge store.

Every alternative runs on the same images, interleaved round by round with the others (A, B,
C, A, B, C, ...), so a burst of load from other work on the machine hits them all alike; the
ratios are the result, the absolute rates depend on the load (recorded with them).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from bench.speed import compat
from bench.speed.common import JSON, Stopwatch, log
from bench.speed.models import Encoders, ModelClock, canvas_groups
from imgsearch.app import Application
from imgsearch.model import DecodedImage, ImageEncoder
from imgsearch.model.preprocess import DecodeLimits, decode_image
from imgsearch.settings import ModelSettings, Settings, StoreEngine, WatchMode
from imgsearch.store import FileState, StoreLocation, open_store

F32 = NDArray[np.float32]
# Model configs: precision, input side, onnxruntime threads, batch. The indexer's workers run
# 1 thread each on one image at a time; the 2-thread batch-16 config is the old sequential one.
PRODUCTION = ("fp32", compat.PRODUCTION_SIDE, 1, 1)
SEQUENTIAL = ("fp32", compat.PRODUCTION_SIDE, compat.PRODUCTION_THREADS, 16)
STAGES = ("read_hash", "decode", "preprocess", "model", "upsert")


class Store(Protocol):
    def upsert(self, items: Sequence[tuple[FileState, Any]], /) -> None: ...

    def close(self) -> None: ...


@dataclass
class Run:
    """Stage totals (seconds) and wall time of one pipeline over some images."""

    images: int = 0
    wall: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    def add(self, images: int, wall: float, stages: dict[str, float]) -> None:
        self.images += images
        self.wall += wall
        for name, seconds in stages.items():
            self.stages[name] = self.stages.get(name, 0.0) + seconds

    def summary(self) -> JSON:
        return {
            "images": self.images,
            "rate": self.images / self.wall if self.wall else 0.0,
            "wall_s": self.wall,
            # Per-image stage times; with parallel workers they add up to more than the wall.
            "stages_ms": {k: 1e3 * v / max(1, self.images) for k, v in self.stages.items()},
        }


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _read(path: Path) -> tuple[bytes, FileState]:
    data = path.read_bytes()
    info = path.stat()
    state = FileState(path.name, info.st_size, info.st_mtime_ns, hashlib.sha256(data).hexdigest())
    return data, state


# ---- pipelines ---------------------------------------------------------------------------


def sequential(
    files: Sequence[Path],
    encoders: Encoders,
    config: tuple[str, int, int, int],
    store: Store | None,
    regions: bool = compat.PRODUCTION_REGIONS,
) -> tuple[Run, list[Any]]:
    """The old indexer: per batch read + hash, decode, encode, upsert, one after another."""
    precision, side, threads, batch = config
    encoder, clock = encoders.get(precision, threads)
    encoder.max_batch = batch
    limits = encoder.limits
    watch = Stopwatch()
    vectors: list[Any] = []
    start = time.perf_counter()
    for chunk in _batches(files, batch):
        with watch.time("read_hash"):
            loaded = [_read(p) for p in chunk]
        with watch.time("decode"):
            images = [decode_image(data, side, limits) for data, _ in loaded]
        before = clock.seconds
        with watch.time("encode"):
            out = compat.describe(encoder, images, regions=regions)
        watch.totals["model"] = watch.totals.get("model", 0.0) + clock.seconds - before
        if store is not None:
            with watch.time("upsert"):
                store.upsert([(state, out[i]) for i, (_, state) in enumerate(loaded)])
        vectors.extend(out)
    wall = time.perf_counter() - start
    stages = dict(watch.totals)
    stages["preprocess"] = stages.pop("encode") - stages["model"]
    run = Run()
    run.add(len(files), wall, stages)
    return run, vectors


_WORKER: tuple[ImageEncoder, int, bool] | None = None
_WORKER_LOCAL = threading.local()


def _init_process(model: str, side: int, threads: int, regions: bool) -> None:
    global _WORKER  # noqa: PLW0603 - one encoder per worker process
    _WORKER = (
        ImageEncoder(ModelSettings(model=str(model), image_size=side), threads=threads),
        side,
        regions,
    )


def _embed_chunk(
    paths: Sequence[Path], encoder: ImageEncoder, side: int, regions: bool
) -> tuple[list[FileState], list[Any], dict[str, float]]:
    watch = Stopwatch()
    with watch.time("read_hash"):
        loaded = [_read(p) for p in paths]
    with watch.time("decode"):
        images = [decode_image(data, side, encoder.limits) for data, _ in loaded]
    with watch.time("encode"):
        vectors = compat.describe(encoder, images, regions=regions)
    return [state for _, state in loaded], vectors, watch.totals


def _process_task(paths: list[Path]) -> tuple[list[FileState], list[Any], dict[str, float]]:
    assert _WORKER is not None, "worker not initialised"
    return _embed_chunk(paths, *_WORKER)


class WorkerPool:
    """Workers (threads or processes, onnxruntime 1 thread each) that embed for one thread
    that upserts: whole batches per task, or (`run_per_image`, production) one image per task
    after the calling thread has read and hashed it, as the service's Indexer does."""

    def __init__(
        self,
        kind: str,
        model: Path,
        side: int,
        workers: int = compat.PRODUCTION_WORKERS,
        regions: bool = compat.PRODUCTION_REGIONS,
    ) -> None:
        self.kind = kind
        self.side = side
        self.regions = regions
        self.workers = workers
        self._executor: ProcessPoolExecutor | ThreadPoolExecutor
        if kind == "processes":
            self._executor = ProcessPoolExecutor(
                workers,
                mp_context=get_context("spawn"),
                initializer=_init_process,
                initargs=(str(model), side, 1, regions),
            )
        else:
            self._model = model
            self._executor = ThreadPoolExecutor(workers)

    def _thread_encoder(self) -> tuple[ImageEncoder, ModelClock]:
        key = (self._model, self.side)
        made: dict[tuple[Path, int], tuple[ImageEncoder, ModelClock]] = getattr(
            _WORKER_LOCAL, "encoders", {}
        )
        _WORKER_LOCAL.encoders = made
        if key not in made:
            encoder = ImageEncoder(
                ModelSettings(model=str(self._model), image_size=self.side), threads=1
            )
            made[key] = (encoder, ModelClock(encoder))
        return made[key]

    def _thread_task(
        self, paths: list[Path]
    ) -> tuple[list[FileState], list[Any], dict[str, float]]:
        return _embed_chunk(paths, self._thread_encoder()[0], self.side, self.regions)

    def _describe_one(self, data: bytes) -> tuple[Any, dict[str, float]]:
        """The indexer's embedding-thread task: decode one file, describe it."""
        encoder, clock = self._thread_encoder()
        start = time.perf_counter()
        image = decode_image(data, self.side, encoder.limits)
        decoded = time.perf_counter()
        before = clock.seconds
        (descriptors,) = compat.describe(encoder, [image], regions=self.regions)
        model = clock.seconds - before
        encode = time.perf_counter() - decoded
        return descriptors, {
            "decode": decoded - start,
            "model": model,
            "preprocess": encode - model,
        }

    def run_per_image(
        self, files: Sequence[Path], batch: int, store: Store | None
    ) -> tuple[Run, list[Any]]:
        """Production: per batch, read + hash here, embed each file in a worker thread,
        then upsert the batch here."""
        assert self.kind == "threads"
        start = time.perf_counter()
        stages: dict[str, float] = {}
        vectors: list[Any] = []

        def add(name: str, seconds: float) -> None:
            stages[name] = stages.get(name, 0.0) + seconds

        for chunk in _batches(files, batch):
            t = time.perf_counter()
            loaded = [_read(p) for p in chunk]
            add("read_hash", time.perf_counter() - t)
            futures = [self._executor.submit(self._describe_one, data) for data, _ in loaded]
            out = []
            for future in futures:
                descriptors, times = future.result()
                out.append(descriptors)
                for name, seconds in times.items():
                    add(name, seconds)
            if store is not None:
                t = time.perf_counter()
                store.upsert([(state, d) for (_, state), d in zip(loaded, out, strict=True)])
                add("upsert", time.perf_counter() - t)
            vectors.extend(out)
        run = Run()
        run.add(len(files), time.perf_counter() - start, stages)
        return run, vectors

    def submit(
        self, paths: list[Path]
    ) -> Future[tuple[list[FileState], list[Any], dict[str, float]]]:
        if self.kind == "processes":
            return self._executor.submit(_process_task, paths)
        return self._executor.submit(self._thread_task, paths)

    def run(self, files: Sequence[Path], batch: int, store: Store | None) -> tuple[Run, list[Any]]:
        """Embed in the workers; this thread upserts each batch as soon as it is ready."""
        start = time.perf_counter()
        futures = [self.submit(list(chunk)) for chunk in _batches(files, batch)]
        stages: dict[str, float] = {}
        vectors: list[Any] = []
        for future in futures:
            states, out, times = future.result()
            for name, seconds in times.items():
                stages[name] = stages.get(name, 0.0) + seconds
            if store is not None:
                t = time.perf_counter()
                store.upsert(list(zip(states, out, strict=True)))
                stages["upsert"] = stages.get("upsert", 0.0) + time.perf_counter() - t
            vectors.extend(out)
        run = Run()
        run.add(len(files), time.perf_counter() - start, stages)
        return run, vectors

    def limit(self, datas: Sequence[bytes]) -> JSON:
        """Production's own limit: decode alone in `workers` threads, then describe alone
        (one image per call, 1 onnxruntime thread each) in the pool's threads."""
        assert self.kind == "threads"
        limits = DecodeLimits()
        with ThreadPoolExecutor(self.workers) as executor:
            start = time.perf_counter()
            decoded = list(executor.map(lambda d: decode_image(d, self.side, limits), datas))
            decode_s = time.perf_counter() - start

        def describe(image: DecodedImage) -> None:
            compat.describe(self._thread_encoder()[0], [image], regions=self.regions)

        start = time.perf_counter()
        list(self._executor.map(describe, decoded))
        encode_s = time.perf_counter() - start
        return {
            "decode_ms": 1e3 * decode_s / len(datas),  # wall per image, workers in parallel
            "encode_ms": 1e3 * encode_s / len(datas),
            "rate": len(datas) / (decode_s + encode_s),
        }

    def warm_up(self, files: Sequence[Path], batch: int) -> None:
        for future in [self.submit(list(files[:batch])) for _ in range(2)]:
            future.result()
        if self.kind == "threads":
            self.run_per_image(files[:4], 4, None)

    def close(self) -> None:
        self._executor.shutdown()


def _interleaved(
    pipelines: dict[str, Callable[[Sequence[Path]], Run]], files: Sequence[Path], rounds: int
) -> dict[str, Run]:
    """Each pipeline on the same images, round-robin over `rounds` slices of them."""
    totals = {name: Run() for name in pipelines}
    for r in range(rounds):
        part = files[r::rounds]
        for name, pipeline in pipelines.items():
            run = pipeline(part)
            totals[name].add(run.images, run.wall, run.stages)
    return totals


# ---- decode candidates ----------------------------------------------------------------------


def decode_with_draft(data: bytes, side: int, draft_factor: float | None) -> NDArray[np.uint8]:
    """The service's decode, with the JPEG DCT draft request scaled by `draft_factor`.

    1.0 reproduces production (the smallest DCT scale that still gives >= `side` px on the
    longer side); None decodes at full size; 2.0 keeps twice the pixels for the resize;
    0.5 allows one DCT step more and then upsamples.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        scale = side / max(width, height)
        if image.format == "JPEG" and draft_factor is not None and scale * draft_factor < 1:
            wanted = scale * draft_factor
            image.draft("RGB", (math.ceil(width * wanted), math.ceil(height * wanted)))
        image.load()
        upright = ImageOps.exif_transpose(image).convert("RGB")
        ratio = side / max(upright.size)
        new_size = (max(1, round(upright.width * ratio)), max(1, round(upright.height * ratio)))
        resized = upright.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(resized, dtype=np.uint8)


DRAFTS: dict[str, float | None] = {
    "no draft (full decode)": None,
    "draft >= 2x side": 2.0,
    "draft >= side (production)": 1.0,
    "draft >= side/2, upsample": 0.5,
}


def decode_candidates(datas: list[bytes], encoders: Encoders, side: int, rounds: int) -> list[JSON]:
    encoder, _ = encoders.get("fp32", 2)
    # The replica must match the production decode exactly before its variants mean anything.
    replica_ok = all(
        np.array_equal(
            decode_with_draft(d, side, 1.0), decode_image(d, side, encoder.limits).pixels
        )
        for d in datas[:8]
    )
    times: dict[str, list[float]] = {name: [] for name in DRAFTS}
    pixels: dict[str, list[NDArray[np.uint8]]] = {name: [] for name in DRAFTS}
    for r in range(rounds):
        part = datas[r::rounds]
        for name, factor in DRAFTS.items():
            start = time.perf_counter()
            out = [decode_with_draft(d, side, factor) for d in part]
            times[name].append((time.perf_counter() - start) / max(1, len(part)))
            if r == 0:
                pixels[name] = out
    reference = _embed_pixels(encoder, pixels["no draft (full decode)"])
    results = []
    for name in DRAFTS:
        vectors = _embed_pixels(encoder, pixels[name])
        cosines = np.sum(vectors * reference, axis=1)
        results.append(
            {
                "name": name,
                "decode_ms": 1e3 * statistics.median(times[name]),
                "cosine_vs_full_mean": float(cosines.mean()),
                "cosine_vs_full_min": float(cosines.min()),
                "replica_matches_production": replica_ok,
            }
        )
    return results


def _embed_pixels(encoder: ImageEncoder, pixels: list[NDArray[np.uint8]]) -> F32:
    images = [DecodedImage(p, p.shape[1], p.shape[0], "JPEG") for p in pixels]
    return encoder.encode(images)


# ---- model candidates -----------------------------------------------------------------------


def model_candidates(
    datas: list[bytes], encoders: Encoders, configs: list[tuple[str, int, int, int]], rounds: int
) -> list[JSON]:
    """Model time per image (onnxruntime only, and with batch assembly + pooling)."""
    sides = sorted({c[1] for c in configs})
    limits = DecodeLimits()
    decoded = {s: [decode_image(d, s, limits) for d in datas] for s in sides}
    for precision, _, threads, _ in configs:  # load and warm every session first
        encoders.get(precision, threads)[0].encode(decoded[sides[0]][:1])
    model_s: dict[tuple[str, int, int, int], list[float]] = {c: [] for c in configs}
    encode_s: dict[tuple[str, int, int, int], list[float]] = {c: [] for c in configs}
    for r in range(rounds):
        for config in configs:
            precision, side, threads, batch = config
            images = decoded[side][r::rounds]
            encoder, clock = encoders.get(precision, threads)
            encoder.max_batch = batch
            before = clock.seconds
            start = time.perf_counter()
            compat.describe(encoder, images)
            encode_s[config].append((time.perf_counter() - start) / len(images))
            model_s[config].append((clock.seconds - before) / len(images))
    groups = {s: canvas_groups(decoded[s]) for s in sides}
    return [
        {
            "precision": c[0],
            "side": c[1],
            "threads": c[2],
            "batch": c[3],
            "model_ms": 1e3 * statistics.median(model_s[c]),
            "encode_ms": 1e3 * statistics.median(encode_s[c]),
            "canvas_sizes": groups[c[1]],
        }
        for c in configs
    ]


# ---- the sections -----------------------------------------------------------------------------


def bench_store(folder: Path, engine: str = compat.PRODUCTION_ENGINE, *, regions: bool) -> Store:
    return open_store(
        StoreLocation(path=folder, engine=StoreEngine(engine)),
        grouped=regions,
        collection="images",
        dimensions=1280,
        model="efficientnet-lite0",
    )


def indexer_end_to_end(
    files: Sequence[Path],
    workdir: Path,
    model: str = compat.SPEED_MODEL,
    beside: Callable[[Application], AbstractContextManager[JSON]] | None = None,
) -> JSON:
    """The real service (Application, both services, default settings but `model`) indexing
    a folder; `cpu_s` is the process's CPU time while it indexed (all threads). `beside`:
    entered once the indexer is ready, left when the last image is stored, the JSON it
    filled returned as `beside`, and entered again on the idle service (`beside_idle`)."""
    folder = workdir / "indexer-folder"
    folder.mkdir()
    for path in files:
        try:
            (folder / path.name).hardlink_to(path)
        except OSError:
            shutil.copy2(path, folder / path.name)
    settings = Settings(
        folder=folder,
        data_dir=workdir / "indexer-data",
        listen="127.0.0.1:0",
        metrics_listen=None,
        http_listen=None,
        settle_seconds=0.0,
        rescan_interval=0,
        watch_mode=WatchMode.POLLING,
        model=model,
    )
    app = Application(settings)
    start = time.perf_counter()
    app.start()
    try:
        assert app.indexer is not None
        app.indexer.wait_ready(60)
        with beside(app) if beside is not None else nullcontext({}) as during:
            ready, cpu_before = time.perf_counter(), _cpu_seconds()
            deadline = ready + 60 + 2.0 * len(files)
            while time.perf_counter() < deadline:
                status = app.indexer.status()
                if status.indexed + status.failed >= len(files) and status.pending == 0:
                    break
                time.sleep(0.02)
            done, cpu_after = time.perf_counter(), _cpu_seconds()
        status = app.indexer.status()
        if beside is not None:
            with beside(app) as idle:
                time.sleep(done - ready)
    finally:
        app.stop()
    extra = {} if beside is None else {"beside": during, "beside_idle": idle}
    return {
        **extra,
        "images": status.indexed,
        "failed": status.failed,
        "seconds": done - ready,
        "startup_s": ready - start,
        "cpu_s": cpu_after - cpu_before,
        "model": app.encoder.name,
        "rate": status.indexed / (done - ready) if done > ready else 0.0,
        "settings": {
            "engine": settings.store.engine.value,
            "embed_workers": settings.index.embed_workers,
            "regions": settings.index.regions,
        },
    }


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def run(files: list[Path], workdir: Path, encoders: Encoders, *, rounds: int, quick: bool) -> JSON:
    """All indexing measurements; returns the JSON section of the results."""
    out: JSON = {"images": len(files)}
    sizes = []
    for path in files:
        with Image.open(path) as image:
            sizes.append(image.width * image.height)
    out["megapixels_mean"] = statistics.fmean(sizes) / 1e6
    out["megapixels_range"] = [min(sizes) / 1e6, max(sizes) / 1e6]
    out["bytes_mean"] = statistics.fmean(p.stat().st_size for p in files)
    datas = [p.read_bytes() for p in files]
    side = compat.PRODUCTION_SIDE
    encoders.get("fp32", 2)[0].encode([decode_image(datas[0], side, DecodeLimits())])  # warm

    # 1. Production path (2 embedding threads, edge store, regions off) and the service's own
    #    indexer end to end.
    log(f"indexing: production path on {len(files)} images")
    pool = WorkerPool("threads", encoders.files["fp32"], side)
    pool.warm_up(files, 16)
    store = bench_store(workdir / "prod-store", regions=compat.PRODUCTION_REGIONS)
    production, _ = pool.run_per_image(files, 16, store)
    store.close()
    log("indexing: limit (decode alone, then embed alone, in the same 2 worker threads)")
    parallel_limit = pool.limit(datas)
    pool.close()
    out["production"] = production.summary()
    out["production"]["config"] = {
        "precision": "fp32",
        "side": side,
        "embed_workers": compat.PRODUCTION_WORKERS,
        "threads_per_worker": 1,
        "engine": compat.PRODUCTION_ENGINE,
        "regions": compat.PRODUCTION_REGIONS,
    }
    log("indexing: the service's Indexer end to end")
    out["indexer_e2e"] = indexer_end_to_end(files, workdir)

    # 2. The limits: production's (above), and decode alone + the model alone in one thread
    #    with 2 onnxruntime threads, batch 16 (the old indexer's), on the same images.
    encoder, clock = encoders.get("fp32", 2)
    start = time.perf_counter()
    decoded = [decode_image(d, side, encoder.limits) for d in datas]
    decode_s = time.perf_counter() - start
    before = clock.seconds
    start = time.perf_counter()
    encoder.max_batch = 16
    compat.describe(encoder, decoded)
    model_s = clock.seconds - before
    encode_s = time.perf_counter() - start
    out["limit"] = {
        **parallel_limit,
        "production_fraction": out["production"]["rate"] / parallel_limit["rate"],
    }
    out["limit_sequential"] = {
        "decode_ms": 1e3 * decode_s / len(files),
        "model_ms": 1e3 * model_s / len(files),
        "encode_ms": 1e3 * encode_s / len(files),
        "rate": len(files) / (decode_s + model_s),
    }
    del decoded

    # 3. Candidates, stage by stage.
    log("indexing: decode candidates (JPEG draft scale)")
    subset = datas[: (8 if quick else 64)]
    out["decode_candidates"] = decode_candidates(subset, encoders, side, rounds)
    log("indexing: model candidates (precision, input side, threads, batch)")
    out["model_candidates"] = model_candidates(
        datas[: (8 if quick else 48)], encoders, _model_configs(encoders, quick), rounds
    )

    # 4. Whole pipelines (read + hash + decode + encode + upsert), interleaved.
    log("indexing: pipelines (production vs stores, regions, workers, models)")
    out["pipelines"] = _pipelines(files, workdir, encoders, rounds, quick)
    return out


def _model_configs(encoders: Encoders, quick: bool) -> list[tuple[str, int, int, int]]:
    precisions = list(encoders.files)
    if quick:
        return [PRODUCTION, SEQUENTIAL, ("fp32", 224, 1, 1)]
    configs: list[tuple[str, int, int, int]] = [PRODUCTION, SEQUENTIAL, ("fp32", 384, 1, 16)]
    configs += [("fp32", side, 1, 1) for side in (320, 256, 224)]
    if "int8" in precisions:
        configs += [("int8", side, 1, 1) for side in (384, 256)]
    return configs


def _pipelines(
    files: list[Path], workdir: Path, encoders: Encoders, rounds: int, quick: bool
) -> list[JSON]:
    fast = ("int8" if "int8" in encoders.files else "fp32", 256)
    pools: dict[str, WorkerPool] = {}
    stores: dict[str, Store] = {}
    tmp = Path(tempfile.mkdtemp(dir=workdir))
    side = compat.PRODUCTION_SIDE

    def store(name: str, engine: str = "edge", regions: bool = False) -> Callable[[], Store]:
        def make() -> Store:
            if name not in stores:
                stores[name] = bench_store(tmp / name, engine, regions=regions)
            return stores[name]

        return make

    def pool(kind: str, precision: str, size: int, regions: bool) -> WorkerPool:
        key = f"{kind}-{precision}-{size}-{regions}"
        if key not in pools:
            pools[key] = WorkerPool(kind, encoders.files[precision], size, regions=regions)
            pools[key].warm_up(files, 16)
        return pools[key]

    def per_image(
        precision: str, size: int, target: Callable[[], Store] | None, regions: bool = False
    ) -> Callable[[Sequence[Path]], Run]:
        return lambda part: pool("threads", precision, size, regions).run_per_image(
            part, 16, target() if target else None
        )[0]

    def batched(
        kind: str, precision: str, size: int, target: Callable[[], Store] | None
    ) -> Callable[[Sequence[Path]], Run]:
        return lambda part: pool(kind, precision, size, False).run(
            part, 16, target() if target else None
        )[0]

    def seq(target: Callable[[], Store]) -> Callable[[Sequence[Path]], Run]:
        return lambda part: sequential(part, encoders, SEQUENTIAL, target())[0]

    candidates: dict[str, Callable[[Sequence[Path]], Run]] = {
        f"production: 2 threads x 1 image, fp32 {side}, edge store, regions off": per_image(
            "fp32", side, store("prod")
        ),
        "same, no store": per_image("fp32", side, None),
        "same, local-mode store (old engine)": per_image("fp32", side, store("local", "local")),
        "same, regions on (14 points/image)": per_image(
            "fp32", side, store("regions", regions=True), regions=True
        ),
        "old indexer: sequential, 2 threads, batch 16, edge store": seq(store("seq")),
        "2 processes x batch 16, fp32, edge store": batched(
            "processes", "fp32", side, store("processes")
        ),
        f"2 threads x 1 image, {fast[0]} {fast[1]}, edge store": per_image(*fast, store("fast")),
    }
    if quick:
        names = list(candidates)
        keep = [names[0], names[4]]
        candidates = {k: candidates[k] for k in keep}
    for name in candidates:  # warm sessions and pools outside the timed rounds
        candidates[name](files[:2])
    totals = _interleaved(candidates, files[2:] if len(files) > 6 else files, rounds)
    for p in pools.values():
        p.close()
    for s in stores.values():
        s.close()
    base = totals[next(iter(totals))].summary()["rate"]
    results = []
    for name, total in totals.items():
        summary = total.summary()
        summary["name"] = name
        summary["ratio_vs_production"] = summary["rate"] / base if base else 0.0
        results.append(summary)
    return results
