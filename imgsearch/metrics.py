"""Prometheus metrics shared by both services; names follow the Prometheus conventions."""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

log = logging.getLogger(__name__)


def _zero_series(metric: Counter | Gauge, *values: str) -> None:
    """A series at 0 for each label value from the start, so that rate() works at once and
    panels show 0, not "no data", before the first event."""
    for value in values:
        metric.labels(value)


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

BUILD_INFO = Info("imgsearch_build", "Version and model of the running process.")

RPC_REQUESTS = Counter(
    "imgsearch_rpc_requests_total", "gRPC requests handled.", ["service", "method", "code"]
)
RPC_DURATION = Histogram(
    "imgsearch_rpc_duration_seconds",
    "gRPC handling time.",
    ["service", "method"],
    buckets=_LATENCY_BUCKETS,
)
SEARCH_STAGE = Histogram(
    "imgsearch_search_stage_seconds",
    "Time spent in each stage of a search.",
    ["stage"],  # decode, embed, ann, rescore, verify, closer, deep, siblings
    buckets=_LATENCY_BUCKETS,
)
VERIFICATIONS = Counter(
    "imgsearch_verifications_total",
    "Searches whose first candidates were checked geometrically, by outcome.",
    # confirmed, rejected (a source found or not); closer (the view checked confirmed none,
    # so the whole query was checked again in finer detail: counted besides the outcome);
    # deep (neither look confirmed one of the first candidates, so the check went on down
    # the ranking: counted besides the outcome);
    # sibling (several candidates passed the verdict and the exactness check kept only the
    # image the query was made from)
    ["outcome"],
)
_zero_series(VERIFICATIONS, "confirmed", "rejected", "closer", "deep", "sibling")
KEYPOINT_CANDIDATES = Counter(
    "imgsearch_keypoint_candidates_total",
    "Candidate files whose keypoints a geometric check needed, by whether they were cached.",
    # hit, miss (the file read, decoded and described: most of a check's cost)
    ["cache"],
)
_zero_series(KEYPOINT_CANDIDATES, "hit", "miss")
WHITENING_IMAGES = Gauge(
    "imgsearch_whitening_images",
    "Images the searcher's whitening was learned from; 0 = raw scores (small folder).",
)
WHITENING_LEARN_SECONDS = Histogram(
    "imgsearch_whitening_learn_seconds",
    "Time to learn the folder's whitening from the store (background).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
INFERENCE = Histogram(
    "imgsearch_model_inference_seconds",
    "Time of one forward pass of the backbone.",
    ["batch"],  # "1" for queries, "many" for indexing batches
    buckets=_LATENCY_BUCKETS,
)
MODEL_RUNS_WAITING = Gauge(
    "imgsearch_model_runs_waiting",
    "Query forward passes waiting for a core (concurrent queries beyond the inference threads).",
)
STORE_REQUESTS = Histogram(
    "imgsearch_store_request_seconds", "Qdrant call latency.", ["op"], buckets=_LATENCY_BUCKETS
)
STORE_ERRORS = Counter("imgsearch_store_errors_total", "Failed Qdrant calls.", ["op"])
_zero_series(STORE_ERRORS, "query", "upsert", "delete", "scroll", "retrieve", "count", "ping")

IMAGES_INDEXED = Gauge("imgsearch_images_indexed", "Images that are searchable.")
IMAGES_PENDING = Gauge("imgsearch_images_pending", "Files waiting to be (re)indexed.")
IMAGES_FAILED = Gauge("imgsearch_images_failed", "Files that could not be indexed.")
INDEX_OPERATIONS = Counter(
    "imgsearch_index_operations_total",
    "Index changes by kind.",
    ["op"],  # embedded, reused, deleted, failed, unchanged
)
WATCHER_EVENTS = Counter("imgsearch_watcher_events_total", "File-system events received.", ["kind"])
RECONCILE_RUNS = Counter(
    "imgsearch_reconcile_runs_total", "Full folder scans by result.", ["result"]
)
DELETIONS_HELD = Gauge(
    "imgsearch_deletions_held",
    "Files a scan found missing but kept in the index (mass-deletion guard tripped).",
)
FOLDER_AVAILABLE = Gauge(
    "imgsearch_folder_available", "1 while the watched folder exists and is watched, else 0."
)
DISK_FULL = Gauge(
    "imgsearch_disk_full",
    "1 while indexing waits for free space on the index's disk (searches go on), else 0.",
)
GRAPH_VECTORS = Gauge(
    "imgsearch_graph_vectors",
    "Embedded index vectors by how searches reach them: through the HNSW graph or by a scan.",
    ["kind"],  # graph, scanned
)
_zero_series(GRAPH_VECTORS, "graph", "scanned")
GRAPH_BUILDS = Counter(
    "imgsearch_graph_builds_total",
    "Live graph builds of the embedded index by outcome.",
    ["outcome"],  # built, failed, stopped
)
_zero_series(GRAPH_BUILDS, "built", "failed", "stopped")
GRAPH_BUILD_SECONDS = Histogram(
    "imgsearch_graph_build_seconds",
    "Wall time of a live graph build (copy, graph in the child process, swap).",
    buckets=(1, 5, 15, 60, 180, 600, 1800, 3600, 7200),
)
GRAPH_SWAP_SECONDS = Histogram(
    "imgsearch_graph_swap_seconds",
    "Pause of searches and writes while a built graph is swapped in.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_CHANGES = Counter(
    "imgsearch_reconcile_changes_total",
    "Differences found by full folder scans.",
    ["change"],  # added, changed, removed
)

DUPLICATE_RUNS = Gauge("imgsearch_duplicate_runs", "Duplicate-finder runs in progress.")
DUPLICATE_IMAGES = Counter(
    "imgsearch_duplicate_images_total",
    "Images the duplicate finder compared with their nearest neighbours, by how it looked.",
    # vector (its own vector found a copy), decoded (it found none: the file was decoded to
    # look for a page's photo blocks, and had none), page (page-like: ranked again with them)
    ["look"],
)
_zero_series(DUPLICATE_IMAGES, "vector", "decoded", "page")
DUPLICATE_PAIRS = Counter(
    "imgsearch_duplicate_pairs_total",
    "Candidate pairs the duplicate finder judged, each from the side that found it.",
    ["verdict"],  # copy, not_copy
)
_zero_series(DUPLICATE_PAIRS, "copy", "not_copy")

HTTP_REQUESTS = Counter(
    "imgsearch_http_requests_total",
    "HTTP API requests handled, by route and status code.",
    ["route", "status"],
)
HTTP_DURATION = Histogram(
    "imgsearch_http_duration_seconds",
    "Time to answer an HTTP API request, by route.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

METRICS_FLAG = "--metrics-listen HOST:PORT (or '' for no metrics)"


def serve_metrics(listen: str) -> WSGIServer:
    """Expose /metrics on HOST:PORT (port 0 picks a free one) from a daemon thread."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"))
    log.info("metrics listening on http://%s:%d/metrics", host, server.server_port)
    return server
