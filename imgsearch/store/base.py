"""The vector store interface: what the indexer, the searcher and backups need from Qdrant.

Three engines sit behind it, picked by `imgsearch.store.open_store`:

- a Qdrant server (`url`), through qdrant-client (`QdrantStore`);
- qdrant-edge-py, Qdrant's Rust engine in this process (`EdgeStore`, the default embedded
  engine: fast writes and search at 100k+ images);
- qdrant-client's local mode (`QdrantStore` on a `path`, opt-in `engine=local`): pure
  Python brute force, kept for small folders and for comparison.

All of them store the same points (imgsearch.ids) with the same payload, and turn every
engine failure into StoreUnavailableError, so callers never see an engine's own errors.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from imgsearch.descriptors import DescriptorSet
from imgsearch.errors import StoreMismatchError, StoreUnavailableError
from imgsearch.ids import parent_folders, region_point_id
from imgsearch.metrics import STORE_ERRORS, STORE_REQUESTS

VECTOR_NAME = "global"
DISTANCE = "Cosine"  # every collection imgsearch makes, named as Qdrant's API does
# The graph's candidate list at query time (Qdrant's `hnsw_ef`), on every engine with a graph.
# At 1M copy-detection vectors, recall@10 against exact search is 0.951 / 0.969 / 0.985 /
# 0.995 at 256 / 512 / 1024 / 1536, the source first at all (bench/results/speed/hnsw.md, a
# graph built offline: 1536 costs 1.37x 1024's p50); after a live build with 92k points
# still scanned, 0.991 at 1024 and 0.997 at 1536 for 1.04x the p50 (live.md). Recall over
# speed: 1536 meets the 0.99 target in both states, and p99 stays within 30 ms.
HNSW_EF = 1536
_T = TypeVar("_T")
_Record = TypeVar("_Record")


@dataclass(frozen=True, slots=True)
class FileState:
    """What identifies the version of a file that was indexed."""

    path: str  # relative to the watched folder, '/' separators
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Hit:
    path: str
    score: float
    box: tuple[float, ...] = (
        0.0,
        0.0,
        1.0,
        1.0,
    )  # region of the image that matched (x0, y0, x1, y1)


@dataclass(frozen=True, slots=True)
class RawPoint:
    """One stored point as it is, engine-neutral: what backups read and write."""

    id: str | int
    vector: list[float]
    payload: dict[str, Any]


class VectorStore(ABC):
    """Upserts, deletes and searches image descriptors in one collection.

    `grouped`: images may have several points (regions), so searches keep each image's best
    point; otherwise each image is one point and a plain nearest-neighbour query suffices.
    """

    collection: str
    dimensions: int
    model: str
    local: bool  # embedded in this process (not a server)
    grouped: bool
    engine_name: str = "qdrant"

    def __init__(
        self, collection: str, dimensions: int, model: str, *, local: bool, grouped: bool
    ) -> None:
        self.collection = collection
        self.dimensions = dimensions
        self.model = model
        self.local = local
        self.grouped = grouped
        # Embedded engines are not safe to use from several threads at once (and the embedder
        # and searcher share one store in `imgsearch serve`); a server serialises on its side.
        self._lock: AbstractContextManager[object] = threading.RLock() if local else nullcontext()

    # ---- error handling: one place turns engine failures into StoreUnavailableError ----

    @abstractmethod
    def _is_store_error(self, exc: Exception) -> bool:
        """Whether `exc` is the engine failing (unavailable, I/O), not a bug in the caller."""

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            with self._lock, STORE_REQUESTS.labels(what).time():
                return fn()
        except StoreUnavailableError:
            STORE_ERRORS.labels(what).inc()
            raise
        except Exception as exc:
            if not self._is_store_error(exc):
                raise
            STORE_ERRORS.labels(what).inc()
            raise StoreUnavailableError(f"{self.engine_name} {what} failed: {exc}") from exc

    # ---- the calls the services make ----

    @abstractmethod
    def ensure_collection(self) -> None:
        """Create the collection, or check that an existing one fits this model."""

    def check_model(self) -> None:
        """Refuse a collection whose vectors another model made (same size or not): vectors
        of two models are never mixed. Any stored point tells (each carries `model`)."""
        for record in self._scroll(None, ["model"], False, 1):
            found = (record.payload or {}).get("model")
            if found is not None and found != self.model:
                raise StoreMismatchError(
                    f"collection {self.collection!r} holds vectors of model {found!r}, not of "
                    f"{self.model!r}: {_WHAT_TO_DO}"
                )
            return

    @abstractmethod
    def upsert(self, items: Sequence[tuple[FileState, DescriptorSet]]) -> None:
        """Write each file's region points, then its whole-image point (which carries the file
        state and so marks the file as indexed: a crash in between leaves it to be redone)."""

    @abstractmethod
    def delete_paths(self, paths: Iterable[str]) -> None:
        """Delete every point (whole image and regions) of these files."""

    @abstractmethod
    def search(
        self,
        queries: NDArray[np.float32],
        limit: int,
        *,
        subfolder: str | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """Best images for query vectors [Q, C]: each image scores its best (query, region) pair."""

    def vector_of(self, path: str) -> NDArray[np.float32] | None:
        """The stored whole-image descriptor of an indexed path, if any."""
        return self.vectors_of([path]).get(path)

    def vectors_of(self, paths: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        """Stored whole-image descriptors of these paths (unindexed ones left out), fetched
        by point id: one cheap lookup, unlike `descriptors_of`'s filtered scroll."""
        found = self._retrieve(paths, with_vector=True)
        return {str(payload["path"]): vector for payload, vector in found if vector is not None}

    @abstractmethod
    def descriptors_of(self, paths: Sequence[str]) -> dict[str, DescriptorSet]:
        """Stored descriptor sets of fully indexed paths (others are left out)."""

    def indexed_among(self, paths: Sequence[str]) -> set[str]:
        """Which of these paths are in the index (searchable) right now."""
        return {str(payload["path"]) for payload, _ in self._retrieve(paths, with_vector=False)}

    @abstractmethod
    def _retrieve(
        self, paths: Sequence[str], with_vector: bool
    ) -> list[tuple[dict[str, Any], NDArray[np.float32] | None]]:
        """(payload with "path", the descriptor if `with_vector`) of the whole-image points of
        these paths, by point id; unindexed paths are left out."""

    def descriptors_with_sha256(self, sha256: str) -> DescriptorSet | None:
        """The descriptors of any indexed file with this content, to avoid embedding it twice
        (only when that file was embedded by this store's model)."""
        payload = self._payload_with_sha256(sha256)
        if payload is None or payload.get("model") != self.model:
            return None
        path = str(payload["path"])
        return self.descriptors_of([path]).get(path)

    def indexed_files(self) -> Iterator[FileState]:
        """Every indexed file with the version that was embedded (paged, no vectors)."""
        for payload, _ in self._whole_images(["path", "size", "mtime_ns", "sha256"], False):
            yield FileState(
                str(payload["path"]),
                int(payload["size"]),
                int(payload["mtime_ns"]),
                str(payload["sha256"]),
            )

    def sample_vectors(self, limit: int) -> NDArray[np.float32]:
        """Up to `limit` stored whole-image descriptors [N, C], for learning statistics of the
        folder (point ids are hashes of paths, so the first ones are an unbiased sample)."""
        rows: list[NDArray[np.float32]] = []
        for _, vector in self._whole_images(["path"], True):
            if len(rows) >= limit:
                break
            assert vector is not None
            rows.append(vector)
        return np.stack(rows) if rows else np.empty((0, self.dimensions), dtype=np.float32)

    @abstractmethod
    def _payload_with_sha256(self, sha256: str) -> dict[str, Any] | None:
        """The model and path payload of one whole-image point with this sha256, if any."""

    @abstractmethod
    def _whole_images(
        self, fields: list[str], with_vector: bool
    ) -> Iterator[tuple[dict[str, Any], NDArray[np.float32] | None]]:
        """(these payload fields, the descriptor if `with_vector`) of every whole-image point
        (region 0), paged."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailableError unless the store answers."""

    @abstractmethod
    def count(self) -> int:
        """Number of indexed images (not points: each image has one point per region)."""

    @abstractmethod
    def close(self) -> None:
        """Release the store (an embedded one: flush it and let another process open it)."""

    # ---- raw points, for backup and restore: every engine, one code path ----

    @abstractmethod
    def point_count(self) -> int:
        """All points (regions too)."""

    @abstractmethod
    def payload_indexes(self) -> dict[str, str]:
        """Indexed payload fields and their types, named as Qdrant's REST API does."""

    def raw_points(self, page_size: int = 1024) -> Iterator[RawPoint]:
        """Every point with its vector and whole payload, page by page."""
        for record in self._scroll(None, True, True, page_size):
            point_id = record.id
            yield RawPoint(
                point_id if isinstance(point_id, int) else str(point_id),
                self._vector_of(record).tolist(),
                dict(record.payload or {}),
            )

    @abstractmethod
    def _scroll(
        self,
        where: Any,  # noqa: ANN401 - the engine's filter type
        payload: list[str] | bool,
        with_vector: bool,
        page_size: int = ...,
    ) -> Iterator[Any]:
        """The engine's records matching `where` (None: all), page by page."""

    @staticmethod
    @abstractmethod
    def _vector_of(record: Any) -> NDArray[np.float32]:  # noqa: ANN401 - the engine's record
        """The "global" vector of one of the engine's records."""

    @abstractmethod
    def write_raw(self, points: Sequence[RawPoint]) -> None:
        """Upsert points as they are (a restore)."""


def point_rows(
    items: Sequence[tuple[FileState, DescriptorSet]], model: str
) -> list[tuple[str, NDArray[np.float32], dict[str, object]]]:
    """(id, vector, payload) of every point of these files, regions first, whole image last:
    the one definition of what is stored, shared by all engines."""
    rows: list[tuple[str, NDArray[np.float32], dict[str, object]]] = []
    for state, descriptors in items:
        folders = parent_folders(state.path)
        for region in [*range(1, len(descriptors.vectors)), 0]:
            payload: dict[str, object] = {
                "path": state.path,
                "folders": folders,
                "region": region,
                "box": [round(float(v), 4) for v in descriptors.boxes[region]],
            }
            if region == 0:
                payload |= {
                    "size": state.size,
                    "mtime_ns": state.mtime_ns,
                    "sha256": state.sha256,
                    "model": model,
                }
            rows.append((region_point_id(state.path, region), descriptors.vectors[region], payload))
    return rows


def assemble(
    rows: Iterable[tuple[dict[str, Any], NDArray[np.float32]]],
) -> dict[str, DescriptorSet]:
    """Descriptor sets from stored (payload, vector) points; a file without its whole-image
    point (an interrupted write) is not indexed and is left out."""
    found: dict[str, dict[int, tuple[NDArray[np.float32], list[float]]]] = {}
    for payload, vector in rows:
        found.setdefault(str(payload["path"]), {})[int(payload["region"])] = (
            vector,
            list(payload["box"]),
        )
    out = {}
    for path, regions in found.items():
        if 0 not in regions:
            continue
        order = sorted(regions)
        out[path] = DescriptorSet(
            np.stack([regions[r][0] for r in order]),
            np.asarray([regions[r][1] for r in order], dtype=np.float32),
        )
    return out


def best_per_path(hits: Iterable[Hit], limit: int) -> list[Hit]:
    """Each image's best hit, best images first."""
    best: dict[str, Hit] = {}
    for hit in hits:
        if hit.path not in best or hit.score > best[hit.path].score:
            best[hit.path] = hit
    return sorted(best.values(), key=lambda h: -h.score)[:limit]


def paged(
    fetch: Callable[[Any], tuple[Sequence[_Record], Any]],
) -> Iterator[_Record]:
    """Every record of a scroll: `fetch(offset)` returns one page and the next offset (None at
    the end); both engines page this way."""
    offset: Any = None
    while True:
        page, offset = fetch(offset)
        yield from page
        if offset is None:
            return


_WHAT_TO_DO = (
    "give this model a collection of its own with --collection NAME (IMGSEARCH_COLLECTION), "
    "or serve the model that made it with --model"
)


def mismatch(collection: str, found: int | str, model: str, dimensions: int) -> StoreMismatchError:
    """The error for an existing collection whose vectors another descriptor made."""
    return StoreMismatchError(
        f"collection {collection!r} holds vectors of size {found}, but model {model!r} makes "
        f"{dimensions}: {_WHAT_TO_DO}"
    )
