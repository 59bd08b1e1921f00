"""The folder an index belongs to: checked at start-up, and bound to its index.

A data directory's embedded index holds one folder's images. Started on another folder it
would keep the first folder's files (the mass-delete guard holds them back) and searches would
name files that are not in the watched folder, so the index records its folder's path and
refuses another one with what to do instead. An empty index takes any folder.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from imgsearch.errors import FolderError, StoreUnavailableError
from imgsearch.settings import BUNDLED_SAMPLES, Settings
from imgsearch.store import VectorStore

log = logging.getLogger(__name__)


def prepare_folder(settings: Settings, store: VectorStore) -> Path:
    """The folder to index, checked and bound to the store; with none configured, a writable
    copy of the bundled samples. Raises FolderError for a file, for a missing folder that
    nothing was indexed from yet, and for another folder than the index's own."""
    folder = settings.watched_folder
    if settings.index.folder is None and not folder.exists():
        shutil.copytree(BUNDLED_SAMPLES, folder, ignore=shutil.ignore_patterns("NOTICE"))
        log.info("no folder given: serving a copy of the bundled samples folder=%s", folder)
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"{folder} is a file, not a folder of images")
    indexed = _count(store)
    if not folder.exists():
        if indexed == 0:
            raise FolderError(
                f"folder {folder} does not exist, and nothing is indexed from it yet: "
                "check the path"
            )
        # An unmounted disk: keep the index and wait for the folder to come back.
        log.error("watched folder is missing; index of %s images kept folder=%s", indexed, folder)
    if settings.store.qdrant_url is None:
        _bind(settings, store.collection, folder, indexed)
    return folder


def _count(store: VectorStore) -> int | None:
    """Images in the index, or None when the store cannot say now (it is retried later)."""
    try:
        return store.count()
    except StoreUnavailableError as exc:
        log.warning("cannot count the index at start-up error=%s", exc)
        return None


def _bind(settings: Settings, collection: str, folder: Path, indexed: int | None) -> None:
    """Record `folder` as the embedded index's folder, or refuse when it holds another's."""
    marker = settings.store.engine_store_path / f"{collection}.folder"
    try:
        recorded = marker.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        recorded = None
    if recorded not in (None, str(folder)) and indexed != 0:
        raise FolderError(
            f"the index in {settings.store.data_dir} holds "
            f"{'the' if indexed is None else indexed} images of {recorded}, not of {folder}: "
            "give this folder an index of its own with --data DIR (IMGSEARCH_DATA_DIR), or "
            f"start over on it by deleting {settings.store.engine_store_path}"
        )
    if recorded != str(folder):
        marker.parent.mkdir(parents=True, exist_ok=True)
        partial = marker.with_suffix(".partial")
        partial.write_text(f"{folder}\n", encoding="utf-8")
        partial.replace(marker)
