"""QdrantStore: the store on qdrant-client, a Qdrant server or its local (embedded) mode.

Local mode is brute force in Python (fine for thousands of images, slow beyond); it is the
opt-in `local` engine. A server is the way to scale out (HNSW, replication, snapshots).
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import grpc
import numpy as np
from numpy.typing import NDArray
from qdrant_client import QdrantClient, models
from qdrant_client import grpc as qdrant_grpc
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from imgsearch.descriptors import DescriptorSet
from imgsearch.errors import StoreBusyError, StoreUnavailableError
from imgsearch.ids import point_id
from imgsearch.store.base import (
    HNSW_EF,
    VECTOR_NAME,
    FileState,
    Hit,
    RawPoint,
    VectorStore,
    assemble,
    best_per_path,
    mismatch,
    paged,
    point_rows,
)

log = logging.getLogger(__name__)

# A server's graph searched as the embedded one is (Qdrant's own default is ef_construct);
# local mode searches exactly and warns at any search parameters.
_GRAPH_SEARCH = models.SearchParams(hnsw_ef=HNSW_EF)

_SCROLL_PAGE = 1024
# What qdrant-client raises when the server or the local files fail (not caller bugs).
_STORE_ERRORS = (
    UnexpectedResponse,
    ResponseHandlingException,
    grpc.RpcError,
    OSError,
    sqlite3.Error,  # local mode: disk full, I/O error, locked database
)


def _client(url: str | None, path: Path | None, api_key: str | None) -> QdrantClient:
    """A client of the server at `url`, or of the local-mode store at `path`."""
    if (url is None) == (path is None):
        raise ValueError("give exactly one of url (server) or path (embedded)")
    if url is not None:
        # No compatibility check: qdrant-client runs it in a thread of its own that warns at
        # some later moment; a server we cannot use fails our first call, with its reason.
        return QdrantClient(
            url=url, api_key=api_key, prefer_grpc=True, timeout=10, check_compatibility=False
        )
    assert path is not None
    path.mkdir(parents=True, exist_ok=True)
    if _locked_by_another(path):
        raise StoreBusyError(f"embedded store {path} is busy: another process has it open")
    try:
        return QdrantClient(path=str(path))
    except RuntimeError as exc:  # another process holds the embedded store's lock
        raise StoreBusyError(f"embedded store {path} is busy: {exc}") from exc


def _locked_by_another(path: Path) -> bool:
    """Whether the local-mode store's lock is taken. Checked before qdrant-client tries, since
    it leaves its lock file open when the lock is taken (a ResourceWarning per refusal)."""
    lock = path / ".lock"
    if not lock.is_file():
        return False
    with lock.open("r+") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
    return False


class QdrantStore(VectorStore):
    """The collection on a Qdrant server, or in qdrant-client's local mode."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        dimensions: int,
        model: str,
        *,
        local: bool,
        grouped: bool = False,
    ) -> None:
        super().__init__(collection, dimensions, model, local=local, grouped=grouped)
        self._client = client

    @classmethod
    def connect(
        cls,
        *,
        dimensions: int,
        model: str,
        collection: str,
        url: str | None = None,
        path: Path | None = None,
        api_key: str | None = None,
        grouped: bool = False,
    ) -> Self:
        """Connect to a server at `url`, or open a local-mode store at `path`."""
        client = _client(url, path, api_key)
        store = cls(client, collection, dimensions, model, local=url is None, grouped=grouped)
        try:
            store.ensure_collection()
        except BaseException:
            client.close()
            raise
        return store

    @classmethod
    def open_existing(
        cls, *, collection: str, url: str | None, path: Path | None, api_key: str | None
    ) -> Self | None:
        """Open `collection` with the vector size it was made with, or None if there is none."""
        client = _client(url, path, api_key)
        probe = cls(client, collection, 0, "(existing)", local=url is None)
        try:
            if not probe._call("collection_exists", lambda: client.collection_exists(collection)):
                client.close()
                return None
            size = probe._global_size()
        except BaseException:
            client.close()
            raise
        if not isinstance(size, int):
            client.close()
            raise StoreUnavailableError(f"collection {collection!r} has {size}")
        return cls(client, collection, size, "(existing)", local=url is None)

    def _is_store_error(self, exc: Exception) -> bool:
        # A closed local-mode client raises a bare RuntimeError: as unavailable as a closed
        # edge shard or an unreachable server, for the threads still holding the store.
        closed = isinstance(exc, RuntimeError) and "closed" in str(exc)
        return closed or isinstance(exc, _STORE_ERRORS)

    def ensure_collection(self) -> None:
        """Create the collection, or check that an existing one fits this model."""
        if not self._call(
            "collection_exists", lambda: self._client.collection_exists(self.collection)
        ):
            log.info("creating collection=%s dimensions=%d", self.collection, self.dimensions)
            self._call(
                "create_collection",
                lambda: self._client.create_collection(
                    self.collection,
                    vectors_config={
                        VECTOR_NAME: models.VectorParams(
                            size=self.dimensions, distance=models.Distance.COSINE
                        )
                    },
                ),
            )
            if not self.local:  # payload indexes have no effect in local mode
                self._call(
                    "create_payload_index",
                    lambda: self._client.create_payload_index(
                        self.collection, "region", models.PayloadSchemaType.INTEGER
                    ),
                )
                for field in ("folders", "sha256", "path"):
                    self._call(
                        "create_payload_index",
                        lambda field=field: self._client.create_payload_index(  # type: ignore[misc]
                            self.collection, field, models.PayloadSchemaType.KEYWORD
                        ),
                    )
            return
        found = self._global_size()
        if found != self.dimensions:
            raise mismatch(self.collection, found, self.model, self.dimensions)

    def _global_size(self) -> int | str:
        """The size of the collection's 'global' vectors (a text when it has none)."""
        info = self._call("get_collection", lambda: self._client.get_collection(self.collection))
        vectors = info.config.params.vectors
        params = vectors.get(VECTOR_NAME) if isinstance(vectors, dict) else None
        return params.size if params is not None else f"no {VECTOR_NAME!r} vector"

    def upsert(self, items: Sequence[tuple[FileState, DescriptorSet]]) -> None:
        """Write each file's region points, then its whole-image point (which carries the file
        state and so marks the file as indexed: a crash in between leaves it to be redone)."""
        points = [
            models.PointStruct(id=pid, vector={VECTOR_NAME: vector.tolist()}, payload=payload)
            for pid, vector, payload in point_rows(items, self.model)
        ]
        if not points:
            return
        self._call(
            "upsert",
            lambda: self._client.upsert(self.collection, points=points, wait=True),
        )

    def delete_paths(self, paths: Iterable[str]) -> None:
        """Delete every point (whole image and regions) of these files."""
        paths = list(paths)
        for start in range(0, len(paths), _SCROLL_PAGE):
            selector = models.FilterSelector(
                filter=_paths_filter(paths[start : start + _SCROLL_PAGE])
            )
            self._call(
                "delete",
                lambda selector=selector: self._client.delete(  # type: ignore[misc]
                    self.collection, points_selector=selector, wait=True
                ),
            )

    def search(
        self,
        queries: NDArray[np.float32],
        limit: int,
        *,
        subfolder: str | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """Best images for query vectors [Q, C]: each image scores its best (query, region) pair."""
        where = _in_folder(subfolder) if subfolder else None

        def query_all() -> list[models.ScoredPoint]:
            found: list[models.ScoredPoint] = []
            for vector in np.atleast_2d(queries):
                common: dict[str, Any] = {
                    "query": vector.tolist(),
                    "using": VECTOR_NAME,
                    "limit": limit,
                    "query_filter": where,
                    "score_threshold": min_score,
                    "with_payload": ["path", "box"],
                    "search_params": None if self.local else _GRAPH_SEARCH,
                }
                if self.grouped:
                    groups = self._client.query_points_groups(
                        self.collection, group_by="path", group_size=1, **common
                    ).groups
                    found += [group.hits[0] for group in groups]
                else:
                    found += self._client.query_points(self.collection, **common).points
            return found

        hits = []
        for point in self._call("query", query_all):
            payload = point.payload or {}
            hits.append(Hit(str(payload["path"]), float(point.score), tuple(payload["box"])))
        return best_per_path(hits, limit)

    def descriptors_of(self, paths: Sequence[str]) -> dict[str, DescriptorSet]:
        """Stored descriptor sets of fully indexed paths (others are left out)."""
        points = self._scroll(_paths_filter(list(paths)), ["path", "region", "box"], True)
        return assemble((point.payload or {}, _vector(point)) for point in points)

    def _retrieve(
        self, paths: Sequence[str], with_vector: bool
    ) -> list[tuple[dict[str, Any], NDArray[np.float32] | None]]:
        if not paths:
            return []
        records = self._call(
            "retrieve",
            lambda: self._client.retrieve(
                self.collection,
                ids=[point_id(p) for p in paths],
                with_payload=["path"],
                with_vectors=[VECTOR_NAME] if with_vector else False,
            ),
        )
        return [(dict(r.payload or {}), _vector(r) if with_vector else None) for r in records]

    def _payload_with_sha256(self, sha256: str) -> dict[str, Any] | None:
        points, _ = self._call(
            "scroll",
            lambda: self._client.scroll(
                self.collection,
                scroll_filter=models.Filter(
                    must=[
                        models.FieldCondition(key="sha256", match=models.MatchValue(value=sha256))
                    ]
                ),
                limit=1,
                with_payload=["model", "path"],
                with_vectors=False,
            ),
        )
        return dict(points[0].payload or {}) if points else None

    def _whole_images(
        self, fields: list[str], with_vector: bool
    ) -> Iterator[tuple[dict[str, Any], NDArray[np.float32] | None]]:
        for point in self._scroll(_WHOLE_IMAGES, fields, with_vector):
            yield dict(point.payload or {}), _vector(point) if with_vector else None

    def _scroll(
        self,
        where: models.Filter | None,
        payload: list[str] | bool,
        with_vectors: bool,
        page_size: int = _SCROLL_PAGE,
    ) -> Iterator[models.Record]:
        def fetch(
            offset: models.ExtendedPointId | qdrant_grpc.PointId | None,
        ) -> tuple[list[models.Record], models.ExtendedPointId | qdrant_grpc.PointId | None]:
            return self._call(
                "scroll",
                lambda: self._client.scroll(
                    self.collection,
                    scroll_filter=where,
                    limit=page_size,
                    offset=offset,
                    with_payload=payload,
                    with_vectors=[VECTOR_NAME] if with_vectors else False,
                ),
            )

        return paged(fetch)

    def ping(self) -> None:
        """Raise StoreUnavailableError unless the store answers."""
        self._call("ping", lambda: self._client.collection_exists(self.collection))

    def count(self) -> int:
        """Number of indexed images (not points: each image has one point per region)."""
        return self._call(
            "count",
            lambda: (
                self._client.count(self.collection, count_filter=_WHOLE_IMAGES, exact=True).count
            ),
        )

    def close(self) -> None:
        with self._lock:
            self._client.close()

    # ---- raw points (backup and restore) ----

    def point_count(self) -> int:
        return self._call("count", lambda: self._client.count(self.collection, exact=True).count)

    def payload_indexes(self) -> dict[str, str]:
        info = self._call("get_collection", lambda: self._client.get_collection(self.collection))
        return {name: str(schema.data_type.value) for name, schema in info.payload_schema.items()}

    @staticmethod
    def _vector_of(record: Any) -> NDArray[np.float32]:  # noqa: ANN401 - the engine's record
        return _vector(record)

    def write_raw(self, points: Sequence[RawPoint]) -> None:
        if not points:
            return
        structs = [
            models.PointStruct(id=p.id, vector={VECTOR_NAME: p.vector}, payload=p.payload)
            for p in points
        ]
        self._call(
            "upsert", lambda: self._client.upsert(self.collection, points=structs, wait=True)
        )


_WHOLE_IMAGES = models.Filter(
    must=[models.FieldCondition(key="region", match=models.MatchValue(value=0))]
)


def _paths_filter(paths: list[str]) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="path", match=models.MatchAny(any=paths))])


def _in_folder(folder: str) -> models.Filter:
    return models.Filter(
        must=[
            models.FieldCondition(key="folders", match=models.MatchValue(value=folder.strip("/")))
        ]
    )


def _vector(record: models.Record) -> NDArray[np.float32]:
    vectors = record.vector
    assert isinstance(vectors, dict), "named vectors expected"
    return np.asarray(vectors[VECTOR_NAME], dtype=np.float32)
