"""Bad queries get a precise INVALID_ARGUMENT (or NOT_FOUND) and the server keeps serving."""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from PIL import Image

from imgsearch.v1 import searcher_pb2
from tests.conftest import Served
from tests.imaging import encode, load


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR that claim a huge image, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def served(photo_folder: Path, serve: Callable[..., Served]) -> Served:
    served = serve(photo_folder)
    served.wait_idle()
    return served


def _bad_images(sample_photos: list[Path]) -> dict[str, tuple[bytes, str]]:
    jpeg = encode(load(sample_photos[0]), quality=90)
    rng = random.Random(7)
    one_pixel = encode(Image.new("RGB", (1, 1), "red"), "PNG")
    return {
        "empty": (b"", "empty"),
        "random": (rng.randbytes(5000), "not a recognised image format"),
        "truncated-jpeg": (jpeg[: len(jpeg) // 3], "truncated"),
        "1x1": (one_pixel, "smaller than"),
        "20000x20000-header": (_png_header_only(20000, 20000), "more pixels than the limit"),
        "text": (b"hello, this is not an image\n" * 10, "not a recognised image format"),
    }


@pytest.mark.parametrize(
    "name", ["empty", "random", "truncated-jpeg", "1x1", "20000x20000-header", "text"]
)
def test_bad_image_gets_invalid_argument_and_server_survives(
    name: str, served: Served, sample_photos: list[Path]
) -> None:
    data, expected = _bad_images(sample_photos)[name]
    with pytest.raises(grpc.RpcError) as info:
        served.client.search(data)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in info.value.details()
    with pytest.raises(grpc.RpcError) as embed_info:
        served.client.embed(data)
    assert embed_info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Still serving, and still right.
    response = served.client.search(sample_photos[1].read_bytes(), limit=1)
    assert response.matches[0].path == sample_photos[1].name


def test_bad_fields(served: Served, sample_photos: list[Path]) -> None:
    stub_search = served.client._searcher.Search
    image = sample_photos[0].read_bytes()
    cases = {
        "neither image nor path": (searcher_pb2.SearchRequest(limit=3), "either"),
        "limit too large": (searcher_pb2.SearchRequest(image=image, limit=100000), "maximum"),
        "min_score out of range": (
            searcher_pb2.SearchRequest(image=image, min_score=7),
            "min_score",
        ),
        "traversal path": (searcher_pb2.SearchRequest(path="../../etc/passwd"), "outside"),
        "absolute path": (searcher_pb2.SearchRequest(path="/etc/passwd"), "relative"),
        "traversal subfolder": (
            searcher_pb2.SearchRequest(image=image, subfolder="../x"),
            "subfolder",
        ),
    }
    for label, (request, expected) in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            stub_search(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, label
        assert expected in info.value.details(), (label, info.value.details())
    with pytest.raises(grpc.RpcError) as missing:
        stub_search(searcher_pb2.SearchRequest(path="no/such.jpg"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_oversized_request_is_refused(served: Served) -> None:
    huge = b"\xff" * (33 * 1024 * 1024)
    with pytest.raises(grpc.RpcError) as info:
        served.client.search(huge)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.client.status().indexed > 0
