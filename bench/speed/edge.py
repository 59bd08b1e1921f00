"""A prototype of the store on qdrant-edge-py (Qdrant's Rust engine in-process), for comparison.

It offers the VectorStore calls that the searcher and the indexer make (upsert, search,
vector_of, count, close, and the content-hash lookup) with the same point ids and payload
(one point per descriptor row), so the production SearcherService can serve from it
unchanged. Benchmark code only: it became the production imgsearch.store.edge.EdgeStore
(the default embedded engine) and stays here for the knobs the benchmark turns (quantisation
off, blocking HNSW builds). qdrant-edge has no group-by, so search groups points by path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from numpy.typing import NDArray

from bench.speed import compat
from imgsearch import ids
from imgsearch.errors import StoreUnavailableError
from imgsearch.ids import parent_folders, point_id
from imgsearch.store import VECTOR_NAME, FileState, Hit

F32 = NDArray[np.float32]

# Qdrant's defaults, and the size (KB of vectors) below which a segment is searched without
# its HNSW graph.
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
FULL_SCAN_THRESHOLD_KB = 10_000


def region_id(path: str, region: int) -> str:
    """The production point id of a descriptor row (row 0 = the file's own id)."""
    make = getattr(ids, "region_point_id", None)
    if make is None or not compat.REGIONAL:
        return point_id(path)
    return str(make(path, region))


def edge_config(dimensions: int, *, quantized: bool, indexing_threshold_kb: int) -> qe.EdgeConfig:
    """Cosine vectors; optionally int8 scalar quantisation in RAM with originals on disk."""
    quantization = (
        qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
        if quantized
        else None
    )
    return qe.EdgeConfig(
        vectors={
            VECTOR_NAME: qe.EdgeVectorParams(
                size=dimensions,
                distance=qe.Distance.Cosine,
                quantization_config=quantization,
                # Quantised: search reads the int8 copy and rescores a few candidates from
                # the mmapped originals, so the originals need not stay in RAM.
                memory=qe.Memory.Cold if quantized else qe.Memory.Cached,
            )
        },
        hnsw_config=qe.HnswIndexConfig(
            m=HNSW_M,
            ef_construct=HNSW_EF_CONSTRUCT,
            full_scan_threshold=FULL_SCAN_THRESHOLD_KB,
            max_indexing_threads=0,
        ),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb),
        payload_memory=qe.Memory.Cold,
    )


class EdgeStore:
    """Image descriptors in one qdrant-edge shard (a directory; one process at a time)."""

    def __init__(
        self,
        path: Path,
        dimensions: int,
        model: str,
        *,
        quantized: bool = True,
        indexing_threshold_kb: int = 10**9,
    ) -> None:
        self.dimensions = dimensions
        self.model = model
        self.local = True
        self._path = path
        self._quantized = quantized
        config = edge_config(
            dimensions, quantized=quantized, indexing_threshold_kb=indexing_threshold_kb
        )
        if path.is_dir() and any(path.iterdir()):
            self._shard = qe.EdgeShard.load(str(path), config)
        else:
            path.mkdir(parents=True, exist_ok=True)
            self._shard = qe.EdgeShard.create(str(path), config)
            for field in ("folders", "sha256", "path"):
                self._shard.update(
                    qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword)
                )

    def upsert(self, items: Sequence[tuple[FileState, Any]]) -> None:
        """Same points as VectorStore.upsert: one per descriptor row (whole image, regions)."""
        points = []
        for state, descriptors in items:
            vectors = compat.rows(descriptors)
            folders = parent_folders(state.path)
            for region in [*range(1, len(vectors)), 0]:
                payload: dict[str, Any] = {"path": state.path, "folders": folders, "region": region}
                if region == 0:
                    payload |= {
                        "size": state.size,
                        "mtime_ns": state.mtime_ns,
                        "sha256": state.sha256,
                        "model": self.model,
                    }
                points.append(
                    qe.Point(
                        region_id(state.path, region),
                        {VECTOR_NAME: vectors[region].tolist()},
                        payload,
                    )
                )
        if points:
            self._shard.update(qe.UpdateOperation.upsert_points(points))

    def upsert_bulk(self, paths: Sequence[str], vectors: F32) -> None:
        """Bulk load for the benchmark: vectors [n, R, C], payload only path/folders/region."""
        points = [
            qe.Point(
                region_id(path, region),
                {VECTOR_NAME: vectors[i, region].tolist()},
                {"path": path, "folders": parent_folders(path), "region": region},
            )
            for i, path in enumerate(paths)
            for region in range(vectors.shape[1])
        ]
        self._shard.update(qe.UpdateOperation.upsert_points(points))

    def search(
        self,
        queries: F32,
        limit: int,
        *,
        subfolder: str | None = None,
        min_score: float | None = None,
        hnsw_ef: int | None = None,
    ) -> list[Hit]:
        """Best images for query vectors [Q, C] (or [C]): each image scores its best point."""
        condition = (
            qe.Filter(
                must=[qe.FieldCondition(key="folders", match=qe.MatchValue(subfolder.strip("/")))]
            )
            if subfolder
            else None
        )
        best: dict[str, float] = {}
        for vector in np.atleast_2d(queries):
            points = self._shard.query(
                qe.QueryRequest(
                    # Enough points for `limit` distinct images even if every region of the
                    # best images comes first.
                    limit=limit * compat.POINTS_PER_IMAGE,
                    query=qe.Query.Nearest(vector.tolist(), using=VECTOR_NAME),
                    filter=condition,
                    score_threshold=min_score,
                    with_payload=["path"],
                    params=qe.SearchParams(hnsw_ef=hnsw_ef),
                )
            )
            for p in points:
                path = str((p.payload or {})["path"])
                best[path] = max(best.get(path, -2.0), float(p.score))
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:limit]
        return [Hit(path, score) for path, score in ranked]

    def search_ids(self, vector: F32, limit: int, *, hnsw_ef: int | None = None) -> list[str]:
        """Point ids of the nearest points (no grouping, no payload), for recall checks."""
        points = self._shard.query(
            qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(vector.tolist(), using=VECTOR_NAME),
                with_payload=False,
                params=qe.SearchParams(hnsw_ef=hnsw_ef),
            )
        )
        return [str(p.id) for p in points]

    def vector_of(self, path: str) -> F32 | None:
        records = self._shard.retrieve([point_id(path)], with_payload=False, with_vector=True)
        return _vector(records[0].vector) if records else None

    def path_with_sha256(self, sha256: str) -> str | None:
        """The indexed file with this content, if any (the indexer's dedupe lookup)."""
        records, _ = self._shard.scroll(
            qe.ScrollRequest(
                limit=1,
                filter=qe.Filter(
                    must=[qe.FieldCondition(key="sha256", match=qe.MatchValue(sha256))]
                ),
                with_payload=["path"],
                with_vector=False,
            )
        )
        return str((records[0].payload or {})["path"]) if records else None

    def ping(self) -> None:
        """The health watcher's liveness call; unavailable while build_index reopens it."""
        try:
            self._shard.info()
        except Exception as exc:  # qdrant-edge raises plain Exception
            raise StoreUnavailableError(f"qdrant-edge shard: {exc}") from exc

    def count(self) -> int:
        return int(self._shard.info().points_count)

    def indexed_vectors(self) -> int:
        return int(self._shard.info().indexed_vectors_count)

    def build_index(self) -> bool:
        """Build the HNSW graph of every segment (blocks until done).

        The shard is opened with an indexing threshold nothing reaches, so that writes never
        trigger a build; building means reopening it with a low threshold and optimising.
        """
        self._shard.close()
        config = edge_config(self.dimensions, quantized=self._quantized, indexing_threshold_kb=1)
        self._shard = qe.EdgeShard.load(str(self._path), config)
        return bool(self._shard.optimize())

    def flush(self) -> None:
        self._shard.flush()

    def close(self) -> None:
        self._shard.close()


def _vector(vector: Any) -> F32:  # noqa: ANN401 - qdrant-edge's Vector union
    if isinstance(vector, dict):
        vector = vector[VECTOR_NAME]
    return np.asarray(vector, dtype=np.float32)
