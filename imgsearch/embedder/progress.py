"""Indexing rate and ETA, smoothed so that the ETA a user watches does not jump, and the
periodic progress log line.

Files finish in bursts (a batch at a time, big images slower), so a rate counted over a
window jumps whenever a burst lands or leaves it. The rate here is an exponentially weighted
average with a time constant of half a minute (as a load average is): each burst moves it a
little, and while nothing finishes it decays smoothly. It starts from the plain average since
indexing started, at the first burst.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

_PROGRESS_EVERY = 5.0
_TIME_CONSTANT = 30.0


class Progress:
    """Files indexed per second; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._rate: float | None = None  # images per second, as of `_updated`
        self._updated = self._started
        self._last_log = 0.0

    def record(self, done: int) -> None:
        """`done` more files were indexed just now."""
        if not done:
            return
        now = self._clock()
        with self._lock:
            if self._rate is None:
                self._rate = done / max(now - self._started, 1e-3)
            else:
                elapsed = max(now - self._updated, 1e-6)
                weight = 1.0 - math.exp(-elapsed / _TIME_CONSTANT)
                self._rate += weight * (done / elapsed - self._rate)
            self._updated = now

    def rate(self) -> float:
        """The smoothed rate now (0 until the first files are done)."""
        now = self._clock()
        with self._lock:
            if self._rate is None:
                return 0.0
            return self._rate * math.exp(-(now - self._updated) / _TIME_CONSTANT)

    @staticmethod
    def eta(pending: int, rate: float) -> float:
        return pending / rate if pending and rate > 0 else 0.0

    def log_due(self, *, finished: bool) -> bool:
        """Whether to log a progress line now: when indexing finished, else every few seconds."""
        now = self._clock()
        with self._lock:
            if finished or now - self._last_log >= _PROGRESS_EVERY:
                self._last_log = now
                return True
            return False
