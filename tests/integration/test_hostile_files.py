"""Files and names a hostile (or unlucky) folder holds: each once broke the service."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client import REGISTRY

from imgsearch.embedder import indexer as indexer_module
from imgsearch.model import ImageEncoder
from imgsearch.searcher.verify import Verifier
from tests.conftest import Served, wait_until
from tests.imaging import crop, encode, load, scan_bomb, variants
from tests.processes import free_port, start_serve

LONG_AGO = 1_000_000_000


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_path_queries_refuse_special_files_at_once(
    serve: Callable[..., Served], photo_folder: Path
) -> None:
    served = serve(photo_folder)
    served.wait_idle()
    os.mkfifo(photo_folder / "fifo.jpg")  # would block a reader forever
    with (photo_folder / "huge.jpg").open("wb") as huge:
        huge.truncate(300 * 1024 * 1024)  # sparse: larger than MAX_FILE_BYTES, costs no disk
    (photo_folder / "loop_a.jpg").symlink_to(photo_folder / "loop_b.jpg")
    (photo_folder / "loop_b.jpg").symlink_to(photo_folder / "loop_a.jpg")
    started = time.monotonic()
    assert _code(lambda: served.client.search_path("fifo.jpg"))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    code, details = _code(lambda: served.client.search_path("huge.jpg"))
    assert (code, "over the limit" in details) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    code, details = _code(lambda: served.client.search_path("loop_a.jpg"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(photo_folder) not in details  # no server path in the reply
    assert time.monotonic() - started < 10  # refused, not read or waited on
    try:
        os.mknod(photo_folder / "zero.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except PermissionError:
        pass  # no device nodes here (not root, or a nodev mount)
    else:
        assert _code(lambda: served.client.search_path("zero.jpg"))[0] != grpc.StatusCode.OK
    wait_until(lambda: served.client.status().pending == 0)
    status = served.client.status()  # the indexer reads none of them either
    assert [(f.path, "over the" in f.reason) for f in status.failures] == [("huge.jpg", True)]


def test_verification_does_not_follow_links_to_devices(
    tmp_path: Path, sample_photos: list[Path], encoder: ImageEncoder
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "candidate.jpg").symlink_to("/dev/zero")
    verifier = Verifier(folder, limits=encoder.limits, max_file_bytes=64 * 1024 * 1024)
    query = verifier.describe(encoder.decode(sample_photos[0].read_bytes()))
    started = time.monotonic()
    assert verifier.verify(query, "candidate.jpg").inliers == 0
    assert time.monotonic() - started < 5  # nothing read from the device


def test_only_documented_formats_are_decoded(
    serve: Callable[..., Served], photo_folder: Path
) -> None:
    served = serve(photo_folder)
    served.wait_idle()
    ppm = Image.new("RGB", (64, 64), (200, 30, 30))
    for name, data in [
        ("ppm", encode(ppm, "PPM")),
        ("tga", encode(ppm, "TGA")),
        ("eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{} loop\n"),
    ]:
        code, details = _code(lambda data=data: served.client.search(data))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "not a recognised image format" in details, (name, details)


def test_a_jpeg_scan_bomb_is_refused_at_once(
    serve: Callable[..., Served], photo_folder: Path
) -> None:
    served = serve(photo_folder)
    served.wait_idle()
    started = time.monotonic()
    code, details = _code(lambda: served.client.search(scan_bomb(3000)))
    assert (code, "scans" in details) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    assert time.monotonic() - started < 2


def test_a_file_that_became_undecodable_loses_its_vectors(
    serve: Callable[..., Served], photo_folder: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    served = serve(photo_folder, data)
    served.wait_idle()
    before = served.client.status().indexed
    target = sorted(photo_folder.iterdir())[0]
    query = encode(crop(load(target), 0.5), quality=60)
    assert served.client.search(query, limit=1).matches[0].path == target.name
    target.write_bytes(target.read_bytes()[:400])  # truncated: no longer an image
    os.utime(target, (LONG_AGO, LONG_AGO))
    wait_until(lambda: served.client.status().failed == 1)
    status = served.client.status()
    assert (status.indexed, status.failures[0].path) == (before - 1, target.name)
    assert target.name not in [m.path for m in served.client.search(query, limit=5).matches]
    served.stop()
    again = serve(photo_folder, data)  # and across a restart
    again.wait_idle()
    assert target.name not in [m.path for m in again.client.search(query, limit=5).matches]


def test_held_deletions_clear_when_the_files_come_back(
    serve: Callable[..., Served], sample_photos: list[Path], tmp_path: Path
) -> None:
    folder, away, data = tmp_path / "photos", tmp_path / "away", tmp_path / "data"
    folder.mkdir()
    for i, image in enumerate(variants(sample_photos, 20)):
        (folder / f"v{i:02d}.jpg").write_bytes(image)
    first = serve(folder, data)
    first.wait_idle()
    first.stop()
    shutil.move(folder, away)  # the disk unmounted while the service was down ...
    folder.mkdir()  # ... and an empty mount point left behind
    second = serve(folder, data)
    wait_until(lambda: second.client.status().state == "deletion_held")
    for file in away.iterdir():  # the disk is back: its files reappear (watch events)
        shutil.move(file, folder / file.name)
    wait_until(lambda: second.client.status().state == "watching", 30)
    status = second.client.status()
    assert (status.indexed, status.held_deletions) == (20, 0)


def test_a_name_that_is_not_utf8_never_jams_its_batch(
    serve: Callable[..., Served], sample_photos: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sample_photos[:3]:
        shutil.copy2(photo, folder / photo.name)
    odd = os.fsencode(folder) + b"/caf\xe9.jpg"  # a Latin-1 name on a UTF-8 system
    with open(odd, "wb") as file:  # noqa: PTH123 - a bytes path
        file.write(sample_photos[3].read_bytes())
    served = serve(folder)
    served.wait_idle()
    status = served.client.status()
    assert (status.indexed, status.failed) == (3, 1)
    assert status.failures[0].path == "caf\\xe9.jpg"
    assert "not UTF-8" in status.failures[0].reason


def test_region_points_of_similar_names_never_collide(
    serve: Callable[..., Served], sample_photos: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy2(sample_photos[0], folder / "a.jpg")
    shutil.copy2(sample_photos[1], folder / "a.jpg#region1")  # once a.jpg's region 1 id
    served = serve(folder, regions=True, model="efficientnet-lite0")
    served.wait_idle()
    sets = served.app.store.descriptors_of(["a.jpg", "a.jpg#region1"])
    assert {p: len(d.vectors) for p, d in sets.items()} == {"a.jpg": 14, "a.jpg#region1": 14}
    for photo, name in [(sample_photos[0], "a.jpg"), (sample_photos[1], "a.jpg#region1")]:
        assert served.client.search(photo.read_bytes(), limit=1).matches[0].path == name


def test_a_file_name_cannot_forge_a_log_line(photo_folder: Path, tmp_path: Path) -> None:
    forged = "2026-01-01 00:00:00,000 ERROR imgsearch: FORGED"
    evil = photo_folder / f"x\n{forged}.jpg"
    evil.write_bytes(b"\xff\xd8 not an image")
    os.utime(evil, (LONG_AGO, LONG_AGO))
    address, log = f"127.0.0.1:{free_port()}", tmp_path / "serve.log"
    process = start_serve(photo_folder, tmp_path / "data", address, stderr=log)
    try:
        wait_until(lambda: "cannot index path=" in log.read_text(), 120, 0.2)
    finally:
        process.terminate()
        process.wait(30)
    lines = log.read_text().splitlines()
    assert not any(line.startswith(forged) for line in lines)
    assert any("x\\n2026-01-01" in line for line in lines)


def test_a_deleted_data_directory_is_noticed(
    serve: Callable[..., Served], photo_folder: Path, tmp_path: Path
) -> None:
    served = serve(photo_folder, tmp_path / "data", health_interval=0.2)
    served.wait_idle()
    channel = grpc.insecure_channel(f"127.0.0.1:{served.app.port}")
    health = health_pb2_grpc.HealthStub(channel)

    def searcher_health() -> int:
        request = health_pb2.HealthCheckRequest(service="imgsearch.v1.Searcher")
        return int(health.Check(request, timeout=5).status)

    try:
        assert searcher_health() == health_pb2.HealthCheckResponse.SERVING
        shutil.rmtree(tmp_path / "data" / "edge")
        wait_until(lambda: searcher_health() == health_pb2.HealthCheckResponse.NOT_SERVING, 20)
    finally:
        channel.close()


def test_transient_read_errors_are_retried_and_rescan_retries_failures(
    serve: Callable[..., Served], photo_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = indexer_module.read_folder_file
    faults = {"astronaut.jpg": [errno.EACCES], "building.jpg": [errno.EINVAL]}

    def flaky(path: Path, max_bytes: int) -> bytes:
        pending = faults.get(path.name)
        if pending:
            code = pending.pop()
            raise OSError(code, os.strerror(code), str(path))
        return real(path, max_bytes)

    monkeypatch.setattr(indexer_module, "read_folder_file", flaky)
    served = serve(photo_folder)
    count = len(list(photo_folder.iterdir()))
    # Permission denied passes: read again after the back-off, without any change to the file.
    wait_until(lambda: served.client.status().indexed == count - 1, 60)
    status = served.client.status()
    assert [(f.path, f.reason) for f in status.failures] == [
        ("building.jpg", "cannot read file: Invalid argument")
    ]
    served.client.rescan()  # retries every failed file
    wait_until(lambda: served.client.status().indexed == count, 30)
    assert served.client.status().failed == 0


def test_mass_deletion_through_events_is_held(
    serve: Callable[..., Served], sample_photos: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    images = variants(sample_photos, 30)
    for i, image in enumerate(images):
        (folder / f"v{i:02d}.jpg").write_bytes(image)
    served = serve(folder)
    served.wait_idle()
    for file in folder.iterdir():  # rm -rf folder/*
        file.unlink()
    wait_until(lambda: served.client.status().state == "deletion_held", 30)
    status = served.client.status()
    assert (status.indexed, status.held_deletions) == (30, 30)
    for i, image in enumerate(images):  # the files are back: nothing was lost
        (folder / f"v{i:02d}.jpg").write_bytes(image)
    wait_until(lambda: served.client.status().state == "watching", 30)
    assert served.client.status().indexed == 30

    shutil.rmtree(folder)  # the folder deleted and made again
    folder.mkdir()
    wait_until(lambda: served.client.status().state == "deletion_held", 30)
    assert served.client.status().indexed == 30
    served.client.rescan(allow_mass_delete=True)  # confirmed: now they go
    wait_until(lambda: served.client.status().indexed == 0, 30)
    assert served.client.status().state == "watching"


def test_a_full_disk_pauses_indexing_and_searches_go_on(
    serve: Callable[..., Served],
    photo_folder: Path,
    sample_photos: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    free = {"bytes": 64 * 2**30}
    monkeypatch.setattr(indexer_module, "free_bytes", lambda _: free["bytes"])
    served = serve(photo_folder)
    served.wait_idle()
    count = served.client.status().indexed
    free["bytes"] = 2**20  # the disk fills up
    (photo_folder / "new.jpg").write_bytes(variants(sample_photos, 1)[0])
    wait_until(lambda: served.client.status().state == "disk_full", 30)
    assert served.client.search(sample_photos[0].read_bytes(), limit=1).matches
    assert served.client.status().indexed == count
    assert REGISTRY.get_sample_value("imgsearch_disk_full") == 1.0
    free["bytes"] = 64 * 2**30  # space is back: indexing carries on by itself
    wait_until(lambda: served.client.status().indexed == count + 1, 30)
    assert served.client.status().state == "watching"
    assert REGISTRY.get_sample_value("imgsearch_disk_full") == 0.0
