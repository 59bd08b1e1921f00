"""Maps watchdog events on the folder to indexer work; decides nothing itself."""

from __future__ import annotations

import logging
import stat
import threading
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from imgsearch.embedder.indexer import Indexer
from imgsearch.metrics import FOLDER_AVAILABLE, WATCHER_EVENTS
from imgsearch.paths import is_candidate, relative_to_root
from imgsearch.settings import WatchMode

log = logging.getLogger(__name__)

_FILE_CHANGES = {EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_DELETED}


class _EventHandler(FileSystemEventHandler):
    def __init__(self, root: Path, indexer: Indexer, *, native: bool) -> None:
        self._root = root
        self._indexer = indexer
        # Only native observers report close-after-write; polling sees modifications only.
        self._native = native

    def on_any_event(self, event: FileSystemEvent) -> None:
        WATCHER_EVENTS.labels(event.event_type).inc()
        source = relative_to_root(self._root, _text(event.src_path))
        dest = relative_to_root(self._root, _text(event.dest_path)) if event.dest_path else None
        if event.is_directory:
            self._on_folder(event.event_type, source, dest)
        elif event.event_type == EVENT_TYPE_MODIFIED and self._native:
            if source is not None and is_candidate(source):
                self._indexer.note_written(source)
        elif event.event_type == EVENT_TYPE_CLOSED:
            if source is not None and is_candidate(source):
                self._indexer.note_closed(source)
        elif event.event_type in _FILE_CHANGES:
            self._look_at(source)
        elif event.event_type == EVENT_TYPE_MOVED:
            # Same due time for both ends, so one batch sees the move and reuses the vector.
            self._look_at(source)
            self._look_at(dest)

    def _on_folder(self, event_type: str, source: str | None, dest: str | None) -> None:
        if source is None:  # the watched folder itself: the periodic scan copes with it
            if event_type in (EVENT_TYPE_DELETED, EVENT_TYPE_MOVED):
                self._indexer.request_rescan()
            return
        if event_type == EVENT_TYPE_CREATED:
            self._indexer.schedule_folder(source)
        elif event_type == EVENT_TYPE_DELETED:
            self._indexer.forget_folder(source)
        elif event_type == EVENT_TYPE_MOVED:
            self._indexer.forget_folder(source)
            if dest is not None:
                self._indexer.schedule_folder(dest)

    def _look_at(self, relative: str | None) -> None:
        if relative is not None and is_candidate(relative):
            self._indexer.schedule(relative)


def _text(path: str | bytes) -> str:
    return path.decode() if isinstance(path, bytes) else path


class FolderWatcher:
    """Runs a watchdog observer on the folder and keeps it running.

    A supervisor re-checks the folder every `check_interval`: when the folder disappears
    (unmount, deletion) the observer is stopped and the index is left alone; when it comes
    back (or is replaced by another folder at the same path) a new observer starts and the
    indexer rescans, since events from the gap are lost.
    """

    def __init__(
        self,
        root: Path,
        indexer: Indexer,
        mode: WatchMode,
        poll_interval: float = 1.0,
        check_interval: float = 1.0,
    ) -> None:
        self._root = root
        self._indexer = indexer
        self._mode = mode
        self._poll_interval = poll_interval
        self._check_interval = check_interval
        self._observer: BaseObserver | None = None
        self._watched_inode: int | None = None
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="watcher", daemon=True)
        self.kind = ""

    def start(self) -> None:
        self._ensure_watching()
        self._supervisor.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=10)
        self._stop_observer()

    def _supervise(self) -> None:
        while not self._stopping.wait(self._check_interval):
            try:
                self._ensure_watching()
            except Exception:
                log.exception("watcher supervision failed; retrying")

    def _ensure_watching(self) -> None:
        try:
            info = self._root.stat()
            inode = info.st_ino if stat.S_ISDIR(info.st_mode) else None
        except OSError:
            inode = None
        if inode is None:
            if self._observer is not None or self._watched_inode is None:
                log.error("watched folder is missing; index kept, waiting folder=%s", self._root)
                self._stop_observer()
                self._watched_inode = -1
                # The observer may have died with the folder before it reported anything (a
                # polling snapshot of a vanished folder fails): the indexer's scan is what
                # notices the folder is gone, so ask for one rather than wait for its timer.
                self._indexer.request_rescan()
            FOLDER_AVAILABLE.set(0)
            return
        alive = self._observer is not None and self._observer.is_alive()
        if alive and inode == self._watched_inode:
            return
        restored = self._watched_inode is not None
        self._stop_observer()
        self._observer = self._start_observer()
        self._watched_inode = inode
        FOLDER_AVAILABLE.set(1)
        if restored:
            log.warning("watched folder is back; rescanning folder=%s", self._root)
            self._indexer.request_rescan()

    def _start_observer(self) -> BaseObserver:
        if self._mode != WatchMode.POLLING:
            try:
                return self._run(Observer(), "native")
            except OSError as exc:
                # inotify watch limits, or a file system that gives no events.
                if self._mode == WatchMode.NATIVE:
                    raise
                log.warning("native file events unavailable (%s), polling instead", exc)
        return self._run(PollingObserver(timeout=self._poll_interval), "polling")

    def _run(self, observer: BaseObserver, kind: str) -> BaseObserver:
        handler = _EventHandler(self._root, self._indexer, native=kind == "native")
        observer.schedule(handler, str(self._root), recursive=True)
        observer.start()
        self.kind = kind
        log.info("watching folder=%s observer=%s", self._root, kind)
        return observer

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        self.kind = ""
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=10)
