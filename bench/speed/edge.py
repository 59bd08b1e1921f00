"""The shard configuration for an HNSW graph built off the serving process.

The production EdgeStore (imgsearch/store/edge.py, which grew out of the prototype that lived
here) never builds a graph: qdrant-edge's optimize() holds the GIL and would freeze the
service. The benchmark measures what a graph would give by reopening a closed shard with this
configuration (the production one with a low indexing threshold) in a process that serves
nothing, and optimising it.
"""

from __future__ import annotations

import qdrant_edge as qe

from imgsearch.store import VECTOR_NAME

# Qdrant's defaults, and the size (KB of vectors) below which a segment is searched without
# its HNSW graph.
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
FULL_SCAN_THRESHOLD_KB = 10_000


def edge_config(dimensions: int, *, quantized: bool, indexing_threshold_kb: int) -> qe.EdgeConfig:
    """Cosine vectors; optionally int8 scalar quantisation in RAM with originals on disk
    (as production); optimize() builds a graph for segments above the threshold."""
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
