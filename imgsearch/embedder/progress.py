"""Indexing rate and ETA over a sliding window, and the periodic progress log line."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 5.0
_RATE_WINDOW = 60.0


class Progress:
    """Files indexed per second over the last minute; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done_times: deque[tuple[float, int]] = deque()
        self._last_log = 0.0

    def record(self, done: int) -> None:
        if done:
            with self._lock:
                self._done_times.append((time.monotonic(), done))

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._done_times and self._done_times[0][0] < now - _RATE_WINDOW:
                self._done_times.popleft()
            if not self._done_times:
                return 0.0
            span = max(now - self._done_times[0][0], 1.0)
            return sum(n for _, n in self._done_times) / span

    @staticmethod
    def eta(pending: int, rate: float) -> float:
        return pending / rate if pending and rate > 0 else 0.0

    def log_due(self, *, finished: bool) -> bool:
        """Whether to log a progress line now: when indexing finished, else every few seconds."""
        now = time.monotonic()
        with self._lock:
            if finished or now - self._last_log >= _PROGRESS_EVERY:
                self._last_log = now
                return True
            return False
