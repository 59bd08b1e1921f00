"""The embedded index's search graph, built while it serves (imgsearch.store.graph).

Real qdrant-edge shards on disk, a real child process building the graph, real kills. The
vectors are small random ones (64-d) and the graph is built from segments of 50 KB, so the
builds take seconds instead of the minutes of a real folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from imgsearch.descriptors import DescriptorSet
from imgsearch.store.base import FileState
from imgsearch.store.edge import EdgeStore, JournalEntry, SwapTimes
from imgsearch.store.graph import LiveGraph

DIMENSIONS = 64
SEGMENT_KB = 50
COLLECTION = "images"


def items(start: int, stop: int) -> list[tuple[FileState, DescriptorSet]]:
    """Files f{i}.jpg with a random unit vector each, the same for the same i."""
    out = []
    for i in range(start, stop):
        vector = np.random.default_rng(i).standard_normal(DIMENSIONS).astype(np.float32)
        vector /= np.linalg.norm(vector)
        boxes = np.asarray([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)
        out.append((FileState(f"f{i}.jpg", 1, 1, f"{i:064x}"), DescriptorSet(vector[None], boxes)))
    return out


def open_store(path: Path) -> EdgeStore:
    return EdgeStore.open_path(path, collection=COLLECTION, dimensions=DIMENSIONS, model="m")


def fill(store: EdgeStore, start: int, stop: int) -> None:
    for first in range(start, stop, 256):
        store.upsert(items(first, min(stop, first + 256)))


def finds_itself(store: EdgeStore, i: int) -> bool:
    ((_, descriptors),) = items(i, i + 1)
    hits = store.search(descriptors.vectors, 1)
    return bool(hits) and hits[0].path == f"f{i}.jpg"


def test_graph_is_built_while_searches_and_writes_go_on(tmp_path: Path) -> None:
    """Searches are served and right throughout; every write made during the build, upsert
    or delete, is in the shard after the swap, most of them applied by the builder to its
    copy before the swap (which then replays only the rest, pausing searches for less)."""
    store = open_store(tmp_path)
    fill(store, 0, 3000)
    assert store.vector_counts() == (3000, 0)
    graph = LiveGraph(store, min_scanned=1000, min_segment_kb=SEGMENT_KB)
    done = threading.Event()
    written = [3000]
    deleted: set[str] = set()
    searches: list[bool] = []
    handed: list[int] = []  # writes handed to the builder, per round
    swaps: list[SwapTimes] = []
    take_journal, swap_in_copy = store.take_journal, store.swap_in_copy

    def counted_take() -> list[JournalEntry]:
        writes = take_journal()
        handed.append(len(writes))
        return writes

    def counted_swap() -> SwapTimes:
        swaps.append(swap_in_copy())
        return swaps[-1]

    store.take_journal = counted_take  # type: ignore[method-assign]
    store.swap_in_copy = counted_swap  # type: ignore[method-assign]

    def traffic() -> None:
        while not done.is_set():
            i = written[0]
            store.upsert(items(i, i + 5))
            written[0] = i + 5
            store.delete_paths([f"f{i + 1}.jpg", f"f{i // 3}.jpg"])  # new and old files
            deleted.update({f"f{i + 1}.jpg", f"f{i // 3}.jpg"})
            searches.append(finds_itself(store, i))
            time.sleep(0.002)  # an indexer between batches, not a spin that starves the copy

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        graph.build_now()
    finally:
        done.set()
        worker.join()

    status = graph.status()
    kept = {f"f{i}.jpg" for i in range(written[0])} - deleted
    assert len(searches) > 5 and all(searches)  # served, and right, during the build
    assert status.graph_vectors >= 3000 - len(deleted)
    assert status.graph_vectors + status.scanned_vectors == len(kept)
    assert status.last_build_at > 0 and status.last_error == ""
    assert store.count() == len(kept)
    assert store.indexed_among([f"f{i}.jpg" for i in range(written[0])]) == kept
    assert all(finds_itself(store, i) for i in range(0, written[0], 97) if f"f{i}.jpg" in kept)
    assert not store.copy_directory.exists()
    assert handed and handed[0] > 0  # the builder applied the writes made while it built
    assert swaps[0].replayed < sum(handed)
    store.close()


def test_a_build_is_due_only_past_its_threshold(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    fill(store, 0, 500)
    graph = LiveGraph(store, min_scanned=1000, min_segment_kb=SEGMENT_KB, check_seconds=0.05)
    graph.start()
    time.sleep(0.5)
    assert graph.status().graph_vectors == 0 and graph.status().last_build_at == 0
    fill(store, 500, 1500)
    deadline = time.monotonic() + 60
    while graph.status().last_build_at == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    graph.stop()
    status = graph.status()
    # It started once 1,000 were scanned; what came during the build is scanned for now.
    assert status.graph_vectors >= 1000
    assert status.graph_vectors + status.scanned_vectors == 1500 == store.count()
    store.close()


KILLED_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from tests.integration.test_live_graph import fill, items, open_store, SEGMENT_KB
    from imgsearch.store.graph import LiveGraph

    store = open_store(Path(sys.argv[1]))
    fill(store, 0, 20000)
    print("filled", flush=True)

    def writes():
        i = 20000
        while True:
            store.upsert(items(i, i + 10))
            i += 10
            print("written", i, flush=True)
            time.sleep(0.002)  # an indexer between batches, not a spin that starves the copy

    threading.Thread(target=writes, daemon=True).start()
    LiveGraph(store, min_scanned=1, min_segment_kb=SEGMENT_KB).build_now()
    print("build finished before the kill", flush=True)
    """
)


@pytest.mark.parametrize("moment", ["copying", "building"])
def test_a_kill_during_a_build_loses_nothing(tmp_path: Path, moment: str) -> None:
    """SIGKILL the service while its build copies the shard or builds the graph: every write
    that returned is there after a restart, nothing of the build is left (its child died
    with the service), and the next build completes."""
    store_path = tmp_path / "store"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCRIPT, str(store_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert process.stdout is not None
    copy = store_path / f"{COLLECTION}.next"
    written = 0
    deadline = time.monotonic() + 120
    try:
        for line in process.stdout:
            if line.startswith("written"):
                written = int(line.split()[1])
            if time.monotonic() > deadline or line.startswith("build finished"):
                pytest.fail(f"the build was never caught {moment}: {line.strip()}")
            started = copy.is_dir()
            # copying: the child has made the copy; building: the copy holds every point
            if started and (moment == "copying" or _copy_filled(copy)):
                break
        builders = _builders(copy)
        assert builders, "no builder process was running"
        for pid in builders:  # frozen: only the kernel's parent-death signal can end it now
            os.kill(pid, signal.SIGSTOP)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        _wait_gone(builders)
    finally:
        for pid in _builders(copy):
            os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()

    store = open_store(store_path)
    assert not copy.exists()
    paths = [f"f{i}.jpg" for i in range(written)]
    assert store.indexed_among(paths) == set(paths)
    graph = LiveGraph(store, min_scanned=1, min_segment_kb=SEGMENT_KB)
    graph.build_now()
    assert graph.status().graph_vectors >= written
    assert all(finds_itself(store, i) for i in range(0, written, 211))
    store.close()


def _copy_filled(copy: Path) -> bool:
    """The child has started its graph build (qdrant-edge makes temp_segments for it)."""
    return (copy / "temp_segments").is_dir() and any((copy / "temp_segments").iterdir())


def _builders(copy: Path) -> list[int]:
    """Processes building a graph into `copy` (from /proc: their command line names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(copy).encode() in command and b"imgsearch.store.graph" in command:
                found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int]) -> None:
    """They die with the service, even one that is not running (a builder left alone would
    stop only once it noticed its closed pipe: after the graph is built, minutes later at
    scale)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() and _running(pid) for pid in pids):
            return
        time.sleep(0.1)
    pytest.fail(f"graph builders outlived the killed service: {pids}")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("cut", ["between_renames", "before_replay", "after_commit"])
def test_a_swap_cut_short_is_undone_or_kept(tmp_path: Path, cut: str) -> None:
    """The process died during a swap. Until the writes made during the build are replayed
    on the copy, the shard it replaces (kept as `.old`) is the truth and comes back; once
    `.old` has become `.trash`, the copy is the shard. Nothing else is left."""
    copy_path, live = tmp_path / "copy", tmp_path / "live"
    copy = open_store(copy_path)
    fill(copy, 0, 300)
    copy.close()
    store = open_store(live)
    fill(store, 0, 200)
    store.close()
    shard = live / COLLECTION
    shard.rename(live / f"{COLLECTION}.old")
    (copy_path / COLLECTION).rename(live / f"{COLLECTION}.next")
    if cut != "between_renames":
        (live / f"{COLLECTION}.next").rename(shard)
    if cut == "after_commit":
        (live / f"{COLLECTION}.old").rename(live / f"{COLLECTION}.trash")

    store = open_store(live)
    assert store.count() == (300 if cut == "after_commit" else 200)
    assert sorted(p.name for p in live.iterdir()) == [COLLECTION, f"{COLLECTION}.lock"]
    store.close()


def test_a_build_waits_for_disk_space(tmp_path: Path) -> None:
    """A build needs as much free disk as the shard: short of it, none starts (the state
    says why) and nothing is written."""
    store = open_store(tmp_path)
    fill(store, 0, 1500)
    graph = LiveGraph(store, min_scanned=1000, check_seconds=0.05, min_free_disk_bytes=2**62)
    graph.start()
    try:
        wait_for(lambda: graph.status().state == "waiting_for_disk")
    finally:
        graph.stop()
    assert graph.status().graph_vectors == 0 and graph.status().last_build_at == 0
    assert not store.copy_directory.exists()
    store.close()


def test_a_failed_build_is_reported_and_changes_nothing(tmp_path: Path) -> None:
    """The child cannot make its copy (a file stands where it goes): the build fails with a
    reason in the status, the store serves on unchanged, and the next try waits."""
    store = open_store(tmp_path)
    fill(store, 0, 1500)
    store.copy_directory.write_text("in the way")
    graph = LiveGraph(store, min_scanned=1000, min_segment_kb=SEGMENT_KB)
    graph.build_now()
    status = graph.status()
    assert status.last_error.startswith("graph builder exited")
    assert (status.state, status.graph_vectors, status.last_build_at) == ("idle", 0, 0)
    assert store.count() == 1500 and finds_itself(store, 7)
    assert not graph._due()  # backs off before trying again
    store.close()


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
