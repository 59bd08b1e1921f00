"""A bounded load test on loopback: concurrent Search calls plus a stream of new files (issue 7).

Starts a real `imgsearch serve` process, runs `clients` search threads and one writer that
lands a new photo every `file_interval` seconds (and deletes every fifth one again), samples
the server's RSS every second, and at the end checks that the index holds exactly the
folder's files. Everything stops by itself after `duration` seconds.

From half-time on, one more client sends a hostile mix beside the normal traffic (issue 15):
JPEG scan bombs, 16-bit PNGs at the pixel limit's scale, path queries on a FIFO, a link to
/dev/zero, a directory and a traversal, and 32 half-open calls held open all the time
(headers sent, message never; each one the server ends is opened again). The report gives
the normal searches' p99 before and during the mix, each hostile answer's status, and the
slowest one.

    python -m bench.load [--duration 180] [--clients 8] [--no-hostile] [--out bench/results/load]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from PIL import Image

from imgsearch.backbones import choose_model
from imgsearch.rpc.client import Client
from imgsearch.settings import BUNDLED_SAMPLES, Settings
from imgsearch.store import StoreLocation, collection_for, open_existing_store
from imgsearch.v1 import searcher_pb2
from tests.imaging import crop, encode, load, scan_bomb, variants
from tests.processes import free_port, start_serve


@dataclass
class LoadResult:
    duration_s: float
    clients: int
    searches: int
    errors: dict[str, int]
    qps: float
    p50_ms: float
    p99_ms: float
    files_added: int
    files_deleted: int
    final_files: int
    final_indexed: int
    final_points: int
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)
    qps_series: list[tuple[float, float]] = field(default_factory=list)
    hostile_from_s: float | None = None  # when the hostile mix started (None: no mix)
    p99_ms_calm: float = 0.0  # normal searches before the mix
    p99_ms_hostile: float = 0.0  # normal searches during the mix
    hostile_codes: dict[str, int] = field(default_factory=dict)
    hostile_max_ms: float = 0.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait_until_idle(address: str, *, state: str | None = None, timeout: float = 120) -> int:
    """Poll GetStatus until nothing is pending (and `state` is reached); returns `indexed`."""
    with Client(address, timeout=30) as probe:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = probe.status()
                if not status.pending and (state is None or status.state == state):
                    return int(status.indexed)
            except grpc.RpcError:
                pass  # not listening yet
            time.sleep(0.2)
    raise TimeoutError(f"server at {address} did not settle in {timeout}s")


class _Searches:
    """`clients` threads searching with random queries until stopped."""

    def __init__(self, address: str, queries: list[bytes], clients: int) -> None:
        self.latencies: list[tuple[float, float]] = []  # (start offset, seconds)
        self.errors: dict[str, int] = {}
        self._address = address
        self._queries = queries
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def start(self) -> None:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - picking queries, not secrets
        with Client(self._address, timeout=30) as client:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    client.search(rng.choice(self._queries), limit=5)
                except grpc.RpcError as exc:
                    with self._lock:
                        self.errors[exc.code().name] = self.errors.get(exc.code().name, 0) + 1
                    continue
                with self._lock:
                    self.latencies.append((t0 - self._started, time.monotonic() - t0))


def _hostile_requests(folder: Path) -> list[tuple[str, bytes | str]]:
    """Special files in the folder, and the hostile calls to send (name, image or path)."""
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "dir.jpg").mkdir()
    deep = io.BytesIO()
    Image.new("I;16", (3000, 3000), 4000).save(deep, "PNG")
    return [
        ("scan bomb", scan_bomb(3000)),
        ("16-bit png", deep.getvalue()),  # within the limits: served
        ("fifo", "fifo.jpg"),
        ("link to /dev/zero", "zero.jpg"),
        ("directory", "dir.jpg"),
        ("traversal", "../../../etc/passwd"),
    ]


HALF_OPEN_CALLS = 32  # more than the server's 16 worker threads


class _Hostile:
    """One client sending the hostile mix, one call after another, and keeping
    `HALF_OPEN_CALLS` half-open calls open, until stopped."""

    def __init__(self, address: str, requests: list[tuple[str, bytes | str]]) -> None:
        self.codes: dict[str, int] = {}
        self.max_seconds = 0.0
        self._address = address
        self._requests = requests
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        with (
            Client(self._address, timeout=30) as client,
            grpc.insecure_channel(self._address) as channel,
        ):
            half_open = channel.stream_unary(
                "/imgsearch.v1.Searcher/Search",
                request_serializer=searcher_pb2.SearchRequest.SerializeToString,
                response_deserializer=searcher_pb2.SearchResponse.FromString,
            )
            held = [half_open.future(self._never_sends()) for _ in range(HALF_OPEN_CALLS)]
            try:
                while not self._stop.is_set():
                    for name, value in self._requests:
                        t0 = time.monotonic()
                        try:
                            if isinstance(value, str):
                                client.search_path(value, limit=3)
                            else:
                                client.search(value, limit=3)
                            code = "OK"
                        except grpc.RpcError as exc:
                            code = exc.code().name
                        self._count(f"{name}: {code}")
                        self.max_seconds = max(self.max_seconds, time.monotonic() - t0)
                        if self._stop.wait(0.1):
                            return
                    for i, call in enumerate(held):
                        if call.done():
                            error = call.exception()
                            code = error.code().name if isinstance(error, grpc.Call) else "OK"
                            self._count(f"half-open call: {code}")
                            held[i] = half_open.future(self._never_sends())
            finally:
                self._stop.set()
                for call in held:
                    call.cancel()  # type: ignore[no-untyped-call]  # untyped in the stubs

    def _never_sends(self) -> Iterator[searcher_pb2.SearchRequest]:
        self._stop.wait()  # the call's sending thread, freed when the mix stops
        yield from ()

    def _count(self, key: str) -> None:
        self.codes[key] = self.codes.get(key, 0) + 1


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def _land_files(
    folder: Path, stream: list[bytes], interval: float, duration: float, pid: int
) -> tuple[int, int, list[tuple[float, float]]]:
    """Write a file every `interval` s (deleting every fifth again); sample RSS each second."""
    added = deleted = 0
    rss: list[tuple[float, float]] = []
    started = next_file = time.monotonic()
    while (now := time.monotonic()) - started < duration:
        if now >= next_file and added < len(stream):
            (folder / f"stream_{added:04d}.jpg").write_bytes(stream[added])
            added += 1
            if added % 5 == 0:
                (folder / f"stream_{added - 3:04d}.jpg").unlink()
                deleted += 1
            next_file += interval
        if not rss or now - started - rss[-1][0] >= 1.0:
            rss.append((now - started, _rss_mb(pid)))
        time.sleep(0.02)
    return added, deleted, rss


def stored_paths(data: Path) -> tuple[list[str], int]:
    """Indexed paths and image count of a stopped server's embedded store."""
    settings = Settings(data_dir=data)
    collection = collection_for(settings.store, choose_model(settings.encoder.model).key)
    store = open_existing_store(
        StoreLocation(path=settings.store.engine_store_path), collection=collection
    )
    assert store is not None, f"no index {collection} in {data}"
    try:
        return [s.path for s in store.indexed_files()], store.count()
    finally:
        store.close()


def run_load(
    duration: float,
    clients: int,
    file_interval: float,
    work: Path,
    *,
    hostile: bool = True,
    message_wait: float = 30.0,
) -> LoadResult:
    """`message_wait`: the server's MESSAGE_WAIT_SECONDS, after which it ends a half-open call."""
    photos = sorted(p for p in BUNDLED_SAMPLES.iterdir() if p.suffix in {".jpg", ".png", ".webp"})
    folder, data = work / "photos", work / "data"
    folder.mkdir()
    for photo in photos:
        (folder / photo.name).write_bytes(photo.read_bytes())
    attacks = _hostile_requests(folder) if hostile else []
    stream = variants(photos, max(1, int(duration / file_interval) + 1), side=640)
    address = f"127.0.0.1:{free_port()}"
    server = start_serve(
        folder,
        data,
        address,
        stderr=work / "server.log",
        env={
            "IMGSEARCH_MAX_CONCURRENT_RPCS": str(4 * clients),
            "IMGSEARCH_MESSAGE_WAIT_SECONDS": str(message_wait),
        },
    )
    try:
        _wait_until_idle(address, state="watching")
        searches = _Searches(
            address, [encode(crop(load(p), 0.6), quality=50) for p in photos], clients
        )
        started = time.monotonic()
        searches.start()
        mix = _Hostile(address, attacks)
        timer = threading.Timer(duration / 2, mix.start) if attacks else None
        if timer is not None:
            timer.start()
        added, deleted, rss = _land_files(folder, stream, file_interval, duration, server.pid)
        if timer is not None:
            timer.join()
            mix.stop()
        searches.stop()
        elapsed = time.monotonic() - started
        indexed = _wait_until_idle(address)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    paths, points = stored_paths(data)
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    assert sorted(paths) == files, "index differs from the folder's regular files"
    durations = sorted(d for _, d in searches.latencies)
    per_second: dict[int, int] = {}
    for at, _ in searches.latencies:
        per_second[int(at)] = per_second.get(int(at), 0) + 1
    return LoadResult(
        duration_s=elapsed,
        clients=clients,
        searches=len(durations),
        errors=searches.errors,
        qps=len(durations) / elapsed,
        p50_ms=1000 * statistics.median(durations),
        p99_ms=1000 * durations[min(len(durations) - 1, int(0.99 * len(durations)))],
        files_added=added,
        files_deleted=deleted,
        final_files=len(files),
        final_indexed=indexed,
        final_points=points,
        rss_mb=rss,
        qps_series=sorted((float(k), float(v)) for k, v in per_second.items()),
        hostile_from_s=duration / 2 if attacks else None,
        p99_ms_calm=_p99([d for at, d in searches.latencies if at < duration / 2]),
        p99_ms_hostile=_p99([d for at, d in searches.latencies if at >= duration / 2]),
        hostile_codes=dict(sorted(mix.codes.items())),
        hostile_max_ms=1000 * mix.max_seconds,
    )


def _report(result: LoadResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(asdict(result), indent=2))
    rss = [mb for _, mb in result.rss_mb]
    warm = rss[min(len(rss) - 1, 5)]
    lines = [
        "# Load test: concurrent searches + a stream of new files",
        "",
        f"`python -m bench.load --duration {result.duration_s:.0f} --clients {result.clients}`"
        f" on 2 cores, load average before the run {os.getloadavg()[0]:.1f}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| searches | {result.searches} ({result.qps:.1f} per second) |",
        f"| latency p50 / p99 | {result.p50_ms:.0f} ms / {result.p99_ms:.0f} ms |",
        f"| errors | {sum(result.errors.values())} {result.errors or ''} |",
        f"| files landed / deleted | {result.files_added} / {result.files_deleted} |",
        f"| files at the end / indexed / points | {result.final_files} / "
        f"{result.final_indexed} / {result.final_points} |",
        f"| server RSS after warm-up / end / max | {warm:.0f} / {rss[-1]:.0f} / "
        f"{max(rss):.0f} MB |",
    ]
    if result.hostile_from_s is not None:
        lines += [
            f"| normal searches' p99 before / during the hostile mix (from "
            f"{result.hostile_from_s:.0f} s) | {result.p99_ms_calm:.0f} ms / "
            f"{result.p99_ms_hostile:.0f} ms |",
            f"| hostile calls by status | {result.hostile_codes} |",
            f"| slowest hostile call | {result.hostile_max_ms:.0f} ms |",
        ]
    (out / "load.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot([t for t, _ in result.qps_series], [q for _, q in result.qps_series])
    left.set_title("searches per second")
    left.set_xlabel("seconds")
    right.plot([t for t, _ in result.rss_mb], rss)
    right.set_title("server RSS (MB)")
    right.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out / "load.png", dpi=110)
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--file-interval", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/load"))
    parser.add_argument("--no-hostile", action="store_true", help="normal traffic only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_load(
            args.duration,
            args.clients,
            args.file_interval,
            Path(tmp),
            hostile=not args.no_hostile,
        )
    _report(result, args.out)


if __name__ == "__main__":
    main()
