"""The searcher's whitening of the folder: learned from the store, relearned as the folder changes.

Whitening is applied when candidates are re-scored, not to the stored vectors: the store keeps
the raw descriptors (so nothing is re-embedded or rewritten when the folder changes and the
whitening is learned again) and the ANN search over raw descriptors supplies the candidates
(re-scoring its first 30 already finds the same rank-1 images as an exact whitened search on
the benchmark's query sample; the searcher re-scores 50).

A folder below `min_images` is searched with raw scores: a whitening learned on a handful of
images fits those images, not photos in general (measured: learned on 100 images it loses 6
points of recall@1).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from imgsearch.errors import StoreUnavailableError
from imgsearch.metrics import WHITENING_IMAGES, WHITENING_LEARN_SECONDS
from imgsearch.model.whitening import Whitening, learn_whitening
from imgsearch.store import VectorStore

log = logging.getLogger(__name__)


class FolderWhitening:
    """The current whitening (or None) without ever blocking a search: learning runs in a
    background thread, started when the folder first reaches `min_images` and again when its
    size has changed by `relearn_change` since the last learning (checked at most every
    `check_interval` seconds, `first_check_interval` before the first whitening)."""

    def __init__(
        self,
        store: VectorStore,
        *,
        min_images: int,
        dimensions: int,
        sample: int,
        check_interval: float = 60.0,
        first_check_interval: float = 10.0,
        relearn_change: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_images < 2:
            raise ValueError("min_images must be at least 2 (0 turns whitening off elsewhere)")
        self._store = store
        self.min_images = min_images
        self._dimensions = dimensions
        self._sample = max(sample, min_images)
        self._check_interval = check_interval
        # Until the first whitening, check more often: a folder being indexed at start-up
        # reaches min_images within minutes, and its searches should not wait a full interval.
        self._first_check_interval = min(first_check_interval, check_interval)
        self._relearn_change = relearn_change
        self._clock = clock
        self._whitening: Whitening | None = None
        self._learned_count = 0  # folder size when the current whitening was learned
        self._next_check = float("-inf")
        self._lock = threading.Lock()  # guards _next_check and _learning
        self._learn_lock = threading.Lock()  # one learning at a time
        self._learning: threading.Thread | None = None

    def current(self) -> Whitening | None:
        """What searches use now; starts a background relearn when one is due."""
        now = self._clock()
        if now >= self._next_check:
            with self._lock:
                if now >= self._next_check and self._learning is None:
                    interval = (
                        self._check_interval
                        if self._whitening is not None
                        else self._first_check_interval
                    )
                    self._next_check = now + interval
                    self._learning = threading.Thread(
                        target=self._learn_in_background, name="whitening", daemon=True
                    )
                    self._learning.start()
        return self._whitening

    def refresh(self) -> Whitening | None:
        """Check and, when due, learn now (start-up, tests, benchmarks): the folder's whitening
        after this call."""
        self._learn_if_due()
        return self._whitening

    def _learn_in_background(self) -> None:
        try:
            self._learn_if_due()
        finally:
            with self._lock:
                self._learning = None

    def _learn_if_due(self) -> None:
        with self._learn_lock:
            self._learn_if_due_locked()

    def _learn_if_due_locked(self) -> None:
        try:
            count = self._store.count()
            if count < self.min_images:
                if self._whitening is not None:
                    log.info(
                        "whitening off: the folder has %d images (< %d)", count, self.min_images
                    )
                self._set(None, count)
                return
            if self._whitening is not None and abs(count - self._learned_count) < (
                self._relearn_change * self._learned_count
            ):
                return
            started = time.perf_counter()
            vectors = self._store.sample_vectors(self._sample)
            if len(vectors) < self.min_images:  # deleted while sampling
                return
            whitening = learn_whitening(vectors, self._dimensions)
        except StoreUnavailableError as exc:
            log.warning("whitening not learned, the store is unavailable: %s", exc)
            return
        elapsed = time.perf_counter() - started
        WHITENING_LEARN_SECONDS.observe(elapsed)
        self._set(whitening, count)
        log.info(
            "whitening learned from %d of %d images (%d dimensions) in %.2f s",
            whitening.images,
            count,
            whitening.dimensions,
            elapsed,
        )

    def _set(self, whitening: Whitening | None, count: int) -> None:
        self._whitening = whitening
        self._learned_count = count if whitening is not None else 0
        WHITENING_IMAGES.set(whitening.images if whitening is not None else 0)
