"""Maps watchdog events on the folder to indexer work; decides nothing itself."""

from __future__ import annotations

import logging
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

from embedder.indexer import Indexer
from imgsearch.metrics import WATCHER_EVENTS
from imgsearch.paths import is_candidate, relative_to_root
from imgsearch.settings import WatchMode

log = logging.getLogger(__name__)

_FILE_CHANGES = {EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED, EVENT_TYPE_DELETED}


class _EventHandler(FileSystemEventHandler):
    def __init__(self, root: Path, indexer: Indexer) -> None:
        self._root = root
        self._indexer = indexer

    def on_any_event(self, event: FileSystemEvent) -> None:
        WATCHER_EVENTS.labels(event.event_type).inc()
        source = relative_to_root(self._root, _text(event.src_path))
        dest = relative_to_root(self._root, _text(event.dest_path)) if event.dest_path else None
        if event.is_directory:
            self._on_folder(event.event_type, source, dest)
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
    """Runs a watchdog observer on the folder: native events, polling, or native with fallback."""

    def __init__(
        self, root: Path, indexer: Indexer, mode: WatchMode, poll_interval: float = 1.0
    ) -> None:
        self._root = root
        self._handler = _EventHandler(root, indexer)
        self._mode = mode
        self._poll_interval = poll_interval
        self._observer: BaseObserver | None = None
        self.kind = ""

    def start(self) -> None:
        if self._mode != WatchMode.POLLING:
            try:
                self._observer = self._start(Observer(), "native")
                return
            except OSError as exc:
                # inotify watch limits, or a file system that gives no events.
                if self._mode == WatchMode.NATIVE:
                    raise
                log.warning("native file events unavailable (%s), polling instead", exc)
        self._observer = self._start(PollingObserver(timeout=self._poll_interval), "polling")

    def _start(self, observer: BaseObserver, kind: str) -> BaseObserver:
        observer.schedule(self._handler, str(self._root), recursive=True)
        observer.start()
        self.kind = kind
        log.info("watching folder=%s observer=%s", self._root, kind)
        return observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
