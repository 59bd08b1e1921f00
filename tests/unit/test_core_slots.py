"""Concurrent forward passes share the cores: all for one pass alone, one each under load."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from imgsearch.model import ImageEncoder
from imgsearch.model.session import CoreSlots
from tests.conftest import wait_until
from tests.registry import sample


def _waiting() -> float:
    return sample("imgsearch_model_runs_waiting")


def test_a_pass_alone_takes_every_core_and_concurrent_passes_one_each() -> None:
    slots = CoreSlots(2)
    taken: list[int] = []
    release = threading.Event()

    def hold() -> None:
        with slots.claim() as cores:
            taken.append(cores)
            release.wait(10)

    with slots.claim() as cores:
        assert cores == 2
    first = threading.Thread(target=hold)
    first.start()
    wait_until(lambda: taken == [2], timeout=5)
    # Every core is held: the next two passes wait (the gauge says so) ...
    waiters = [threading.Thread(target=hold) for _ in range(2)]
    for thread in waiters:
        thread.start()
    wait_until(lambda: _waiting() == 2, timeout=5)
    assert taken == [2]
    # ... and when the lone pass ends, they run side by side on one core each.
    release.set()
    for thread in [first, *waiters]:
        thread.join(10)
    assert taken == [2, 1, 1]
    assert _waiting() == 0
    with slots.claim() as cores:  # load gone: a pass alone gets every core again
        assert cores == 2


def test_never_more_cores_in_use_than_there_are() -> None:
    slots = CoreSlots(2)
    in_use = 0
    peak = 0
    lock = threading.Lock()

    def run(_: int) -> int:
        nonlocal in_use, peak
        with slots.claim() as cores:
            with lock:
                in_use += cores
                peak = max(peak, in_use)
            threading.Event().wait(0.002)
            with lock:
                in_use -= cores
        return cores

    with ThreadPoolExecutor(6) as pool:
        widths = list(pool.map(run, range(300)))
    assert peak <= 2
    assert 1 in widths  # some passes ran concurrently on one core each


def test_concurrent_queries_get_the_vectors_a_lone_query_gets(
    encoder: ImageEncoder, sample_photos: list[Path]
) -> None:
    """The one-thread session is the same model: a query's vector does not depend on load."""
    images = [encoder.decode(p.read_bytes()) for p in sample_photos]
    alone = [encoder.encode([image])[0] for image in images]
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda i: encoder.encode([images[i % len(images)]])[0], range(24)))
    for i, vector in enumerate(loaded):
        np.testing.assert_allclose(vector, alone[i % len(images)], atol=1e-5)
