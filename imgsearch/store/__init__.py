"""Where vectors live: `open_store` picks the engine for a `StoreLocation`.

Three engines sit behind the one interface (`imgsearch.store.base.VectorStore`):

- a Qdrant server (`url`), through qdrant-client (`QdrantStore`);
- qdrant-edge-py, Qdrant's Rust engine in this process (`EdgeStore`, the default embedded
  engine: fast writes and search at 100k+ images);
- qdrant-client's local mode (`QdrantStore` on a `path`, opt-in `engine=local`): pure
  Python brute force, kept for small folders and for comparison.

Importing this package loads no model or image library: backup, restore and optimize start
without the ML stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgsearch.settings import DEFAULT_COLLECTION, StoreEngine, StoreSettings
from imgsearch.store.base import VECTOR_NAME, FileState, Hit, RawPoint, VectorStore

__all__ = [
    "VECTOR_NAME",
    "FileState",
    "Hit",
    "RawPoint",
    "StoreEngine",
    "StoreLocation",
    "VectorStore",
    "collection_for",
    "open_existing_store",
    "open_store",
]


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where a collection lives: an embedded store folder (`path`, of `engine`) or a server."""

    path: Path | None = None
    url: str | None = None
    api_key: str | None = None
    engine: StoreEngine = StoreEngine.EDGE  # of the embedded store at `path`

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path (embedded) or url (server)")

    def __str__(self) -> str:
        if self.path is not None:
            return f"embedded store {self.path} ({self.engine} engine)"
        return f"server {self.url}"


def open_store(
    location: StoreLocation,
    *,
    collection: str,
    dimensions: int,
    model: str,
    grouped: bool = False,
) -> VectorStore:
    """Open (creating if missing) `collection` for vectors of `dimensions`; an existing one
    of another size raises StoreMismatchError, a locked embedded one StoreBusyError (the
    services also check the model: VectorStore.check_model)."""
    if location.path is not None and location.engine is StoreEngine.EDGE:
        from imgsearch.store.edge import EdgeStore

        return EdgeStore.open_path(
            location.path,
            collection=collection,
            dimensions=dimensions,
            model=model,
            grouped=grouped,
        )
    from imgsearch.store.qdrant import QdrantStore

    return QdrantStore.connect(
        dimensions=dimensions,
        model=model,
        collection=collection,
        url=location.url,
        path=location.path,
        api_key=location.api_key,
        grouped=grouped,
    )


def collection_for(settings: StoreSettings, model_key: str) -> str:
    """The collection a model's vectors go to: the one named, if one is (checked against the
    model, like a server's); else on a server `images`, and in an embedded index one per
    model, `images-<model key>` (switching models then indexes beside the old vectors, and
    switching back finds them)."""
    if settings.collection:
        return settings.collection
    return DEFAULT_COLLECTION if settings.qdrant_url else f"{DEFAULT_COLLECTION}-{model_key}"


def open_existing_store(location: StoreLocation, *, collection: str) -> VectorStore | None:
    """Open `collection` with the vector size it was made with (no model at hand: backups,
    maintenance), or None when it does not exist; nothing is created."""
    if location.path is not None and location.engine is StoreEngine.EDGE:
        from imgsearch.store.edge import EdgeStore

        return EdgeStore.open_existing(location.path, collection=collection)
    from imgsearch.store.qdrant import QdrantStore

    return QdrantStore.open_existing(
        collection=collection, url=location.url, path=location.path, api_key=location.api_key
    )
