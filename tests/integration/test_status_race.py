"""GetStatus stays correct while the indexer changes its list of failed files."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import Served, wait_until

CORRUPT = 1000
ROUNDS = 3


def _write_corrupt(folder: Path) -> None:
    old = 1_000_000_000  # long settled: failed at once, not retried as a file being written
    for i in range(CORRUPT):
        path = folder / f"bad{i:03d}.jpg"
        path.write_bytes(os.urandom(64) + bytes([i % 256]))
        os.utime(path, (old, old))


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every microsecond instead of every 5 ms: a data race shows up at once."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_status_never_fails_while_failures_come_and_go(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    served = serve(folder)
    served.wait_idle()
    errors: list[grpc.StatusCode] = []
    calls = 0
    done = threading.Event()

    def hammer() -> None:
        nonlocal calls
        while not done.is_set():
            try:
                served.client.status()
            except grpc.RpcError as exc:
                errors.append(exc.code())
            calls += 1

    hammers = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in hammers:
        thread.start()
    try:
        for _ in range(ROUNDS):
            _write_corrupt(folder)
            served.client.rescan()
            wait_until(lambda: served.client.status().failed == CORRUPT, 120)
            for path in folder.iterdir():
                path.unlink()
            served.client.rescan()  # the scan drops the failures of files that are gone
            wait_until(lambda: served.client.status().failed == 0, 120)
    finally:
        done.set()
        for thread in hammers:
            thread.join(30)
    assert calls > 100
    assert errors == []
    served.wait_idle()  # the watcher's delete events are looked at too
    status = served.client.status()
    assert (status.indexed, status.failed, status.pending) == (0, 0, 0)
