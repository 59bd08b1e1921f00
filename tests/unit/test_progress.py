"""The indexing rate behind the ETA: smooth while files finish in bursts."""

from __future__ import annotations

import itertools

from imgsearch.embedder.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _etas(batch: int, every: float, total: int) -> list[float]:
    """ETA sampled every half second while `batch` files finish every `every` seconds."""
    clock = Clock()
    progress = Progress(clock)
    done, etas = 0, []
    next_batch = every
    elapsed = 0.0
    while done < total:
        elapsed += 0.5
        clock.now += 0.5
        if elapsed >= next_batch:
            progress.record(batch)
            done += batch
            next_batch += every
        etas.append(Progress.eta(total - done, progress.rate()))
    return etas


def test_eta_never_jumps_up_while_files_finish_in_bursts() -> None:
    for batch, every in [(16, 8.0), (16, 0.5), (32, 3.0)]:
        etas = [e for e in _etas(batch, every, total=40 * batch) if e > 0]
        rises = [later / earlier for earlier, later in itertools.pairwise(etas)]
        assert max(rises) < 1.1, (batch, every, max(rises))


def test_rate_follows_the_true_rate_and_decays_when_nothing_finishes() -> None:
    clock = Clock()
    progress = Progress(clock)
    assert progress.rate() == 0.0
    for _ in range(240):  # 4 images a second for two minutes
        clock.now += 0.25
        progress.record(1)
    assert 3.6 < progress.rate() < 4.4
    clock.now += 120  # a stall: the ETA grows, smoothly, instead of freezing
    assert progress.rate() < 0.1
