"""Issue 7: concurrency limit, deadlines and symlinks that point out of the folder."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from imgsearch.v1 import searcher_pb2
from tests.conftest import Served
from tests.imaging import encode, load
from tests.processes import status_code


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
