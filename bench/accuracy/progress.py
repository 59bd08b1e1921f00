"""Progress lines (count, rate, ETA) for the long stages, at most one every few seconds."""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Counts work done in one stage and prints `label: done/total, rate/s, ETA` now and then."""

    def __init__(self, label: str, total: int, every: float = 5.0) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._every = every
        self._start = time.monotonic()
        self._last = self._start
        print(f"{label}: 0/{total}", flush=True)

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._every and self.done < self.total:
            self._last = now
            print(self._line(now), flush=True)

    def close(self) -> float:
        """Print the final line; returns the seconds the stage took."""
        now = time.monotonic()
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        print(
            f"{self.label}: {self.done}/{self.total} done in {_duration(elapsed)} ({rate:.1f}/s)",
            flush=True,
        )
        return elapsed

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = _duration(left) if left != float("inf") else "?"
        share = 100.0 * self.done / self.total if self.total else 100.0
        return f"{self.label}: {self.done}/{self.total} ({share:.0f}%), {rate:.1f}/s, ETA {eta}"


def log(message: str) -> None:
    print(message, file=sys.stdout, flush=True)
