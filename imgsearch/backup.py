"""Back up one collection to a single file and restore it, embedded store or Qdrant server alike.

Qdrant's local (embedded) mode has no snapshot API, so the backup is a portable export made
with the calls both modes have: a paged `scroll` that reads every point (id, the "global"
vector, the payload) and batched `upsert`s that write them back. A missing collection is
created by `VectorStore` itself, so it gets the same vector and payload indexes as one the
services create. Restoring therefore re-embeds
nothing. On a server, Qdrant's own snapshots (see docs/operations.md) are the faster way.

The file is JSON Lines, gzip-compressed when its name ends in ``.gz``: a header line (format,
version, vector size and distance, payload indexes), one line per point with the vector as
base64 little-endian float32 (exact), and a trailer line with the point count, so that a
truncated file is refused before anything is written.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import grpc
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client import grpc as qdrant_grpc
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from imgsearch.errors import ImgsearchError, StoreMismatchError, StoreUnavailableError
from imgsearch.settings import StoreEngine
from imgsearch.store import VECTOR_NAME, RawPoint, VectorStore
from imgsearch.store.edge import EdgeStore

log = logging.getLogger(__name__)

FORMAT = "imgsearch-backup"
FORMAT_VERSION = 1
_PAGE = 256
_T = TypeVar("_T")


class BackupError(ImgsearchError):
    """A backup cannot be made or restored: store busy or missing, file damaged, wrong shape."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a collection lives: an embedded store folder (`path`, of `engine`) or a server."""

    path: Path | None = None
    url: str | None = None
    api_key: str | None = None
    engine: StoreEngine = StoreEngine.EDGE  # of the embedded store at `path`

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path (embedded) or url (server)")

    @property
    def local(self) -> bool:
        return self.path is not None

    @property
    def edge(self) -> bool:
        """An embedded qdrant-edge store: read and written through EdgeStore, not a client."""
        return self.path is not None and self.engine is StoreEngine.EDGE

    def __str__(self) -> str:
        if self.path is not None:
            return f"embedded store {self.path} ({self.engine} engine)"
        return f"server {self.url}"

    def connect(self, *, create: bool) -> QdrantClient:
        """Open the store; an embedded one must exist unless `create` (restore)."""
        if self.url is not None:
            return QdrantClient(url=self.url, api_key=self.api_key, prefer_grpc=True, timeout=60)
        assert self.path is not None
        if not create and not self.path.is_dir():
            raise BackupError(f"no embedded store at {self.path}")
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            return QdrantClient(path=str(self.path))
        except RuntimeError as exc:  # the lock of a running service
            raise BackupError(
                f"{self} is in use by another process (stop the service first): {exc}"
            ) from exc

    def open_edge(self, collection: str, *, dimensions: int | None) -> EdgeStore:
        """Open the qdrant-edge shard of `collection`: an existing one (`dimensions` None,
        a backup) or one of that size, created if missing (a restore)."""
        assert self.path is not None
        try:
            if dimensions is None:
                if not self.path.is_dir():
                    raise BackupError(f"no embedded store at {self.path}")
                store = EdgeStore.open_existing(self.path, collection=collection)
                if store is None:
                    raise BackupError(f"collection {collection!r} does not exist")
                return store
            return EdgeStore.open_path(
                self.path, collection=collection, dimensions=dimensions, model="(restore)"
            )
        except StoreMismatchError as exc:
            raise BackupError(f"collection {collection!r} does not fit the backup: {exc}") from exc
        except StoreUnavailableError as exc:
            if "busy" in str(exc):
                raise BackupError(
                    f"{self} is in use by another process (stop the service first): {exc}"
                ) from exc
            raise BackupError(f"cannot open {self}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Header:
    collection: str
    size: int
    distance: str
    payload_indexes: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "collection": self.collection,
            "vector": VECTOR_NAME,
            "size": self.size,
            "distance": self.distance,
            "payload_indexes": self.payload_indexes,
        }


def backup_to_file(target: Target, collection: str, out: Path) -> int:
    """Write every point of `collection` to `out`; returns the number of points."""
    if target.edge:
        store = target.open_edge(collection, dimensions=None)
        try:
            return backup_edge(store, out)
        finally:
            store.close()
    with _client(target, create=False) as client:
        return backup(client, collection, out)


def restore_from_file(target: Target, collection: str, source: Path, *, merge: bool = False) -> int:
    """Load the backup `source` into `collection` (created if missing); returns the count."""
    header, expected = verify(source)
    if target.edge:
        if header.distance != models.Distance.COSINE.value:
            raise BackupError(f"imgsearch collections use cosine distance, not {header.distance}")
        store = target.open_edge(collection, dimensions=header.size)
        try:
            return restore_edge(store, source, header, expected, merge=merge)
        finally:
            store.close()
    _ensure_collection(target, collection, header)
    with _client(target, create=True) as client:
        return restore(client, collection, source, header, expected, merge=merge)


def backup(client: QdrantClient, collection: str, out: Path, *, page_size: int = _PAGE) -> int:
    """Stream the collection into `out` page by page; the file appears only when complete."""
    if not _store_call(lambda: client.collection_exists(collection)):
        raise BackupError(f"collection {collection!r} does not exist")
    info = _store_call(lambda: client.get_collection(collection))
    params = _global_params(info, collection)
    header = Header(
        collection=collection,
        size=params.size,
        distance=str(params.distance.value),
        payload_indexes={
            name: str(schema.data_type.value) for name, schema in info.payload_schema.items()
        },
    )

    def records() -> Iterator[dict[str, Any]]:
        offset: models.ExtendedPointId | qdrant_grpc.PointId | None = None
        while True:
            page, offset = _store_call(
                lambda offset=offset: client.scroll(  # type: ignore[misc]
                    collection,
                    limit=page_size,
                    offset=offset,
                    with_payload=True,
                    with_vectors=[VECTOR_NAME],
                )
            )
            for record in page:
                yield _point_json(record, params.size)
            if offset is None:
                return

    return _write_backup(out, header, records())


def backup_edge(store: EdgeStore, out: Path, *, page_size: int = _PAGE) -> int:
    """The same file from a qdrant-edge shard."""
    header = Header(
        collection=store.collection,
        size=store.dimensions,
        distance=models.Distance.COSINE.value,
        payload_indexes=_edge_call(store.payload_indexes),
    )

    def records() -> Iterator[dict[str, Any]]:
        try:
            for point in store.raw_points(page_size):
                yield _raw_json(point, store.dimensions)
        except StoreUnavailableError as exc:
            raise BackupError(f"qdrant-edge call failed: {exc}") from exc

    return _write_backup(out, header, records())


def _write_backup(out: Path, header: Header, records: Iterator[dict[str, Any]]) -> int:
    """Stream header, points and trailer into `out`; the file appears only when complete."""
    partial = out.with_name(f"{out.stem}.partial{out.suffix}")  # same suffix: same compression
    count = 0
    try:
        with _open(partial, "w") as stream:
            _write_line(stream, header.to_json())
            for record in records:
                _write_line(stream, record)
                count += 1
            _write_line(stream, {"end": True, "points": count})
        with partial.open("rb") as written:  # on disk before it takes the final name
            os.fsync(written.fileno())
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    log.info("backup done collection=%s points=%d file=%s", header.collection, count, out)
    return count


def verify(source: Path) -> tuple[Header, int]:
    """Read the whole file once: a bad header, line, vector or a missing trailer is refused."""
    count = 0
    with _open(source, "r") as stream:
        header = _read_header(source, next(stream, ""))
        for number, line in enumerate(stream, start=2):
            item = _parse(source, number, line)
            if item.get("end") is True:
                if item.get("points") != count:
                    raise BackupError(
                        f"{source}: trailer says {item.get('points')} points, file holds {count}"
                    )
                if next(stream, None) is not None:
                    raise BackupError(f"{source}: data after the trailer line")
                return header, count
            _raw_point(source, number, item, header.size)
            count += 1
    raise BackupError(f"{source}: truncated: no trailer line after {count} points")


def restore(
    client: QdrantClient,
    collection: str,
    source: Path,
    header: Header,
    expected: int,
    *,
    merge: bool = False,
    batch_size: int = _PAGE,
) -> int:
    """Upsert the points of a verified backup into an existing collection of the same shape."""
    params = _global_params(_store_call(lambda: client.get_collection(collection)), collection)
    if params.size != header.size or params.distance.value != header.distance:
        raise BackupError(
            f"collection {collection!r} holds {params.size}-d {params.distance.value} vectors,"
            f" the backup {header.size}-d {header.distance}"
        )
    existing = _store_call(lambda: client.count(collection, exact=True).count)

    def write(batch: list[RawPoint]) -> None:
        points = [
            models.PointStruct(id=p.id, vector={VECTOR_NAME: p.vector}, payload=p.payload)
            for p in batch
        ]
        _store_call(lambda: client.upsert(collection, points=points, wait=True))

    return _restore_points(
        collection, source, header, expected, existing, write, merge=merge, batch_size=batch_size
    )


def restore_edge(
    store: EdgeStore,
    source: Path,
    header: Header,
    expected: int,
    *,
    merge: bool = False,
    batch_size: int = _PAGE,
) -> int:
    """The same into a qdrant-edge shard (opened with the backup's vector size)."""
    existing = _edge_call(store.point_count)
    return _restore_points(
        store.collection,
        source,
        header,
        expected,
        existing,
        lambda batch: _edge_call(lambda: store.write_raw(batch)),
        merge=merge,
        batch_size=batch_size,
    )


def _restore_points(
    collection: str,
    source: Path,
    header: Header,
    expected: int,
    existing: int,
    write: Callable[[list[RawPoint]], None],
    *,
    merge: bool,
    batch_size: int,
) -> int:
    """Write the points of a verified backup in batches, into an empty collection unless
    `merge`; the count must come out as the trailer says."""
    if existing and not merge:
        raise BackupError(
            f"collection {collection!r} already holds {existing} points: restore into an "
            "empty one, or pass --merge to upsert over them"
        )
    done = 0
    with _open(source, "r") as stream:
        next(stream)  # header, already checked
        batch: list[RawPoint] = []
        for number, line in enumerate(stream, start=2):
            item = _parse(source, number, line)
            if item.get("end") is True:
                break
            batch.append(_raw_point(source, number, item, header.size))
            if len(batch) >= batch_size:
                write(batch)
                done += len(batch)
                batch = []
        if batch:
            write(batch)
            done += len(batch)
    if done != expected:
        raise BackupError(f"{source}: restored {done} points, expected {expected}")
    log.info("restore done collection=%s points=%d file=%s", collection, done, source)
    return done


# ---- helpers -------------------------------------------------------------------------------


@contextmanager
def _client(target: Target, *, create: bool) -> Iterator[QdrantClient]:
    client = target.connect(create=create)
    try:
        yield client
    finally:
        client.close()


def _store_call(fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except (UnexpectedResponse, ResponseHandlingException, grpc.RpcError, OSError) as exc:
        raise BackupError(f"qdrant call failed: {exc}") from exc


def _global_params(info: models.CollectionInfo, collection: str) -> models.VectorParams:
    vectors = info.config.params.vectors
    params = vectors.get(VECTOR_NAME) if isinstance(vectors, dict) else None
    if params is None:
        raise BackupError(f"collection {collection!r} has no {VECTOR_NAME!r} vector")
    return params


def _ensure_collection(target: Target, collection: str, header: Header) -> None:
    """Create a missing collection exactly as the services do (vector, payload indexes)."""
    if header.distance != models.Distance.COSINE.value:
        raise BackupError(f"imgsearch collections use cosine distance, not {header.distance}")
    try:
        store = VectorStore.open(
            dimensions=header.size,
            model="(restore)",
            collection=collection,
            url=target.url,
            path=target.path,
            api_key=target.api_key,
            engine=target.engine,
        )
    except StoreMismatchError as exc:
        raise BackupError(f"collection {collection!r} does not fit the backup: {exc}") from exc
    except StoreUnavailableError as exc:
        raise BackupError(f"cannot open {target}: {exc}") from exc
    store.close()


def _edge_call(fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except StoreUnavailableError as exc:
        raise BackupError(f"qdrant-edge call failed: {exc}") from exc


@contextmanager
def _open(path: Path, mode: Literal["r", "w"]) -> Iterator[IO[str]]:
    """A text stream on `path`, gzip when the name ends in .gz; I/O errors become BackupError."""
    try:
        if not path.name.endswith(".gz"):
            with path.open(mode, encoding="utf-8", newline="\n") as plain:
                yield plain
        elif mode == "r":
            with gzip.open(path, "rt", encoding="utf-8", newline="\n") as unpacked:
                yield unpacked
        else:
            with gzip.open(path, "wt", encoding="utf-8", newline="\n") as packed:
                yield packed
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BackupError(f"cannot {'read' if mode == 'r' else 'write'} {path}: {exc}") from exc


def _write_line(stream: IO[str], item: dict[str, Any]) -> None:
    stream.write(json.dumps(item, separators=(",", ":"), ensure_ascii=False))
    stream.write("\n")


def _point_json(record: models.Record, size: int) -> dict[str, Any]:
    vectors = record.vector
    if not isinstance(vectors, dict) or VECTOR_NAME not in vectors:
        raise BackupError(f"point {record.id} has no {VECTOR_NAME!r} vector")
    vector = np.asarray(vectors[VECTOR_NAME], dtype="<f4")
    if vector.shape != (size,):
        raise BackupError(f"point {record.id} has a vector of shape {vector.shape}")
    return {
        "id": record.id,
        "vector": base64.b64encode(vector.tobytes()).decode("ascii"),
        "payload": record.payload or {},
    }


def _raw_json(point: RawPoint, size: int) -> dict[str, Any]:
    vector = np.asarray(point.vector, dtype="<f4")
    if vector.shape != (size,):
        raise BackupError(f"point {point.id} has a vector of shape {vector.shape}")
    return {
        "id": point.id,
        "vector": base64.b64encode(vector.tobytes()).decode("ascii"),
        "payload": point.payload,
    }


def _read_header(source: Path, line: str) -> Header:
    item = _parse(source, 1, line) if line else {}
    if item.get("format") != FORMAT:
        raise BackupError(f"{source} is not an imgsearch backup")
    if item.get("version") != FORMAT_VERSION:
        raise BackupError(f"{source}: backup format version {item.get('version')} is not known")
    if item.get("vector") != VECTOR_NAME or not isinstance(item.get("size"), int):
        raise BackupError(f"{source}: header does not describe a {VECTOR_NAME!r} vector")
    return Header(
        collection=str(item.get("collection", "")),
        size=int(item["size"]),
        distance=str(item.get("distance", "Cosine")),
        payload_indexes={str(k): str(v) for k, v in dict(item.get("payload_indexes", {})).items()},
    )


def _parse(source: Path, number: int, line: str) -> dict[str, Any]:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BackupError(f"{source}:{number}: not a JSON line: {exc}") from exc
    if not isinstance(item, dict):
        raise BackupError(f"{source}:{number}: expected a JSON object")
    return item


def _raw_point(source: Path, number: int, item: dict[str, Any], size: int) -> RawPoint:
    point_id = item.get("id")
    if not isinstance(point_id, str | int) or isinstance(point_id, bool):
        raise BackupError(f"{source}:{number}: bad point id {point_id!r}")
    try:
        raw = base64.b64decode(str(item.get("vector", "")), validate=True)
    except ValueError as exc:
        raise BackupError(f"{source}:{number}: vector is not base64") from exc
    if len(raw) != 4 * size:
        raise BackupError(f"{source}:{number}: vector has {len(raw) // 4} values, not {size}")
    payload = item.get("payload")
    if not isinstance(payload, dict):
        raise BackupError(f"{source}:{number}: payload is not an object")
    vector = np.frombuffer(raw, dtype="<f4")
    return RawPoint(point_id, vector.tolist(), payload)
