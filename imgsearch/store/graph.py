"""The embedded index's search graph, built while the service serves.

qdrant-edge builds an HNSW graph only in `optimize()`, which holds the GIL for minutes (~13
per million vectors on 2 cores): inside the service it would freeze every search. So the
graph is built in another process, on a copy:

1. the service streams the shard's points, page by page, to a child process (searches and
   indexing go on between pages; writes made from then on are journalled);
2. the child, at low CPU priority, writes them into a new shard beside the live one and
   builds its graph (the service's GIL is never held by it);
3. the service sends the child the journalled writes, in rounds, until few are left
   (the child applies them to the copy, off the service's GIL);
4. the service swaps the two directories by rename, opens the copy and replays the rest of
   the journal on it (a pause: `EdgeStore.swap_in_copy` says where it goes).

A kill at any step loses nothing: the live shard is untouched until the swap, the swap is
recovered on the next start, the child dies with its parent, and the next start builds
again. Points added after a build are scanned (int8, exact up to quantisation) until enough
of them pile up to make another build worth it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

import qdrant_edge as qe

from imgsearch.errors import StoreUnavailableError
from imgsearch.metrics import GRAPH_BUILD_SECONDS, GRAPH_BUILDS, GRAPH_SWAP_SECONDS, GRAPH_VECTORS
from imgsearch.store.edge import (
    GRAPH_MIN_SEGMENT_KB,
    EdgeStore,
    create_shard,
    edge_config,
    page_points,
)

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # prctl(2): a signal for this process when its parent dies
_BUILDER_NICE = 10  # the build yields the CPU to searches and indexing
_RETRY_AFTER_FAILURE = 600.0  # seconds; doubled after each failure in a row
_STOP_POLL = 0.2
_GROWTH_BEFORE_REBUILD = 10  # rebuild once the scanned vectors are a tenth of the graph's
BUILT = b"built\n"  # the child's word that its graph is built and it takes writes
_CATCH_UP_ROUNDS = 8  # batches of writes sent to the child at most
_FEW_WRITES = 16  # journalled writes (indexer batches) left for the swap to replay


@dataclass(frozen=True, slots=True)
class GraphStatus:
    """What `imgsearch status` and the metrics say about the graph."""

    state: str  # "off", "idle", "building", "waiting_for_disk"
    graph_vectors: int  # searched through the graph
    scanned_vectors: int  # searched by a scan (added since the last build, or no graph yet)
    last_build_at: float  # unix seconds, 0 = never in this process
    last_build_seconds: float
    last_error: str


class LiveGraph:
    """Keeps the graph of an EdgeStore up to date from a background thread: a build starts
    when `min_scanned` vectors, and a tenth of those in the graph, are scanned (each build
    redoes the whole graph, so a growing folder's builds come at geometric steps: their total
    cost stays a few times the last one's), and at least `min_scanned` more than just after
    the previous build (a shard that cannot be graphed is not rebuilt in a loop)."""

    def __init__(
        self,
        store: EdgeStore,
        *,
        min_scanned: int,
        check_seconds: float = 30.0,
        min_free_disk_bytes: int = 0,
        min_segment_kb: int = GRAPH_MIN_SEGMENT_KB,
    ) -> None:
        self._store = store
        self._min_scanned = min_scanned
        self._check_seconds = check_seconds
        self._min_free_disk = min_free_disk_bytes
        self._min_segment_kb = min_segment_kb
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="graph", daemon=True)
        self._state = "idle"
        self._scanned_after_build = 0
        self._last_build_at = 0.0
        self._last_build_seconds = 0.0
        self._last_error = ""
        self._failures = 0
        self._retry_at = 0.0
        self._builder: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Give up a build in progress (its child is killed, its copy deleted): the next
        start builds again. Returns once the store is no longer used from here."""
        self._stopping.set()
        builder = self._builder
        if builder is not None and builder.poll() is None:
            builder.kill()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def status(self) -> GraphStatus:
        try:
            total, graph = self._store.vector_counts()
        except StoreUnavailableError:
            total, graph = 0, 0
        GRAPH_VECTORS.labels("graph").set(graph)
        GRAPH_VECTORS.labels("scanned").set(total - graph)
        return GraphStatus(
            self._state,
            graph,
            total - graph,
            self._last_build_at,
            self._last_build_seconds,
            self._last_error,
        )

    def build_now(self) -> None:
        """One build, in the calling thread (tests and benchmarks drive it this way)."""
        self._build()

    def _run(self) -> None:
        while not self._stopping.wait(self._check_seconds):
            try:
                if self._due():
                    self._build()
            except Exception:
                log.exception("graph build failed")

    def _due(self) -> bool:
        status = self.status()
        wanted = max(
            self._min_scanned,
            status.graph_vectors // _GROWTH_BEFORE_REBUILD,
            self._scanned_after_build + self._min_scanned,
        )
        if status.scanned_vectors < wanted or time.monotonic() < self._retry_at:
            return False
        needed = _directory_bytes(self._store.directory) + self._min_free_disk
        free = shutil.disk_usage(self._store.directory.parent).free
        if free < needed:
            if self._state != "waiting_for_disk":
                log.warning(
                    "graph build waits for disk space: %d MB free, %d MB needed",
                    free // 2**20,
                    needed // 2**20,
                )
            self._state = "waiting_for_disk"
            return False
        return True

    def _build(self) -> None:
        store = self._store
        self._state = "building"
        started = time.monotonic()
        log.info("graph build started shard=%s", store.directory)
        shutil.rmtree(store.copy_directory, ignore_errors=True)
        # Its messages go to a file, not a pipe: a chatty child must never block on a full pipe.
        with tempfile.TemporaryFile() as said:
            try:
                graphed = self._build_in_child(said)
            except (OSError, InterruptedError, StoreUnavailableError) as exc:
                store.abandon_copy()
                self._failed(exc)
                return
        self._built(graphed, time.monotonic() - started)

    def _build_in_child(self, said: BinaryIO) -> int:
        """Start the child, stream the copy to it, swap its graph in; its vector count."""
        store = self._store
        command = [
            sys.executable,
            "-m",
            __name__,
            str(store.copy_directory),
            str(store.dimensions),
            str(self._min_segment_kb),
        ]
        builder = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=said
        )
        self._builder = builder
        try:
            graphed = self._copy_through(builder, said)
            times = store.swap_in_copy()
            GRAPH_SWAP_SECONDS.observe(times.close + times.open + times.replay + times.commit)
            return graphed
        finally:
            if builder.poll() is None:
                builder.kill()
            builder.wait()
            if builder.stdout is not None:
                builder.stdout.close()
            self._builder = None

    def _copy_through(self, builder: subprocess.Popen[bytes], said: BinaryIO) -> int:
        """Stream the points to the child, wait for its graph, send it the writes made
        meanwhile until few are left for the swap; returns its vector count."""
        assert builder.stdin is not None and builder.stdout is not None
        try:
            with builder.stdin as pages:
                for page in self._store.copy_pages():
                    self._check_not_stopping()
                    pickle.dump(page, pages, protocol=pickle.HIGHEST_PROTOCOL)
                pickle.dump(None, pages)
                pages.flush()
                # Blocks until the graph is built; stop() kills the child, which ends it.
                if builder.stdout.readline() == BUILT:
                    self._send_writes(pages)
                pickle.dump(None, pages)
        except BrokenPipeError:  # it died: say why, below
            builder.wait(timeout=30)
        while builder.poll() is None:
            if self._stopping.wait(_STOP_POLL):
                self._check_not_stopping()
        answer = builder.stdout.read().decode(errors="replace").strip()
        if builder.returncode != 0 or not answer.isdigit():
            raise StoreUnavailableError(_exit_reason(builder, said))
        return int(answer)

    def _send_writes(self, pages: IO[bytes]) -> None:
        """The writes journalled so far, in rounds (each round's are made while the child
        applies the last's), until a round is small: the swap, which pauses searches,
        replays only what comes after (at a million vectors it replayed 91k writes, ~8 s of
        its pause, before the builder took them)."""
        for _ in range(_CATCH_UP_ROUNDS):
            self._check_not_stopping()
            writes = self._store.take_journal()
            pickle.dump(writes, pages, protocol=pickle.HIGHEST_PROTOCOL)
            pages.flush()
            if len(writes) <= _FEW_WRITES:
                return

    def _check_not_stopping(self) -> None:
        if self._stopping.is_set():
            raise InterruptedError("the service is stopping")

    def _failed(self, exc: Exception) -> None:
        self._state = "idle"
        if self._stopping.is_set():
            GRAPH_BUILDS.labels("stopped").inc()
            return
        GRAPH_BUILDS.labels("failed").inc()
        self._failures += 1
        self._retry_at = time.monotonic() + _RETRY_AFTER_FAILURE * 2 ** (self._failures - 1)
        self._last_error = str(exc)
        log.warning("graph build failed, retried later error=%s", exc)

    def _built(self, graphed: int, elapsed: float) -> None:
        self._failures = 0
        self._last_error = ""
        self._last_build_at = time.time()
        self._last_build_seconds = elapsed
        self._scanned_after_build = self.status().scanned_vectors
        self._state = "idle"
        GRAPH_BUILDS.labels("built").inc()
        GRAPH_BUILD_SECONDS.observe(elapsed)
        log.info(
            "graph build done graph_vectors=%d scanned=%d seconds=%.1f",
            graphed,
            self._scanned_after_build,
            elapsed,
        )


def build_copy(
    pages: BinaryIO, directory: Path, dimensions: int, min_segment_kb: int, answers: BinaryIO
) -> int:
    """In the child process: write the pickled pages read from `pages` into a new shard at
    `directory` and build its graph; say BUILT on `answers`, then apply the batches of writes
    the service made meanwhile (`JournalEntry` lists, read from `pages` until None); returns
    how many vectors are in the graph."""
    shard = create_shard(directory, dimensions)
    try:
        # Unpickling is safe here: the pages come from the parent, over a pipe only it holds.
        while (page := pickle.load(pages)) is not None:  # noqa: S301
            shard.update(qe.UpdateOperation.upsert_points(page_points(page, dimensions)))
    finally:
        shard.close()
    shard = qe.EdgeShard.load(str(directory), edge_config(dimensions, min_segment_kb))
    try:
        shard.optimize()
        graphed = int(shard.info().indexed_vectors_count)
        answers.write(BUILT)
        answers.flush()
        while (writes := pickle.load(pages)) is not None:  # noqa: S301
            for write in writes:
                shard.update(write.operation(dimensions))
        shard.flush()
    finally:
        shard.close()
    return graphed


def _exit_reason(builder: subprocess.Popen[bytes], said: BinaryIO) -> str:
    """Why the child failed: its exit code and the last line it wrote (the exception)."""
    said.seek(0)
    lines = said.read().decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else "no message"
    return f"graph builder exited ({builder.returncode}): {last[-300:]}"


def _die_with_parent() -> None:
    """A build whose service was killed must not write on: Linux kills it with its parent."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _main(argv: list[str]) -> int:
    """`python -m imgsearch.store.graph COPY_DIR DIMENSIONS MIN_SEGMENT_KB`, pages and then
    batches of writes on stdin (only LiveGraph starts it): prints BUILT once the graph is
    built, and the number of vectors in it once the writes are applied."""
    _die_with_parent()
    os.nice(_BUILDER_NICE)
    directory, dimensions, min_segment_kb = Path(argv[0]), int(argv[1]), int(argv[2])
    graphed = build_copy(sys.stdin.buffer, directory, dimensions, min_segment_kb, sys.stdout.buffer)
    print(graphed, flush=True)
    return 0


def _directory_bytes(directory: Path) -> int:
    """Space the files take on disk (the engine's logs are sparse: their length overstates)."""
    return sum(f.stat().st_blocks * 512 for f in directory.rglob("*") if f.is_file())


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
