"""/metrics of real services on loopback: every documented metric is there and follows traffic."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from imgsearch.errors import StoreUnavailableError
from imgsearch.store import StoreLocation, open_store
from tests.conftest import Served, wait_until
from tests.imaging import crop, encode, load, variants
from tests.metrics_doc import Scrape, documented_metrics

SEARCHER = {"service": "imgsearch.v1.Searcher", "method": "Search"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(serve: Callable[..., Served], folder: Path, data: Path) -> tuple[Served, int]:
    served = serve(folder, data, metrics_listen="127.0.0.1:0", http_listen="127.0.0.1:0")
    port = served.app.metrics_port
    assert port is not None
    return served, port


def _settled(served: Served, indexed: int, failed: int = 0) -> Callable[[], bool]:
    def check() -> bool:
        status = served.client.status()
        return (status.indexed, status.pending, status.failed) == (indexed, 0, failed)

    return check


def test_documented_metrics_exist_and_follow_traffic(
    serve: Callable[..., Served], photo_folder: Path, sample_photos: list[Path], tmp_path: Path
) -> None:
    served, port = _start(serve, photo_folder, tmp_path / "data")
    served.wait_idle()
    count = len(sample_photos)
    # A Qdrant server that is not there: the failed call is counted (same process, same registry).
    with pytest.raises(StoreUnavailableError):
        open_store(
            StoreLocation(url=f"http://127.0.0.1:{_closed_port()}"),
            collection="images",
            dimensions=8,
            model="m",
        )
    before = Scrape(port)

    # Searches: three good ones, one bad request.
    for photo in sample_photos[:3]:
        assert served.client.search(encode(crop(load(photo), 0.5), quality=50)).matches
    with pytest.raises(grpc.RpcError) as bad:
        served.client.search(b"\xff\xd8\xff\xe0 not really a JPEG")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # One HTTP request (the HTTP metrics are this process's too).
    with urllib.request.urlopen(f"http://127.0.0.1:{served.app.http_port}/v1/status") as answer:
        assert json.load(answer)["indexed"] == count

    # Folder changes: a new image, a copy of an indexed one, an unreadable one, then deletions.
    copy = photo_folder / ("copy" + sample_photos[0].suffix)
    (photo_folder / "new.jpg").write_bytes(variants(sample_photos, 1)[0])
    shutil.copy(sample_photos[0], copy)
    broken = photo_folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    # Copied in with an old timestamp (cp -p): not a file still being written, so it fails now.
    os.utime(broken, (time.time() - 3600, time.time() - 3600))
    wait_until(_settled(served, count + 2, failed=1), timeout=30)
    middle = Scrape(port)
    assert middle.value("imgsearch_images_indexed") == count + 2
    assert middle.value("imgsearch_images_failed") == 1
    (photo_folder / "new.jpg").unlink()
    copy.unlink()
    broken.unlink()
    wait_until(_settled(served, count), timeout=30)
    served.client.rescan()
    wait_until(
        lambda: (
            Scrape(port).value("imgsearch_reconcile_runs_total", result="ok")
            > before.value("imgsearch_reconcile_runs_total", result="ok")
        ),
        timeout=30,
    )
    after = Scrape(port)

    def grew(name: str, by: float | None = None, at_least: float = 1, **labels: str) -> None:
        delta = after.value(name, **labels) - before.value(name, **labels)
        assert delta >= at_least if by is None else delta == by, (name, labels, delta)

    # Gauges equal the real counts.
    status = served.client.status()
    assert (status.indexed, status.pending, status.failed) == (count, 0, 0)
    assert after.value("imgsearch_images_indexed") == status.indexed
    assert after.value("imgsearch_images_pending") == status.pending
    assert after.value("imgsearch_images_failed") == status.failed
    assert after.value("imgsearch_deletions_held") == status.held_deletions == 0
    assert after.value("imgsearch_folder_available") == 1
    # The embedded index's graph: none yet (a build waits for 20,000 scanned vectors).
    assert (status.graph_state, status.graph_vectors, status.graph_error) == ("idle", 0, "")
    assert status.scanned_vectors == count == after.value("imgsearch_graph_vectors", kind="scanned")
    assert after.value("imgsearch_graph_vectors", kind="graph") == 0
    encoder = served.app.encoder
    build = {"model": encoder.name, "model_key": encoder.key, "model_reason": encoder.info.reason}
    assert after.value("imgsearch_build_info", version=_version(), **build) == 1

    # Counters moved with the traffic, exactly where the traffic is countable.
    grew("imgsearch_rpc_requests_total", 3, code="OK", **SEARCHER)
    grew("imgsearch_rpc_requests_total", 1, code="INVALID_ARGUMENT", **SEARCHER)
    grew("imgsearch_rpc_duration_seconds_count", 4, **SEARCHER)
    grew("imgsearch_search_stage_seconds_count", 4, stage="decode")
    grew("imgsearch_search_stage_seconds_count", 3, stage="embed")
    grew("imgsearch_search_stage_seconds_count", 3, stage="ann")
    grew("imgsearch_model_inference_seconds_count", 3, batch="1")
    grew("imgsearch_model_inference_seconds_count", batch="many")
    grew("imgsearch_store_request_seconds_count", at_least=3, op="query")  # 1+ per search
    grew("imgsearch_store_request_seconds_count", op="upsert")
    grew("imgsearch_store_request_seconds_count", op="delete")
    grew("imgsearch_index_operations_total", 1, op="embedded")
    grew("imgsearch_index_operations_total", 1, op="reused")
    grew("imgsearch_index_operations_total", 1, op="failed")
    grew("imgsearch_index_operations_total", 2, op="deleted")
    grew("imgsearch_reconcile_runs_total", result="ok")
    created = sum(
        after.value(s.name, **s.labels) for s in after.samples("imgsearch_watcher_events")
    )
    assert created > sum(
        before.value(s.name, **s.labels) for s in before.samples("imgsearch_watcher_events")
    )
    assert before.value("imgsearch_store_errors_total", op="collection_exists") >= 1

    # Docs and code cannot drift: same metric families, types and label names.
    documented = documented_metrics()
    exported = {
        name
        for name in after.families
        if name.startswith("imgsearch_") and not name.endswith("_created")  # counter start times
    }
    assert exported == {d.family for d in documented.values()}, "update docs/operations.md"
    for doc in documented.values():
        family = after.families[doc.family]
        assert family.type == doc.type, doc.name
        assert family.samples, f"{doc.name} has no series after the traffic"
        labels = {key for s in family.samples for key in s.labels if key != "le"}
        assert labels == doc.labels, (doc.name, labels)


def test_held_deletions_and_missing_folder_show_in_gauges(
    serve: Callable[..., Served], photo_folder: Path, sample_photos: list[Path], tmp_path: Path
) -> None:
    # 12 identical copies: indexed by reusing one vector, so cheap to add.
    copies = photo_folder / "copies"
    copies.mkdir()
    for i in range(12):
        shutil.copy(sample_photos[0], copies / f"{i}.jpg")
    total = len(sample_photos) + 12
    first, _ = _start(serve, photo_folder, tmp_path / "data")
    first.wait_idle()
    assert first.client.status().indexed == total
    first.stop()

    # While stopped, more than half the folder goes away: the start-up scan holds the deletions.
    shutil.rmtree(copies)
    second, port = _start(serve, photo_folder, tmp_path / "data")
    second.wait_idle()
    before = Scrape(port)
    status = second.client.status()
    assert (status.held_deletions, status.indexed) == (12, total)
    assert before.value("imgsearch_deletions_held") == 12
    assert before.value("imgsearch_images_indexed") == total
    assert before.value("imgsearch_reconcile_runs_total", result="deletion_held") >= 1

    second.client.rescan(allow_mass_delete=True)
    wait_until(_settled(second, len(sample_photos)), timeout=30)
    after = Scrape(port)
    assert after.value("imgsearch_deletions_held") == 0
    assert after.value("imgsearch_images_indexed") == len(sample_photos)
    deleted = after.value("imgsearch_index_operations_total", op="deleted")
    assert deleted - before.value("imgsearch_index_operations_total", op="deleted") == 12

    # The folder disappears (an unmounted disk) and comes back.
    away = photo_folder.with_name("away")
    photo_folder.rename(away)
    wait_until(lambda: Scrape(port).value("imgsearch_folder_available") == 0, timeout=15)
    assert Scrape(port).value("imgsearch_images_indexed") == len(sample_photos)
    away.rename(photo_folder)
    wait_until(lambda: Scrape(port).value("imgsearch_folder_available") == 1, timeout=15)


def _total(scrape: Scrape, family: str) -> float:
    """A counter summed over all its label values."""
    return sum(s.value for s in scrape.samples(family) if s.name == family + "_total")


def _version() -> str:
    from imgsearch import __version__

    return __version__
