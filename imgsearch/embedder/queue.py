"""The paths waiting to be looked at: debounced, with write tracking, and the rescan clock.

Watcher events and scans only put relative paths here with a due time; the indexer's worker
takes due paths in batches. Everything in this class is guarded by its one condition lock
(the indexer's, shared), and every method takes it: callers never touch the fields.
"""

from __future__ import annotations

import threading
import time

from imgsearch.metrics import IMAGES_PENDING

_MAX_IDLE_WAIT = 5.0
_OPEN_WRITE_TIMEOUT = 30.0  # a file written to without a close event for this long is read


class WorkQueue:
    """Due times of paths, files still open for writing, and when the next full scan is due."""

    def __init__(self, settle_seconds: float, lock: threading.RLock | None = None) -> None:
        """`lock`: an owner that reads the queue with state of its own passes its lock, so
        both are seen at one instant (re-entrant: the owner may hold it when calling)."""
        self._settle = settle_seconds
        self._cond = threading.Condition(lock or threading.RLock())
        self._due: dict[str, float] = {}  # relative path -> monotonic time to look at it
        self._in_flight = 0
        self._rescan_at = 0.0  # the first pass of the worker is a full scan
        self._allow_mass_delete = False
        self._retry_failures = False
        self._stopping = False
        # Close-after-write tracking (native events only): last write time of files still
        # open for writing, and files whose writer closed them since we last looked.
        self._open_writes: dict[str, float] = {}
        self._closed: set[str] = set()

    def schedule(self, relative: str, delay: float | None = None) -> None:
        """Look at this path after it has been quiet for `delay` (default: the settle time)."""
        due = time.monotonic() + (self._settle if delay is None else delay)
        with self._cond:
            self._due[relative] = due
            IMAGES_PENDING.set(len(self._due) + self._in_flight)
            self._cond.notify_all()

    def note_written(self, relative: str) -> None:
        """Data was written to the file (native events): wait for the writer to close it."""
        with self._cond:
            self._open_writes[relative] = time.monotonic()
            self._closed.discard(relative)
        self.schedule(relative)

    def note_closed(self, relative: str) -> None:
        """The writer closed the file: it is complete, look at it now."""
        with self._cond:
            self._open_writes.pop(relative, None)
            self._closed.add(relative)
        self.schedule(relative, delay=0)

    def forget_writes(self, relative: str) -> None:
        """The path is gone: drop what was known of its writer."""
        with self._cond:
            self._open_writes.pop(relative, None)
            self._closed.discard(relative)

    def looks_complete(self, relative: str, mtime: float) -> bool:
        """Whether the file looks fully written: closed by its writer, or stable for a while."""
        with self._cond:
            last_write = self._open_writes.get(relative)
            closed = relative in self._closed
            self._closed.discard(relative)
            if last_write is not None and time.monotonic() - last_write < _OPEN_WRITE_TIMEOUT:
                return False  # a writer has it open; its close event will bring us back
            if last_write is not None:  # no close event for a long time: fall back to stability
                self._open_writes.pop(relative, None)
        return closed or time.time() - mtime >= self._settle

    def request_rescan(
        self, *, allow_mass_delete: bool = False, retry_failures: bool = False
    ) -> None:
        """Scan the whole folder now; `allow_mass_delete` confirms removals the guard held,
        `retry_failures` looks again at every file that failed."""
        with self._cond:
            self._rescan_at = 0.0
            self._allow_mass_delete = self._allow_mass_delete or allow_mass_delete
            self._retry_failures = self._retry_failures or retry_failures
            self._cond.notify_all()

    def take_retry_failures(self) -> bool:
        """Whether the scan about to run should retry failed files (consumed by this call)."""
        with self._cond:
            retry, self._retry_failures = self._retry_failures, False
            return retry

    def rescan_in(self, seconds: float) -> None:
        """The next full scan is due in `seconds` (inf: only when requested)."""
        with self._cond:
            self._rescan_at = time.monotonic() + seconds

    def take_mass_delete_allowance(self) -> bool:
        """Whether a mass deletion was confirmed since the last scan (consumed by this call)."""
        with self._cond:
            allowed, self._allow_mass_delete = self._allow_mass_delete, False
            return allowed

    def next_batch(self, size: int) -> list[str] | None:
        """Due paths (at most `size`), [] when a rescan is due, None when stopping. The paths
        count as pending until `batch_done`."""
        with self._cond:
            self._in_flight = 0
            while not self._stopping:
                now = time.monotonic()
                if self._rescan_at <= now:
                    return []
                due = [p for p, t in self._due.items() if t <= now]
                if due:
                    due.sort(key=self._due.__getitem__)
                    batch = due[:size]
                    for path in batch:
                        del self._due[path]
                    self._in_flight = len(batch)
                    return batch
                next_due = min(self._due.values(), default=self._rescan_at)
                # Capped: with rescans off the next due time is infinite, too long for wait().
                self._cond.wait(
                    min(_MAX_IDLE_WAIT, max(0.01, min(next_due, self._rescan_at) - now))
                )
            return None

    def batch_done(self) -> None:
        with self._cond:
            self._in_flight = 0

    def pending(self) -> int:
        """Paths waiting or being indexed now."""
        with self._cond:
            return len(self._due) + self._in_flight

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def wait_stopping(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True (at once) when the queue is stopping."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stopping, timeout=timeout)
