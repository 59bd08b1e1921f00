"""Keeps the index equal to the folder: examine -> embed -> upsert.

The watcher and scans put relative paths on the `WorkQueue` with a due time (debounce); one
worker thread takes due paths in batches, decides what changed by comparing (size, mtime)
and content hash with what was indexed, and writes each batch to the store. Every decision
is made from the file system and the index, never from the event itself, so lost or repeated
events cannot make the index wrong: the next scan (`reconcile`) repairs what an event missed.

Only the decoding and embedding of the files a batch needs is handed to a small pool of
embedding threads (onnxruntime and Pillow release the GIL; each thread runs the model with one
onnxruntime thread); the worker thread waits for the whole batch before writing it, so every
decision, write and mirror update still happens in that one thread, in order.

Locks: one re-entrant lock, shared with the queue, guards the queue and the mirrors of the
index (`_indexed`, `_failures`, `_ignored`, `_held_deletions`). The mirrors are written by the
worker only, always under it; `status()` reads queue and mirrors under it at one instant, and
the worker moves a batch from "pending" to "indexed" or "failed" in one step under it, so the
counts always add up.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
import stat
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from imgsearch.descriptors import DescriptorSet
from imgsearch.embedder.failures import Failure, FailureLog
from imgsearch.embedder.progress import Progress
from imgsearch.embedder.queue import WorkQueue
from imgsearch.embedder.reconcile import Version, candidates, diff_folder, holds_mass_deletion
from imgsearch.errors import (
    BusyError,
    InvalidImageError,
    ModelError,
    StoreUnavailableError,
    UnreadableFileError,
    UnrecognisedImageError,
)
from imgsearch.files import read_folder_file
from imgsearch.ids import shown
from imgsearch.metrics import (
    DELETIONS_HELD,
    DISK_FULL,
    IMAGES_FAILED,
    IMAGES_INDEXED,
    IMAGES_PENDING,
    INDEX_OPERATIONS,
    INFERENCE,
    RECONCILE_CHANGES,
    RECONCILE_RUNS,
)
from imgsearch.model import ImageEncoder
from imgsearch.paths import has_image_suffix
from imgsearch.priority import lower_priority
from imgsearch.settings import IndexSettings
from imgsearch.store import FileState, VectorStore

log = logging.getLogger(__name__)

_STORE_RETRY_FIRST = 0.5  # then doubling per consecutive failure
_STORE_RETRY_MAX = 30.0
_MAX_LISTED_FAILURES = 100
_FOLDER_RETRY = 5.0
_RECENT_WRITE = 8.0  # an unreadable file modified this recently is retried, not failed
_RECENTLY_DELETED = 256  # descriptor sets kept after deletion, for moves (~18 MB)
# Read errors whose cause may pass: tried again after 5 s, doubling up to 10 minutes.
_TRANSIENT_ERRORS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.EIO, errno.EAGAIN, errno.EBUSY}
)
_DISK_RETRY = 5.0  # seconds between checks of a full disk
_BUSY_RETRY = 2.0  # seconds before a file whose decode found no memory budget is tried again
_DELETION_SETTLE = 2.0  # a file seen gone waits this long, so that a burst is judged whole
_DELETION_WINDOW = 60.0  # deletions seen through events within this long add up for the guard
_READ_RETRY_FIRST = 5.0
_READ_RETRY_MAX = 600.0


@dataclass(frozen=True, slots=True)
class IndexStatus:
    indexed: int
    pending: int
    failed: int
    state: str
    failures: list[tuple[str, str]]
    rate: float
    eta_seconds: float
    held_deletions: int


@dataclass
class _Batch:
    """What one pass over a batch of due paths decided to do."""

    # Files being decoded and embedded by the embedding threads, in the order they were read.
    embed: list[tuple[FileState, Future[DescriptorSet]]] = field(default_factory=list)
    # Same content as a file already in `embed`: gets that file's vector (embedded once).
    twins: list[FileState] = field(default_factory=list)
    reuse: list[tuple[FileState, DescriptorSet]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    failed: dict[str, Failure] = field(default_factory=dict)
    # Looked at again after a delay (None: the settle time), when the batch is applied.
    retry: list[tuple[str, float | None]] = field(default_factory=list)


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds `path`."""
    return shutil.disk_usage(path).free


class Indexer:
    """Owns the worker thread that keeps the index equal to the folder."""

    def __init__(
        self,
        root: Path,
        encoder: ImageEncoder,
        store: VectorStore,
        settings: IndexSettings,
        failure_log: FailureLog | None = None,
        disk: Path | None = None,
    ) -> None:
        """`settings.embed_workers` threads decode and embed in parallel: give `encoder` one
        onnxruntime thread per worker's share of the cores. `failure_log` keeps what could
        not be indexed across restarts. `disk`: where the embedded index writes, checked for
        free space before each batch."""
        self.root = root
        self._encoder = encoder
        self._store = store
        self._settings = settings
        self._lock = threading.RLock()
        self._queue = WorkQueue(settings.settle_seconds, self._lock)
        self._progress = Progress()
        self._failure_log = failure_log or FailureLog(None)
        self._disk = disk
        self._disk_full = False
        self._failures_changed = False
        self._started = 0.0
        self._done_this_run = 0
        self._initial_logged = False
        self._store_failures = 0  # consecutive failed batches, for the retry backoff
        self._scanning = False
        self._folder_missing = False
        self._ready = threading.Event()

        # Mirrors of the index and of what could not be indexed: written by the worker only,
        # always under `_lock`; status readers copy them under it.
        self._indexed: dict[str, FileState] = {}
        self._failures: dict[str, Failure] = {}
        self._ignored: dict[str, Version] = {}  # non-image files
        self._held_deletions: set[str] = set()
        self._recently_deleted: OrderedDict[str, DescriptorSet] = OrderedDict()  # by sha256
        self._read_attempts: dict[str, int] = {}  # files whose reads failed for a passing cause
        self._recent_deletions: deque[tuple[float, int]] = deque()  # (time, files) by events
        self._seen_gone: dict[str, float] = {}  # gone files waiting for the guard, since when
        self._scan_removed: set[str] = set()  # deletions a scan decided

        self._thread = threading.Thread(target=self._run, name="indexer", daemon=True)
        workers = max(1, settings.embed_workers)
        self._embedders = ThreadPoolExecutor(
            workers,
            thread_name_prefix="embed",
            initializer=lower_priority,
            initargs=(settings.nice,),
        )
        # Files read but not yet embedded hold their bytes: at most two per embedding thread.
        self._embed_slots = threading.BoundedSemaphore(2 * workers)

    # ---- called from other threads -------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current batch and stop; queued paths are found again by the next scan."""
        self._queue.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the index mirror is loaded and the first scan has queued its work."""
        return self._ready.wait(timeout)

    def schedule(self, relative: str, delay: float | None = None) -> None:
        """Look at this path after it has been quiet for `delay` (default: the settle time)."""
        self._queue.schedule(relative, delay)

    def note_written(self, relative: str) -> None:
        """Data was written to the file (native events): wait for the writer to close it."""
        self._queue.note_written(relative)

    def note_closed(self, relative: str) -> None:
        """The writer closed the file: it is complete, look at it now."""
        self._queue.note_closed(relative)

    def schedule_folder(self, relative_folder: str) -> None:
        """A folder appeared (created or moved in): look at every file inside it."""
        for relative in candidates(self.root, self.root / relative_folder):
            self.schedule(relative)

    def forget_folder(self, relative_folder: str) -> None:
        """A folder went away: look again at every indexed path under it (each will be gone)."""
        prefix = relative_folder.rstrip("/") + "/"
        with self._lock:
            known = [p for p in self._indexed if p.startswith(prefix)]
            known += [p for p in self._failures if p.startswith(prefix)]
        for relative in known:
            self.schedule(relative)

    def request_rescan(
        self, *, allow_mass_delete: bool = False, retry_failures: bool = False
    ) -> None:
        """Scan the whole folder now; `allow_mass_delete` confirms removals the guard held back,
        `retry_failures` reads every failed file again (its cause may have gone)."""
        self._queue.request_rescan(
            allow_mass_delete=allow_mass_delete, retry_failures=retry_failures
        )

    def status(self) -> IndexStatus:
        with self._lock:
            pending = self._queue.pending()
            failures = sorted((shown(p), f.reason) for p, f in self._failures.items())
            indexed = len(self._indexed)
            held = len(self._held_deletions)
        if self._folder_missing:
            state = "folder_missing"
        elif self._disk_full:
            state = "disk_full"
        elif held:
            state = "deletion_held"
        elif not self._ready.is_set():
            state = "starting"
        elif self._scanning:
            state = "scanning"
        else:
            state = "indexing" if pending else "watching"
        rate = self._progress.rate()
        return IndexStatus(
            indexed=indexed,
            pending=pending,
            failed=len(failures),
            state=state,
            failures=failures[:_MAX_LISTED_FAILURES],
            rate=rate,
            eta_seconds=Progress.eta(pending, rate),
            held_deletions=held,
        )

    # ---- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        lower_priority(self._settings.nice)
        try:
            self._index_until_stopped()
        finally:
            self._embedders.shutdown(wait=True, cancel_futures=True)

    def _index_until_stopped(self) -> None:
        self._started = time.monotonic()
        indexed = self._load_index()
        if indexed is None:
            return
        failures, ignored = self._failure_log.load()
        with self._lock:
            self._indexed = indexed
            self._failures = failures
            self._ignored = ignored
        IMAGES_INDEXED.set(len(indexed))
        IMAGES_FAILED.set(len(failures))
        log.info(
            "index loaded images=%d known_failures=%d folder=%s",
            len(indexed),
            len(failures),
            self.root,
        )
        while True:
            batch = self._queue.next_batch(self._settings.batch_size)
            if batch is None:
                return
            if batch:
                self._process(batch)
            else:
                self._reconcile()
            self._save_failures()
            self._log_initial_done()

    def _save_failures(self) -> None:
        if not self._failures_changed:
            return
        with self._lock:
            failures, ignored = dict(self._failures), dict(self._ignored)
            self._failures_changed = False
        self._failure_log.save(failures, ignored)

    def _log_initial_done(self) -> None:
        """One line when the work the first scan found is done."""
        if self._initial_logged or not self._ready.is_set() or self._queue.pending():
            return
        self._initial_logged = True
        took = max(time.monotonic() - self._started, 1e-3)
        status = self.status()
        log.info(
            "initial index complete: %d images in %.1f s (%.1f img/s) indexed=%d failed=%d",
            self._done_this_run,
            took,
            self._done_this_run / took,
            status.indexed,
            status.failed,
        )

    def _load_index(self) -> dict[str, FileState] | None:
        """What the store holds, retried with backoff while it is unreachable (None: stopping)."""
        delay = _STORE_RETRY_FIRST
        while True:
            try:
                return {state.path: state for state in self._store.indexed_files()}
            except StoreUnavailableError as exc:
                log.error("cannot read the index, retrying in %.0fs error=%s", delay, exc)
            if self._queue.wait_stopping(delay):
                return None
            delay = min(_STORE_RETRY_MAX, delay * 2)

    def _reconcile(self) -> None:
        """Full scan: queue each file that differs from the index, and each vanished one."""
        interval = self._settings.rescan_interval or float("inf")
        self._queue.rescan_in(interval)
        if not self.root.is_dir():
            # An unmounted or deleted folder looks like "everything deleted": never act on it.
            if not self._folder_missing:
                log.error("watched folder is missing, index left as it is folder=%s", self.root)
            self._folder_missing = True
            RECONCILE_RUNS.labels("folder_missing").inc()
            self._queue.rescan_in(min(interval, _FOLDER_RETRY))
            self._ready.set()
            return
        self._folder_missing = False
        self._scanning = True
        started = time.monotonic()
        with self._lock:
            indexed = dict(self._indexed)
            if self._queue.take_retry_failures() and self._failures:
                log.info("rescan retries every failed file files=%d", len(self._failures))
                self._failures.clear()
                self._failures_changed = True
        diff = diff_folder(self.root, indexed, self._is_settled_failure)
        if diff.unlisted:
            RECONCILE_RUNS.labels("unlisted_folders").inc()
        for folder in diff.unlisted:
            log.error(
                "cannot list a folder, its indexed files are kept folder=%s",
                shown(folder) or ".",
            )
        removed = [] if self._hold_mass_deletion(diff.removed) else diff.removed
        self._scan_removed.update(removed)  # guarded here: not held again as events
        for relative in [*diff.added, *diff.changed, *removed]:
            self.schedule(relative, delay=0)
        with self._lock:
            for relative in [p for p in self._failures if p not in diff.seen]:
                del self._failures[relative]
                self._failures_changed = True
        self._scanning = False
        RECONCILE_RUNS.labels("ok").inc()
        RECONCILE_CHANGES.labels("added").inc(len(diff.added))
        RECONCILE_CHANGES.labels("changed").inc(len(diff.changed))
        RECONCILE_CHANGES.labels("removed").inc(len(removed))
        log.info(
            "scan done files=%d new=%d changed=%d removed=%d took=%.2fs",
            len(diff.seen),
            len(diff.added),
            len(diff.changed),
            len(removed),
            time.monotonic() - started,
        )
        self._ready.set()

    def _hold_mass_deletion(self, removed: list[str]) -> bool:
        """True when a scan would remove too much of the index: keep it, report, wait."""
        allowed = self._queue.take_mass_delete_allowance()
        fraction = self._settings.mass_delete_fraction
        with self._lock:
            indexed = len(self._indexed)
            hold = holds_mass_deletion(len(removed), indexed, fraction, allowed=allowed)
            self._held_deletions = set(removed) if hold else set()
        DELETIONS_HELD.set(len(removed) if hold else 0)
        if hold:
            self._report_held("a scan found", len(removed), indexed)
        return hold

    def _report_held(self, how: str, missing: int, indexed: int) -> None:
        RECONCILE_RUNS.labels("deletion_held").inc()
        log.error(
            "%s %d of %d indexed files missing, more than the %.0f%% guard: index kept; "
            "restore the files or confirm with a rescan allowing mass deletion",
            how,
            missing,
            indexed,
            self._settings.mass_delete_fraction * 100,
        )

    def _guard_deletions(self, batch: _Batch) -> None:
        """The mass-delete guard for deletions seen one by one (watch events): `rm -rf
        folder/*`, or the folder deleted and made again, must not empty the index either.
        A file seen gone waits `_DELETION_SETTLE` seconds, so that a burst is judged whole;
        deletions within a minute add up; past the guard they are held like a scan's.
        Deletions a scan decided (and so already guarded) go through."""
        if not batch.delete:
            return
        now = time.monotonic()
        confirmed = [p for p in batch.delete if p in self._scan_removed]
        self._scan_removed.difference_update(confirmed)
        waiting = [p for p in batch.delete if p not in confirmed]
        for relative in waiting:
            if relative not in self._seen_gone:
                self._seen_gone[relative] = now
                batch.retry.append((relative, _DELETION_SETTLE))
        due = [p for p in waiting if now - self._seen_gone[p] >= _DELETION_SETTLE]
        while self._recent_deletions and self._recent_deletions[0][0] < now - _DELETION_WINDOW:
            self._recent_deletions.popleft()
        recent = sum(count for _, count in self._recent_deletions)
        fraction = self._settings.mass_delete_fraction
        with self._lock:
            before = len(self._indexed) + recent  # the index before this run of deletions
            held = bool(self._held_deletions)
            gone = recent + len(self._seen_gone)  # applied, and seen gone but not yet applied
            hold = bool(due) and (
                held or holds_mass_deletion(gone, before, fraction, allowed=False)
            )
            if hold:
                self._held_deletions.update(self._seen_gone)
                total = len(self._held_deletions)
        if not hold:
            for relative in due:
                del self._seen_gone[relative]
            batch.delete = confirmed + due
            if batch.delete:
                self._recent_deletions.append((now, len(batch.delete)))
                log.info("removing from the index files=%d", len(batch.delete))
            return
        self._seen_gone.clear()
        batch.retry = [(p, d) for p, d in batch.retry if p not in self._held_deletions]
        DELETIONS_HELD.set(total)
        if not held:
            self._report_held("deletions within a minute left", gone, before)
        batch.delete = confirmed

    def _came_back(self, relative: str) -> None:
        """A file the mass-delete guard held is there again: it is no longer a held deletion
        (all back: the state returns to watching without waiting for a scan)."""
        self._seen_gone.pop(relative, None)
        with self._lock:
            if relative not in self._held_deletions:
                return
            self._held_deletions.discard(relative)
            left = len(self._held_deletions)
        DELETIONS_HELD.set(left)
        if not left:
            log.warning("every file the mass-deletion guard held is back; nothing was removed")

    def _is_settled_failure(self, relative: str, version: Version) -> bool:
        """This version of the file already failed, or is not an image: do not read it again."""
        with self._lock:
            failure = self._failures.get(relative)
            if failure is not None and (failure.size, failure.mtime_ns) == version:
                return not failure.transient
            return self._ignored.get(relative) == version

    def _waiting_for_disk(self, paths: list[str]) -> bool:
        """A full disk kills an embedded engine mid-write (qdrant-edge maps its log: SIGBUS),
        so indexing waits, with the reason in the status, a metric and the log, while
        searches go on; it carries on by itself once space is back."""
        if self._disk is None or not self._settings.min_free_disk_bytes:
            return False
        try:
            free = free_bytes(self._disk)
        except OSError as exc:
            log.warning("cannot tell the free disk space path=%s error=%s", self._disk, exc)
            return False
        full = free < self._settings.min_free_disk_bytes
        if full != self._disk_full:
            self._disk_full = full
            DISK_FULL.set(int(full))
            if full:
                log.error(
                    "indexing paused: %d MB free on the index's disk, under the %d MB kept free; "
                    "searches go on path=%s",
                    free // 2**20,
                    self._settings.min_free_disk_bytes // 2**20,
                    self._disk,
                )
            else:
                log.warning("disk space is back, indexing resumes free_mb=%d", free // 2**20)
        if full:
            self._requeue(paths, _DISK_RETRY, _Batch())
        return full

    def _process(self, paths: list[str]) -> None:
        if self._waiting_for_disk(paths):
            return
        batch = _Batch()
        try:
            for relative in paths:
                self._examine(relative, batch)
            if batch.delete and not self.root.is_dir():
                # The folder vanished (unmount, rm -r of the root): keep the index as it is.
                batch.retry += [(relative, _FOLDER_RETRY) for relative in batch.delete]
                batch.delete = []
            self._guard_deletions(batch)
            embedded = self._embed(batch)
            ready = batch.reuse + embedded
            self._store.upsert(ready)
            self._remember_deleted(batch.delete)
            self._store.delete_paths(batch.delete)
        except StoreUnavailableError as exc:
            self._store_failures += 1
            delay = min(_STORE_RETRY_MAX, _STORE_RETRY_FIRST * 2 ** (self._store_failures - 1))
            log.error(
                "store unavailable, batch re-queued files=%d retry_in=%.0fs error=%s",
                len(paths),
                delay,
                exc,
            )
            self._requeue(paths, delay, batch)
            return
        except Exception as exc:
            # A bug must not stop the watcher, nor one file its batch: each file alone, and
            # the one that still fails is listed failed with the error.
            if len(paths) > 1:
                log.exception(
                    "unexpected error, files of the batch one by one files=%d", len(paths)
                )
                self._requeue([], 0.0, batch)
                for relative in paths:
                    self._process([relative])
                return
            log.exception("unexpected error, file listed failed path=%s", shown(paths[0]))
            self._requeue([], 0.0, batch)
            self._fail_alone(paths[0], f"unexpected error: {exc}")
            return
        self._store_failures = 0
        self._apply(batch, ready)

    def _requeue(self, paths: list[str], delay: float, batch: _Batch) -> None:
        """The batch failed as a whole: its paths go back on the queue, its embeddings not
        started yet are dropped."""
        with self._lock:
            for relative in paths:
                self.schedule(relative, delay=delay)
            self._queue.batch_done()
        for _, future in batch.embed:
            future.cancel()

    def _examine(self, relative: str, batch: _Batch) -> None:
        """Decide what one path needs: nothing, an embedding, a reused vector or a deletion."""
        path = self.root / relative
        try:
            info = path.lstat()
        except OSError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            # Gone, or not a regular file (symlinks are never followed out of the folder).
            if relative in self._indexed:
                batch.delete.append(relative)
            with self._lock:
                failed = self._failures.pop(relative, None)
                ignored = self._ignored.pop(relative, None)
                self._failures_changed |= failed is not None or ignored is not None
            self._queue.forget_writes(relative)
            return
        self._came_back(relative)
        if shown(relative) != relative:
            # Qdrant payloads and gRPC replies are UTF-8: such a file is listed, not indexed.
            reason = "file name is not UTF-8: rename the file to index it"
            version = (info.st_size, info.st_mtime_ns)
            if not self._is_settled_failure(relative, version):
                self._fail(relative, Failure(reason, *version), batch, content_gone=True)
            return
        if not self._queue.looks_complete(relative, info.st_mtime):
            batch.retry.append((relative, None))
            return
        known = self._indexed.get(relative)
        version = (info.st_size, info.st_mtime_ns)
        if known is not None and (known.size, known.mtime_ns) == version:
            INDEX_OPERATIONS.labels("unchanged").inc()
            return
        if self._is_settled_failure(relative, version):
            return
        limit = self._settings.max_file_bytes
        if info.st_size > limit:
            reason = f"file is {info.st_size} bytes, over the {limit} byte limit"
            self._fail(relative, Failure(reason, *version), batch, content_gone=True)
            return
        self._load(relative, version, known, batch)

    def _load(
        self, relative: str, version: tuple[int, int], known: FileState | None, batch: _Batch
    ) -> None:
        """Read a changed file: reuse a stored vector for known content, else decode it."""
        path = self.root / relative
        try:
            data = read_folder_file(path, self._settings.max_file_bytes)
            after = path.lstat()
        except UnreadableFileError as exc:
            self._fail(relative, Failure(str(exc), *version), batch, content_gone=True)
            return
        except OSError as exc:
            reason = f"cannot read file: {exc.strerror or exc}"
            transient = exc.errno in _TRANSIENT_ERRORS
            self._fail(relative, Failure(reason, *version, transient), batch, content_gone=False)
            if transient:
                attempts = self._read_attempts.get(relative, 0)
                self._read_attempts[relative] = attempts + 1
                delay = min(_READ_RETRY_MAX, _READ_RETRY_FIRST * 2**attempts)
                batch.retry.append((relative, delay))
            return
        self._read_attempts.pop(relative, None)
        if (after.st_size, after.st_mtime_ns) != version or len(data) != version[0]:
            batch.retry.append((relative, None))  # changed while we read it
            return
        state = FileState(relative, *version, hashlib.sha256(data).hexdigest())
        stored = self._stored_for_content(state, known)
        if stored is not None:
            batch.reuse.append((state, stored))
            return
        if any(queued.sha256 == state.sha256 for queued, _ in batch.embed):
            batch.twins.append(state)
            return
        batch.embed.append((state, self._submit(data)))

    def _submit(self, data: bytes) -> Future[DescriptorSet]:
        """Decode and embed one file in an embedding thread (waits for a free slot)."""
        self._embed_slots.acquire()
        try:
            future = self._embedders.submit(self._describe, data)
        except BaseException:
            self._embed_slots.release()
            raise
        future.add_done_callback(lambda _: self._embed_slots.release())
        return future

    def _describe(self, data: bytes) -> DescriptorSet:
        """Runs in an embedding thread: touches the encoder only, never the index or mirrors."""
        with INFERENCE.labels("many").time():
            return self._encoder.describe_file(data, regions=self._settings.regions)

    def _not_embedded(self, state: FileState, exc: Exception, batch: _Batch) -> None:
        """Record why a file could not be embedded: ignored, retried soon, or failed."""
        relative, version = state.path, (state.size, state.mtime_ns)
        if isinstance(exc, BusyError):  # searches hold the decode memory: later
            batch.retry.append((relative, _BUSY_RETRY))
        elif isinstance(exc, ModelError):
            log.error("model failed on a file, marked failed path=%s error=%s", relative, exc)
            self._fail(relative, Failure(str(exc), *version), batch, content_gone=False)
        elif isinstance(exc, UnrecognisedImageError) and not has_image_suffix(relative):
            with self._lock:
                self._ignored[relative] = version  # a sidecar or document, not an image
                self._failures_changed = True
            if relative in self._indexed:
                batch.delete.append(relative)
            log.debug("ignoring non-image file path=%s", relative)
        elif time.time() - version[1] / 1e9 < _RECENT_WRITE:
            # Possibly a writer that pauses between chunks: look again before failing it.
            batch.retry.append((relative, _RECENT_WRITE / 4))
        else:
            self._fail(relative, Failure(str(exc), *version), batch, content_gone=True)

    def _fail_alone(self, relative: str, reason: str) -> None:
        """List one file failed outside of a batch (its batch could not be written)."""
        try:
            info = (self.root / relative).lstat()
        except OSError:
            return
        batch = _Batch()
        self._fail(
            relative, Failure(reason, info.st_size, info.st_mtime_ns), batch, content_gone=False
        )
        self._apply(batch, [])

    def _fail(self, relative: str, failure: Failure, batch: _Batch, *, content_gone: bool) -> None:
        """List the file as failed. When its content is gone (no longer an image we can read,
        not a regular file, too large), so are the vectors of what it was: a file that became
        undecodable must not stay the source of searches."""
        batch.failed[relative] = failure
        if content_gone and relative in self._indexed and relative not in batch.delete:
            batch.delete.append(relative)

    def _stored_for_content(
        self, state: FileState, known: FileState | None
    ) -> DescriptorSet | None:
        """Stored descriptors of identical content (touched, copied or moved file), if any."""
        if known is not None and known.sha256 == state.sha256:
            return self._store.descriptors_of([state.path]).get(state.path)
        recent = self._recently_deleted.get(state.sha256)
        if recent is not None:
            return recent
        return self._store.descriptors_with_sha256(state.sha256)

    def _remember_deleted(self, paths: list[str]) -> None:
        """Keep descriptors of deleted files a while: a move seen as delete + create reuses them."""
        if not paths:
            return
        for path, descriptors in self._store.descriptors_of(paths).items():
            known = self._indexed.get(path)
            if known is not None:
                self._recently_deleted[known.sha256] = descriptors
                self._recently_deleted.move_to_end(known.sha256)
        while len(self._recently_deleted) > _RECENTLY_DELETED:
            self._recently_deleted.popitem(last=False)

    def _embed(self, batch: _Batch) -> list[tuple[FileState, DescriptorSet]]:
        """Wait for the batch's embeddings; twins get their content's vectors (or its error)."""
        embedded: list[tuple[FileState, DescriptorSet]] = []
        outcome: dict[str, DescriptorSet | Exception] = {}  # by sha256
        for state, future in batch.embed:
            try:
                descriptors = future.result()
            except (InvalidImageError, ModelError, BusyError) as exc:
                outcome[state.sha256] = exc
                self._not_embedded(state, exc, batch)
                continue
            outcome[state.sha256] = descriptors
            embedded.append((state, descriptors))
        for twin in batch.twins:
            result = outcome[twin.sha256]
            if isinstance(result, Exception):
                self._not_embedded(twin, result, batch)
            else:
                batch.reuse.append((twin, result))
        return embedded

    def _apply(self, batch: _Batch, written: list[tuple[FileState, DescriptorSet]]) -> None:
        """Record in the mirrors what the store now holds, and take the batch off the queue's
        pending count in the same step."""
        with self._lock:
            for state, _ in written:
                self._indexed[state.path] = state
                if self._failures.pop(state.path, None) is not None:
                    self._failures_changed = True
            for relative in batch.delete:
                self._indexed.pop(relative, None)
            self._failures.update(batch.failed)
            self._failures_changed |= bool(batch.failed)
            self._queue.batch_done()
            for relative, delay in batch.retry:
                self.schedule(relative, delay)
        self._done_this_run += len(written)
        for relative, failure in batch.failed.items():
            log.warning("cannot index path=%s reason=%s", shown(relative), failure.reason)
        INDEX_OPERATIONS.labels("embedded").inc(len(written) - len(batch.reuse))
        INDEX_OPERATIONS.labels("reused").inc(len(batch.reuse))
        INDEX_OPERATIONS.labels("deleted").inc(len(batch.delete))
        INDEX_OPERATIONS.labels("failed").inc(len(batch.failed))
        self._record_progress(len(written))

    def _record_progress(self, done: int) -> None:
        self._progress.record(done)
        status = self.status()
        IMAGES_INDEXED.set(status.indexed)
        IMAGES_PENDING.set(status.pending)
        IMAGES_FAILED.set(status.failed)
        if done and self._progress.log_due(finished=status.pending == 0):
            log.info(
                "indexing progress indexed=%d pending=%d failed=%d rate=%.1f/s eta=%.0fs",
                status.indexed,
                status.pending,
                status.failed,
                status.rate,
                status.eta_seconds,
            )
