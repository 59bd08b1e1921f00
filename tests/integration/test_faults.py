"""Issue 7: the store failing (unreachable server, full disk) loses nothing and heals."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgsearch.model import ImageEncoder
from imgsearch.settings import StoreEngine
from imgsearch.store.edge import EdgeStore
from imgsearch.store.qdrant import QdrantStore
from tests.conftest import Served, wait_until

_T = TypeVar("_T")


def _failing(store: FaultyEdge | FaultyLocal, fn: Callable[[], _T]) -> Callable[[], _T]:
    fault = store.fault

    def failing() -> _T:
        if fault is not None:
            raise fault
        return fn()

    return failing


class FaultyEdge(EdgeStore):
    """The real embedded store, whose calls fail with a chosen low-level error while `down`."""

    fault: Exception | None = None

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        return super()._call(what, _failing(self, fn))


class FaultyLocal(QdrantStore):
    """The same on qdrant-client (local mode here; a server fails the same way)."""

    fault: Exception | None = None

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        return super()._call(what, _failing(self, fn))


def _health(port: int, service: str = "imgsearch.v1.Searcher") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


@pytest.mark.parametrize(
    ("engine", "fault"),
    [
        (StoreEngine.LOCAL, ConnectionRefusedError(111, "Connection refused")),  # server down
        (StoreEngine.LOCAL, sqlite3.OperationalError("database or disk is full")),  # full disk
        (StoreEngine.EDGE, Exception("Service runtime error: No space left on device")),
    ],
    ids=["unreachable", "disk-full", "edge-disk-full"],
)
def test_store_outage_loses_nothing(
    engine: StoreEngine,
    fault: Exception,
    tmp_path: Path,
    photo_folder: Path,
    sample_photos: list[Path],
    encoder: ImageEncoder,
    serve: Callable[..., Served],
) -> None:
    store: FaultyEdge | FaultyLocal
    if engine is StoreEngine.EDGE:
        store = FaultyEdge.open_path(
            tmp_path / "data" / "edge",
            collection="images",
            dimensions=encoder.dimensions,
            model=encoder.name,
        )
    else:
        store = FaultyLocal.connect(
            path=tmp_path / "data" / "qdrant",
            collection="images",
            dimensions=encoder.dimensions,
            model=encoder.name,
        )
    # The injected store is made for the `encoder` fixture's model: serve that one.
    served = serve(photo_folder, store=store, health_interval=0.2, model="efficientnet-lite0")
    served.wait_idle()
    indexed = served.client.status().indexed
    port = served.app.port
    assert _health(port) == health_pb2.HealthCheckResponse.SERVING

    store.fault = fault
    wait_until(lambda: _health(port) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=10)
    assert _health(port, "imgsearch.v1.Embedder") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert _health(port, "") == health_pb2.HealthCheckResponse.SERVING  # liveness: alive
    with pytest.raises(grpc.RpcError) as info:
        served.client.search(sample_photos[0].read_bytes())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    for i, photo in enumerate(sample_photos[:3]):
        shutil.copy(photo, photo_folder / f"during_outage_{i}{photo.suffix}")
    (photo_folder / sorted(p.name for p in sample_photos)[-1]).unlink()
    wait_until(lambda: served.client.status().pending == 4, timeout=10)
    assert served.client.status().indexed == indexed  # nothing dropped meanwhile

    store.fault = None
    wait_until(lambda: _health(port) == health_pb2.HealthCheckResponse.SERVING, timeout=10)
    wait_until(lambda: served.client.status().pending == 0, timeout=60)
    paths = {s.path for s in store.indexed_files()}
    assert paths == {p.name for p in photo_folder.iterdir()}
    assert store.count() == indexed + 3 - 1
    top = served.client.search(sample_photos[1].read_bytes(), limit=1).matches[0]
    assert top.score > 0.99
