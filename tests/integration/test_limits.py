"""Issue 7: concurrency limit, deadlines and symlinks that point out of the folder."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgsearch.rpc.client import Client
from imgsearch.v1 import searcher_pb2
from tests.conftest import Served, wait_until
from tests.imaging import encode, load
from tests.processes import status_code
from tests.registry import sample


def test_excess_concurrent_calls_get_resource_exhausted(
    photo_folder: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    served = serve(photo_folder, max_concurrent_rpcs=2)
    served.wait_idle()
    big = encode(load(sample_photos[0]).resize((3000, 2000)), quality=95)
    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(lambda _: status_code(lambda: served.client.search(big)), range(24)))
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert grpc.StatusCode.OK in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert status_code(lambda: served.client.search(big)) == grpc.StatusCode.OK


def _timed_out_searches() -> float:
    return sample(
        "imgsearch_rpc_requests_total",
        service="imgsearch.v1.Searcher",
        method="Search",
        code="DEADLINE_EXCEEDED",
    )


def test_half_open_calls_hold_no_worker_and_end(
    photo_folder: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    """Issue 15 #1: 16 calls that sent their headers but never their message (no token needed,
    no deadline) once held every worker thread, and Search, GetStatus and health timed out.
    Now they wait on the event loop, hold no thread, and end after `message_wait_seconds`;
    health watchers hold none either."""
    served = serve(photo_folder, message_wait_seconds=4)
    served.wait_idle()
    timed_out_before = _timed_out_searches()
    release = threading.Event()

    def never_sends() -> Iterator[searcher_pb2.SearchRequest]:
        release.wait(60)  # the client's sending thread: freed at the end of the test
        yield from ()

    with grpc.insecure_channel(f"127.0.0.1:{served.app.port}") as channel:
        half_open = channel.stream_unary(
            "/imgsearch.v1.Searcher/Search",
            request_serializer=searcher_pb2.SearchRequest.SerializeToString,
            response_deserializer=searcher_pb2.SearchResponse.FromString,
        )
        health = health_pb2_grpc.HealthStub(channel)
        try:
            calls = [half_open.future(never_sends()) for _ in range(40)]
            watchers = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(40)]
            assert all(next(w).status == health_pb2.HealthCheckResponse.SERVING for w in watchers)
            started = time.monotonic()
            with Client(f"127.0.0.1:{served.app.port}", timeout=5) as client:
                response = client.search(sample_photos[0].read_bytes())
                assert response.matches[0].path == sample_photos[0].name
                assert client.status().indexed == len(sample_photos)
            check = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - started < 4, "served while the half-open calls waited"
            for call in calls:
                error = call.exception(timeout=30)
                assert isinstance(error, grpc.Call)
                assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "no request message within 4 s" in (error.details() or "")
        finally:
            release.set()
            for watcher in watchers:
                watcher.cancel()
    # The server counts a call after its status has gone out: the last ones may land a moment
    # after the client has seen them end.
    wait_until(lambda: _timed_out_searches() - timed_out_before >= 40, timeout=10)
    assert _timed_out_searches() - timed_out_before == 40


def test_deadline_is_honoured(
    photo_folder: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    served = serve(photo_folder)
    served.wait_idle()
    search = served.client._searcher.Search
    request = searcher_pb2.SearchRequest(image=sample_photos[0].read_bytes())
    assert status_code(lambda: search(request, timeout=0.001)) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert status_code(lambda: search(request, timeout=30)) == grpc.StatusCode.OK


def test_symlinks_out_of_the_folder_are_not_followed(
    tmp_path: Path, photo_folder: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    outside = tmp_path / "private"
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes(encode(load(sample_photos[0]).rotate(90), "PNG"))
    (photo_folder / "link.png").symlink_to(secret)
    (photo_folder / "linked_dir").symlink_to(outside, target_is_directory=True)
    served = serve(photo_folder)
    served.wait_idle()
    indexed = {s.path for s in served.app.store.indexed_files()}
    assert indexed == {p.name for p in photo_folder.iterdir() if not p.is_symlink()}
    response = served.client.search(secret.read_bytes(), limit=50)
    assert all("secret" not in m.path and "linked" not in m.path for m in response.matches)
    for path in ("link.png", "linked_dir/secret.png", "../private/secret.png"):
        code = status_code(lambda path=path: served.client.search_path(path))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT, path
    shutil.rmtree(outside)
