"""Back up one collection to a single file and restore it, embedded store or Qdrant server alike.

One code path for every engine, through the store interface alone (`raw_points`,
`write_raw`, `payload_indexes`): a backup pages through every point (id, the "global"
vector, the payload) and a restore writes them back in batches. A missing collection is
created by `open_store`, so it gets the same vector and payload indexes as one the services
create. Restoring therefore re-embeds nothing. On a server, Qdrant's own snapshots (see
docs/operations.md) are the faster way.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from imgsearch.errors import (
    ImgsearchError,
    StoreBusyError,
    StoreMismatchError,
    StoreUnavailableError,
)
from imgsearch.store import StoreLocation, VectorStore, open_existing_store, open_store
from imgsearch.store.base import DISTANCE, VECTOR_NAME, RawPoint

log = logging.getLogger(__name__)

FORMAT = "imgsearch-backup"
FORMAT_VERSION = 1
_PAGE = 256


class BackupError(ImgsearchError):
    """A backup cannot be made or restored: store busy or missing, file damaged, wrong shape."""


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


def backup_to_file(location: StoreLocation, collection: str, out: Path) -> int:
    """Write every point of `collection` to `out`; returns the number of points. The file
    appears only when complete."""
    with _opened(location, collection, dimensions=None) as store:
        header = Header(
            collection=collection,
            size=store.dimensions,
            distance=DISTANCE,
            payload_indexes=store.payload_indexes(),
        )
        records = (_raw_json(point, store.dimensions) for point in store.raw_points(_PAGE))
        return _write_backup(out, header, records)


def restore_from_file(
    location: StoreLocation, collection: str, source: Path, *, merge: bool = False
) -> int:
    """Load the backup `source` into `collection` (created if missing, into an empty one
    unless `merge`); returns the number of points, which must be what the trailer says."""
    header, expected = verify(source)
    if header.distance != DISTANCE:
        raise BackupError(f"imgsearch collections use cosine distance, not {header.distance}")
    with _opened(location, collection, dimensions=header.size) as store:
        existing = store.point_count()
        if existing and not merge:
            raise BackupError(
                f"collection {collection!r} already holds {existing} points: restore into an "
                "empty one, or pass --merge to upsert over them"
            )
        done = 0
        batch: list[RawPoint] = []
        for point in _points(source, header.size):
            batch.append(point)
            if len(batch) >= _PAGE:
                store.write_raw(batch)
                done += len(batch)
                batch = []
        store.write_raw(batch)
        done += len(batch)
    if done != expected:
        raise BackupError(f"{source}: restored {done} points, expected {expected}")
    log.info("restore done collection=%s points=%d file=%s", collection, done, source)
    return done


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


# ---- helpers -------------------------------------------------------------------------------


@contextmanager
def _opened(
    location: StoreLocation, collection: str, *, dimensions: int | None
) -> Iterator[VectorStore]:
    """The collection for a backup (`dimensions` None: it must exist, with its own size) or
    a restore (created with `dimensions` if missing); store failures become BackupError."""
    if dimensions is None and location.path is not None and not location.path.is_dir():
        raise BackupError(f"no embedded store at {location.path}")
    try:
        if dimensions is None:
            store = open_existing_store(location, collection=collection)
            if store is None:
                raise BackupError(f"collection {collection!r} does not exist")
        else:
            store = open_store(
                location, collection=collection, dimensions=dimensions, model="(restore)"
            )
    except StoreBusyError as exc:
        raise BackupError(
            f"{location} is in use by another process (stop the service first): {exc}"
        ) from exc
    except StoreMismatchError as exc:
        raise BackupError(f"collection {collection!r} does not fit the backup: {exc}") from exc
    except StoreUnavailableError as exc:
        raise BackupError(f"cannot open {location}: {exc}") from exc
    try:
        yield store
    except StoreUnavailableError as exc:
        raise BackupError(f"{store.engine_name} call failed: {exc}") from exc
    finally:
        store.close()


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


def _points(source: Path, size: int) -> Iterator[RawPoint]:
    """The points of a verified backup file, in order."""
    with _open(source, "r") as stream:
        next(stream)  # header, already checked
        for number, line in enumerate(stream, start=2):
            item = _parse(source, number, line)
            if item.get("end") is True:
                return
            yield _raw_point(source, number, item, size)


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
