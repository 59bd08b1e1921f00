"""EdgeStore: the default embedded store, on qdrant-edge-py (Qdrant's Rust engine in-process).

qdrant-client's local mode is brute force in Python (benchmarked: 227 ms per upserted image,
3 s per search at 1k images); the same points in a qdrant-edge shard upsert ~30x and search
~190x faster, with int8 scalar quantisation (rescored from the originals on disk) keeping
RAM small.

One shard directory per collection: `<path>/<collection>/`, beside a lock file
`<path>/<collection>.lock`. The engine admits one process per directory (its write-ahead log
is locked); the `flock` on the lock file turns a second process into a clear "busy" error.

Measured on qdrant-edge-py 0.9.0 (2 shared cores), which shaped the choices below:

- Every shard call holds the GIL for its whole duration. Calls are thus never concurrent in
  one process, and `optimize()` (the only way to build an HNSW graph) freezes every Python
  thread of the process while it runs: 16-21 s for 30k 512-d points, during which one
  search got through. The services share one process, so the shard never optimises
  itself: the indexing threshold is set beyond reach, the graph is built in a child process
  on a copy and swapped in (imgsearch.store.graph, or offline by `imgsearch optimize`), and
  the points written since are scanned on the int8 copy of the vectors (exact up to
  quantisation, linear in the points: 0.45 ms at 1k, 44 ms at 100k of one 1280-d vector;
  88 ms for a two-scale query over 10k images with 14 region points each, the feature-map
  backbone's regions).
  Deleted points stay as tombstones in their segment until the next build (which copies
  the live points only) or an offline optimize.
- Updates go through the shard's write-ahead log before `update` returns, so they survive
  a SIGKILL of the process without `flush()`; `close()` flushes the segments too.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import qdrant_edge as qe
from numpy.typing import NDArray

from imgsearch.descriptors import DescriptorSet
from imgsearch.errors import StoreBusyError, StoreUnavailableError
from imgsearch.ids import point_id
from imgsearch.metrics import STORE_ERRORS
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

_SCROLL_PAGE = 1024
# Qdrant's defaults, for the graph a build makes (live or offline).
_HNSW_M = 16
_HNSW_EF_CONSTRUCT = 100
# Segment size (KB) from which the optimizer would build a graph: never (see module docstring).
_NEVER_INDEX_KB = 10**9
# ... except in `build_graph` (offline): Qdrant's default, below which plain search is as fast.
GRAPH_MIN_SEGMENT_KB = 10_000
# Grouped stores: points fetched per wanted image before grouping by path (more if short).
_GROUP_FETCH = 8
_GROUP_FETCH_MAX = 65_536
_KEYWORD_FIELDS = ("folders", "sha256", "path")
# Payload indexes (path, sha256, folders, region) of new shards: mmapped from disk rather
# than held in memory (bench/results/speed/memory.md); a live graph build makes a new
# shard, so older shards move over at their next build.
PAYLOAD_INDEXES_ON_DISK = True
_CONFIG_FILE = "edge_config.json"  # written by qdrant-edge in the shard directory
_TEMP_SEGMENTS = "temp_segments"  # where qdrant-edge builds segments (graph builds)
# A live graph build (imgsearch.store.graph) makes `<collection>.next` beside the shard and
# swaps it in, keeping the shard it replaces as `<collection>.old` until the writes made
# meanwhile are replayed; then `.old` is renamed `.trash` (atomic) and deleted.
_NEXT_SUFFIX = ".next"
_OLD_SUFFIX = ".old"
_TRASH_SUFFIX = ".trash"
# Writes made while a copy is built are replayed on it: past this much vector data held for
# them (~130k points of 512-d: 45 min of indexing at 50 images/s), the copy is given up.
MAX_JOURNAL_BYTES = 256 * 2**20


def edge_config(dimensions: int, indexing_threshold_kb: int = _NEVER_INDEX_KB) -> qe.EdgeConfig:
    """Cosine vectors; int8 scalar quantisation pinned in RAM, the originals mmapped from disk
    for rescoring; payload on disk; no HNSW graph built by writes (unless a threshold is
    given, as the offline `build_graph` does)."""
    return qe.EdgeConfig(
        vectors={
            VECTOR_NAME: qe.EdgeVectorParams(
                size=dimensions,
                distance=qe.Distance.Cosine,
                quantization_config=qe.ScalarQuantizationConfig(
                    type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned
                ),
                memory=qe.Memory.Cold,
            )
        },
        hnsw_config=qe.HnswIndexConfig(
            m=_HNSW_M, ef_construct=_HNSW_EF_CONSTRUCT, full_scan_threshold=10_000
        ),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb),
        payload_memory=qe.Memory.Cold,
    )


_SEARCH_PARAMS = qe.SearchParams(
    hnsw_ef=HNSW_EF, quantization=qe.QuantizationSearchParams(rescore=True, oversampling=2.0)
)


@dataclass(frozen=True, slots=True)
class SwapTimes:
    """Where the pause of a graph swap goes, in seconds: searches and writes wait throughout."""

    close: float  # the old shard flushed and closed
    open: float  # the copy loaded (its graph mapped, its payload indexes opened)
    replay: float  # the writes journalled during the build applied to the copy
    commit: float  # the copy flushed, the old shard renamed away
    replayed: int  # journalled writes replayed (the builder applied those before them)


class EdgeStore(VectorStore):
    """Image descriptors in one qdrant-edge shard, in this process."""

    engine_name = "qdrant-edge"

    def __init__(
        self,
        shard: qe.EdgeShard,
        lock_fd: int,
        collection: str,
        dimensions: int,
        model: str,
        *,
        grouped: bool = False,
    ) -> None:
        super().__init__(collection, dimensions, model, local=True, grouped=grouped)
        self._shard = shard
        self._lock_fd: int | None = lock_fd
        self._directory: Path | None = None
        # Updates made since a live graph build began copying the shard (None: no build),
        # and how many points they write.
        self._journal: list[JournalEntry] | None = None
        self._journal_points = 0

    @classmethod
    def open_path(
        cls,
        path: Path,
        *,
        collection: str,
        dimensions: int,
        model: str,
        grouped: bool = False,
    ) -> Self:
        """Open (or create) the shard of `collection` under `path`, locked for this process."""
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(path / f"{collection}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreUnavailableError(f"embedded store {path}: {exc}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock_fd)
            raise StoreBusyError(
                f"embedded store {path} is busy: another process has it open ({exc})"
            ) from exc
        try:
            shard = _open_shard(path / collection, collection, dimensions, model)
        except BaseException:
            os.close(lock_fd)  # closing the descriptor releases the lock
            raise
        store = cls(shard, lock_fd, collection, dimensions, model, grouped=grouped)
        store._directory = path / collection
        return store

    @classmethod
    def open_existing(cls, path: Path, *, collection: str) -> Self | None:
        """Open the shard of `collection` under `path` with the vector size it was made with
        (backups: no model at hand), or None if there is none."""
        directory = path / collection
        if not (directory / _CONFIG_FILE).is_file():
            return None
        size = _stored_size(directory)
        if not isinstance(size, int):
            raise StoreUnavailableError(f"embedded store {directory} has {size}")
        return cls.open_path(path, collection=collection, dimensions=size, model="(backup)")

    def build_graph(self, min_segment_kb: int = GRAPH_MIN_SEGMENT_KB) -> int:
        """Offline maintenance (`imgsearch optimize`, with the service stopped): build the
        HNSW graph of every segment of at least `min_segment_kb` and purge deleted points.
        Searches then walk the graph (measured: 5 ms instead of 43 ms at 100k images) and
        points added later are scanned plainly until the next build. It cannot run inside
        the service: `optimize()` holds the GIL for minutes (~13 min per million vectors).
        Returns the number of vectors in a graph."""
        if self._directory is None:
            raise StoreUnavailableError("this shard was not opened from a directory")
        directory = str(self._directory)

        def build() -> None:
            self._shard.close()
            shard = qe.EdgeShard.load(directory, edge_config(self.dimensions, min_segment_kb))
            try:
                shard.optimize()
            finally:
                shard.close()
                # Back to the serving config: writes never build a graph.
                self._shard = qe.EdgeShard.load(directory, edge_config(self.dimensions))

        self._call("optimize", build)
        return self.graph_vectors()

    def graph_vectors(self) -> int:
        """How many vectors are searched through an HNSW graph (the rest are scanned)."""
        return int(self._call("info", self._shard.info).indexed_vectors_count)

    def vector_counts(self) -> tuple[int, int]:
        """(all vectors, those searched through an HNSW graph): the rest are scanned."""
        info = self._call("info", self._shard.info)
        return int(info.points_count), int(info.indexed_vectors_count)

    # ---- the live graph build (imgsearch.store.graph drives it) ----

    @property
    def directory(self) -> Path:
        if self._directory is None:
            raise StoreUnavailableError("this shard was not opened from a directory")
        return self._directory

    @property
    def copy_directory(self) -> Path:
        """Where a live graph build makes the shard's copy."""
        return _sibling(self.directory, _NEXT_SUFFIX)

    def copy_pages(self, page_size: int = _SCROLL_PAGE) -> Iterator[CopyPage]:
        """Every point, page by page, for a copy of the shard: each page is one short call,
        so searches and writes go on between pages; the writes are journalled from the
        first page on and `swap_in_copy` replays them on the copy."""
        with self._lock:
            self._journal = []
            self._journal_points = 0
        records: list[qe.Record] = []
        for record in self._scroll(None, True, True, page_size):
            records.append(record)
            if len(records) == page_size:
                yield _copy_page(records)
                records = []
        if records:
            yield _copy_page(records)

    def take_journal(self) -> list[JournalEntry]:
        """The writes journalled since the copy began (or since the last take), handed over
        for the builder to apply to the copy before the swap, so that the swap's pause
        replays only the writes made after; journalling goes on."""
        with self._lock:
            journal = self._journal
            if journal is None:
                raise StoreUnavailableError(_OUTPACED)
            self._journal, self._journal_points = [], 0
            return journal

    def abandon_copy(self) -> None:
        """Stop journalling for a copy that will not be swapped in, and delete it."""
        with self._lock:
            self._journal = None
        shutil.rmtree(self.copy_directory, ignore_errors=True)

    def swap_in_copy(self) -> SwapTimes:
        """Replace the shard by its finished copy (with its graph): the two directories swap
        by rename, the copy is opened once and the writes journalled since the builder last
        took them (`take_journal`) are replayed on it; only then is the old shard dropped (a
        kill at any point leaves one complete shard: `_recover_swap`). Searches and writes
        wait meanwhile, for each of the steps SwapTimes names (all GIL-holding engine calls);
        deleting the old shard's files comes after (a leftover is deleted on the next start)."""
        directory, copy = self.directory, self.copy_directory
        old, trash = _sibling(directory, _OLD_SUFFIX), _sibling(directory, _TRASH_SUFFIX)
        with self._lock:
            journal, self._journal = self._journal, None
            if journal is None:
                raise StoreUnavailableError(_OUTPACED)

            def swap() -> SwapTimes:
                started = time.perf_counter()
                self._shard.flush()
                self._shard.close()
                closed = time.perf_counter()
                try:
                    directory.rename(old)
                    copy.rename(directory)
                    _sync_directory(directory.parent)
                    self._shard = qe.EdgeShard.load(str(directory), edge_config(self.dimensions))
                except BaseException:
                    _recover_swap(directory)  # back to the shard as it was
                    self._shard = qe.EdgeShard.load(str(directory), edge_config(self.dimensions))
                    raise
                opened = time.perf_counter()
                for write in journal:
                    self._shard.update(write.operation(self.dimensions))
                replayed = time.perf_counter()
                self._shard.flush()
                old.rename(trash)  # the commit point: from here on the copy is the shard
                _sync_directory(directory.parent)
                return SwapTimes(
                    close=closed - started,
                    open=opened - closed,
                    replay=replayed - opened,
                    commit=time.perf_counter() - replayed,
                    replayed=len(journal),
                )

            times = self._call("swap", swap)
        shutil.rmtree(trash, ignore_errors=True)
        log.info(
            "graph swapped in shard=%s replayed_updates=%d close_s=%.2f open_s=%.2f "
            "replay_s=%.2f commit_s=%.2f",
            directory,
            times.replayed,
            times.close,
            times.open,
            times.replay,
            times.commit,
        )
        return times

    def _is_store_error(self, exc: Exception) -> bool:
        # qdrant-edge raises plain Exception for every engine failure (I/O, closed shard);
        # TypeError, ValueError and the like are bugs in the caller and stay as they are.
        return type(exc) is Exception or isinstance(exc, OSError)

    def ensure_collection(self) -> None:
        """The shard is the collection: created and checked when it is opened."""

    def upsert(self, items: Sequence[tuple[FileState, DescriptorSet]]) -> None:
        rows = list(point_rows(items, self.model))
        if rows:
            self._update("upsert", JournalEntry(upserted=_rows_page(rows)))

    def delete_paths(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        for start in range(0, len(paths), _SCROLL_PAGE):
            self._update("delete", JournalEntry(deleted_paths=paths[start : start + _SCROLL_PAGE]))

    def search(
        self,
        queries: NDArray[np.float32],
        limit: int,
        *,
        subfolder: str | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """qdrant-edge has no group-by: a grouped store fetches several points per wanted
        image and keeps each image's best, fetching more while too few images came back."""
        vectors = [v.tolist() for v in np.atleast_2d(queries)]
        where = _in_folder(subfolder) if subfolder else None
        fetch = limit * _GROUP_FETCH if self.grouped else limit
        while True:
            request = qe.QueryBatchRequest(
                [
                    qe.QueryRequest(
                        limit=fetch,
                        query=qe.Query.Nearest(vector, using=VECTOR_NAME),
                        filter=where,
                        score_threshold=min_score,
                        with_payload=["path", "box"],
                        params=_SEARCH_PARAMS,
                    )
                    for vector in vectors
                ]
            )
            batches = self._call("query", lambda request=request: self._shard.query_batch(request))  # type: ignore[misc]
            hits = [
                Hit(str(payload["path"]), float(p.score), tuple(payload["box"]))
                for points in batches
                for p in points
                if (payload := p.payload or {})
            ]
            ranked = best_per_path(hits, limit)
            short = any(len(points) == fetch for points in batches) and len(ranked) < limit
            if not self.grouped or not short or fetch >= _GROUP_FETCH_MAX:
                return ranked
            fetch *= 4

    def descriptors_of(self, paths: Sequence[str]) -> dict[str, DescriptorSet]:
        points = self._scroll(_match_any("path", list(paths)), ["path", "region", "box"], True)
        return assemble((p.payload or {}, _vector(p)) for p in points)

    def _retrieve(
        self, paths: Sequence[str], with_vector: bool
    ) -> list[tuple[dict[str, Any], NDArray[np.float32] | None]]:
        if not paths:
            return []
        records = self._call(
            "retrieve",
            lambda: self._shard.retrieve(
                [point_id(p) for p in paths],
                with_payload=["path"],
                with_vector=[VECTOR_NAME] if with_vector else False,
            ),
        )
        return [(dict(r.payload or {}), _vector(r) if with_vector else None) for r in records]

    def _payload_with_sha256(self, sha256: str) -> dict[str, Any] | None:
        request = qe.ScrollRequest(
            limit=1,
            filter=_match("sha256", sha256),
            with_payload=["model", "path"],
            with_vector=False,
        )
        records, _ = self._call("scroll", lambda: self._shard.scroll(request))
        return dict(records[0].payload or {}) if records else None

    def _whole_images(
        self, fields: list[str], with_vector: bool
    ) -> Iterator[tuple[dict[str, Any], NDArray[np.float32] | None]]:
        for record in self._scroll(_WHOLE_IMAGES, fields, with_vector):
            yield dict(record.payload or {}), _vector(record) if with_vector else None

    def ping(self) -> None:
        """Also checks that the store's files are still the ones open here: a data directory
        deleted (or replaced) under a running service would otherwise go unnoticed while its
        writes vanish, and a second service could take the lock."""
        lock_fd = self._lock_fd
        if lock_fd is not None and self._directory is not None:
            lock_file = self._directory.with_name(f"{self.collection}.lock")
            try:
                same = lock_file.stat().st_ino == os.fstat(lock_fd).st_ino
            except OSError:
                same = False
            if not same or not self._directory.is_dir():
                STORE_ERRORS.labels("ping").inc()
                raise StoreUnavailableError(
                    f"embedded store {self._directory} was deleted or replaced while in use: "
                    "restart the service (it re-indexes the folder)"
                )
        self._call("ping", self._shard.info)

    def count(self) -> int:
        request = qe.CountRequest(exact=True, filter=_WHOLE_IMAGES)
        return self._call("count", lambda: self._shard.count(request))

    def close(self) -> None:
        with self._lock:
            if self._lock_fd is None:
                return
            try:
                self._shard.flush()
                self._shard.close()
            except Exception as exc:  # noqa: BLE001 - closing anyway; the WAL has the data
                log.warning("closing the qdrant-edge shard failed error=%s", exc)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    # ---- raw points (backup and restore) ----

    def point_count(self) -> int:
        return self._call("count", lambda: self._shard.count(qe.CountRequest(exact=True)))

    def payload_indexes(self) -> dict[str, str]:
        schema = self._call("info", self._shard.info).payload_schema
        # PyO3 enums have no .name: str() gives "PayloadSchemaType.Keyword".
        return {
            name: str(info.data_type).rpartition(".")[2].lower() for name, info in schema.items()
        }

    @staticmethod
    def _vector_of(record: Any) -> NDArray[np.float32]:  # noqa: ANN401 - the engine's record
        return _vector(record)

    def write_raw(self, points: Sequence[RawPoint]) -> None:
        if points:
            rows = [(p.id, np.asarray(p.vector, dtype=np.float32), p.payload) for p in points]
            self._update("upsert", JournalEntry(upserted=_rows_page(rows)))

    # ---- helpers ----

    def _update(self, what: str, write: JournalEntry) -> None:
        """Apply a write, journalled while a copy is built."""
        operation = write.operation(self.dimensions)

        def apply() -> None:
            self._shard.update(operation)
            if self._journal is None:
                return
            self._journal_points += write.points
            if self._journal_points * 4 * self.dimensions <= MAX_JOURNAL_BYTES:
                self._journal.append(write)
            else:
                log.warning("graph build outpaced: too many writes since it began")
                self._journal = None

        self._call(what, apply)

    def _scroll(
        self,
        where: qe.Filter | None,
        payload: list[str] | bool,
        with_vector: bool,
        page_size: int = _SCROLL_PAGE,
    ) -> Iterator[qe.Record]:
        def fetch(offset: Any) -> tuple[list[qe.Record], Any]:  # noqa: ANN401 - engine's id type
            request = qe.ScrollRequest(
                offset=offset,
                limit=page_size,
                filter=where,
                with_payload=payload,
                with_vector=[VECTOR_NAME] if with_vector else False,
            )
            return self._call("scroll", lambda: self._shard.scroll(request))

        return paged(fetch)


def _open_shard(directory: Path, collection: str, dimensions: int, model: str) -> qe.EdgeShard:
    """Load the shard if it exists (after checking its vector size), else create it."""
    _recover_swap(directory)
    config = edge_config(dimensions)
    exists = (directory / _CONFIG_FILE).is_file()
    found = _stored_size(directory) if exists else dimensions
    if found != dimensions:
        raise mismatch(collection, found, model, dimensions)
    if exists:
        _remove_build_leftovers(directory)
    try:
        if exists:
            return qe.EdgeShard.load(str(directory), config)
        log.info("creating qdrant-edge shard=%s dimensions=%d", directory, dimensions)
        return create_shard(directory, dimensions)
    except OSError as exc:
        raise StoreUnavailableError(f"embedded store {directory}: {exc}") from exc
    except Exception as exc:
        if type(exc) is not Exception:
            raise
        raise StoreUnavailableError(f"embedded store {directory}: {exc}") from exc


CopyPage = tuple[list[Any], bytes, list[dict[str, Any]]]
"""Points as (ids, their float32 vectors as bytes, payloads): cheap to pickle and to build."""

_OUTPACED = "the graph build fell behind the writes made meanwhile: it starts again later"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One write (points upserted, or the points of some paths deleted), in a form the
    builder process can be sent (pickled) and that makes the engine's operation again."""

    upserted: CopyPage | None = None
    deleted_paths: list[str] | None = None

    @property
    def points(self) -> int:
        return len(self.upserted[0]) if self.upserted is not None else 0

    def operation(self, dimensions: int) -> qe.UpdateOperation:
        if self.upserted is not None:
            return qe.UpdateOperation.upsert_points(page_points(self.upserted, dimensions))
        return qe.UpdateOperation.delete_points_by_filter(
            _match_any("path", list(self.deleted_paths or []))
        )


def page_points(page: CopyPage, dimensions: int) -> list[qe.Point]:
    ids, data, payloads = page
    vectors = np.frombuffer(data, dtype=np.float32).reshape(len(ids), dimensions)
    return [
        qe.Point(pid, {VECTOR_NAME: vector.tolist()}, payload)
        for pid, vector, payload in zip(ids, vectors, payloads, strict=True)
    ]


def _rows_page(rows: Sequence[tuple[Any, NDArray[np.float32], dict[str, Any]]]) -> CopyPage:
    vectors = np.asarray([vector for _, vector, _ in rows], dtype=np.float32)
    return [pid for pid, _, _ in rows], vectors.tobytes(), [payload for _, _, payload in rows]


def _copy_page(records: list[qe.Record]) -> CopyPage:
    return _rows_page([(r.id, _vector(r), r.payload or {}) for r in records])


def create_shard(directory: Path, dimensions: int) -> qe.EdgeShard:
    """A new, empty shard with the payload indexes searches filter by (kept on disk or in
    memory as PAYLOAD_INDEXES_ON_DISK says)."""
    shard = qe.EdgeShard.create(str(directory), edge_config(dimensions))
    on_disk = PAYLOAD_INDEXES_ON_DISK
    region = qe.IntegerIndexParams(lookup=True, range=False, on_disk=on_disk)
    shard.update(qe.UpdateOperation.create_field_index("region", region))
    for field in _KEYWORD_FIELDS:
        keyword = qe.KeywordIndexParams(on_disk=on_disk)
        shard.update(qe.UpdateOperation.create_field_index(field, keyword))
    return shard


def _sibling(directory: Path, suffix: str) -> Path:
    return directory.with_name(directory.name + suffix)


def _sync_directory(directory: Path) -> None:
    """Make renames and new files in `directory` durable before going on."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover_swap(directory: Path) -> None:
    """Undo what a live graph build left when the process died (only called with the store's
    lock held, so no build is running): while `.old` exists the swap had not replayed the
    writes made during the build, so `.old` is the shard (its graph is built again later);
    a copy (`.next`) and a dropped shard (`.trash`) are deleted."""
    old = _sibling(directory, _OLD_SUFFIX)
    if old.is_dir():
        if directory.exists():
            directory.rename(_sibling(directory, _TRASH_SUFFIX + "-copy"))
            shutil.rmtree(_sibling(directory, _TRASH_SUFFIX + "-copy"), ignore_errors=True)
        old.rename(directory)
        log.warning("undid an interrupted graph swap shard=%s", directory)
    for suffix in (_NEXT_SUFFIX, _TRASH_SUFFIX, _TRASH_SUFFIX + "-copy"):
        leftover = _sibling(directory, suffix)
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)
            log.warning("removed what an interrupted graph build left path=%s", leftover)


def _remove_build_leftovers(directory: Path) -> None:
    """Delete the segments a killed graph build (`imgsearch optimize`) left half-made: the
    engine never reuses nor removes them, and they are as large as the data. Only called with
    the store's lock held, so no build is running."""
    temp = directory / _TEMP_SEGMENTS
    if not temp.is_dir():
        return
    for leftover in list(temp.iterdir()):
        size = sum(f.stat().st_size for f in leftover.rglob("*") if f.is_file())
        shutil.rmtree(leftover, ignore_errors=True)
        log.warning(
            "removed what an interrupted graph build left path=%s mb=%d", leftover, size // 2**20
        )


def _stored_size(directory: Path) -> int | str:
    """The size of the shard's 'global' vectors, from the config qdrant-edge keeps beside it."""
    try:
        config = json.loads((directory / _CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreUnavailableError(f"embedded store {directory}: {exc}") from exc
    params = config.get("vectors", {}).get(VECTOR_NAME)
    return int(params["size"]) if isinstance(params, dict) else f"no {VECTOR_NAME!r} vector"


def _match(key: str, value: str | int) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition(key=key, match=qe.MatchValue(value))])


def _match_any(key: str, values: list[str]) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition(key=key, match=qe.MatchAny(values))])


def _in_folder(folder: str) -> qe.Filter:
    return _match("folders", folder.strip("/"))


_WHOLE_IMAGES = _match("region", 0)


def _vector(record: qe.Record) -> NDArray[np.float32]:
    vector = record.vector
    named = vector[VECTOR_NAME] if isinstance(vector, dict) else vector
    return np.asarray(named, dtype=np.float32)
