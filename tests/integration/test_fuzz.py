"""Issue 7: fuzzing the decode path and the Search handler (bounded, deterministic in CI)."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imgsearch.errors import InvalidImageError
from imgsearch.model.preprocess import DecodeLimits, decode_image
from imgsearch.v1 import searcher_pb2
from tests.conftest import Served
from tests.imaging import encode, load, scan_bomb

LIMITS = DecodeLimits(max_pixels=4_000_000)
FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,  # the same cases on every CI run; `--hypothesis-seed` explores more
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _seeds() -> list[bytes]:
    from imgsearch.settings import BUNDLED_SAMPLES

    photo = load(next(p for p in sorted(BUNDLED_SAMPLES.iterdir()) if p.suffix == ".jpg"))
    photo.thumbnail((96, 96))
    out = [encode(photo, fmt) for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")]
    frames = io.BytesIO()
    photo.save(frames, "GIF", save_all=True, append_images=[photo.rotate(90)] * 3)
    return [*out, frames.getvalue()]


SEEDS = _seeds()


def _decode_is_safe(data: bytes) -> None:
    started = time.monotonic()
    try:
        image = decode_image(data, 128, LIMITS)
    except InvalidImageError:
        pass  # the only failure allowed: a clear InvalidImageError
    else:
        assert image.pixels.ndim == 3
        assert image.pixels.shape[2] == 3
        assert max(image.pixels.shape[:2]) == 128
    assert time.monotonic() - started < 5.0


@FUZZ
@given(st.binary(max_size=2048))
def test_decode_random_bytes(data: bytes) -> None:
    _decode_is_safe(data)


@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.sampled_from("xit")),
        min_size=1,
        max_size=12,
    ),
)
def test_decode_mutated_images(seed: bytes, edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(seed)
    for position, value, kind in edits:
        at = position % max(1, len(data))
        if kind == "x" and data:  # flip a byte
            data[at] ^= value or 1
        elif kind == "i":  # insert a byte
            data.insert(at, value)
        elif kind == "t":  # truncate
            del data[at:]
    _decode_is_safe(bytes(data))


def test_decompression_bombs_are_refused_before_decoding() -> None:
    bomb = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(bomb, "PNG", optimize=True)  # ~100 kB, 144 Mpx
    assert len(bomb.getvalue()) < 1_000_000
    started = time.monotonic()
    with pytest.raises(InvalidImageError, match="more pixels than the limit"):
        decode_image(bomb.getvalue(), 128, DecodeLimits())
    assert time.monotonic() - started < 1.0


def test_search_handler_fuzz(photo_folder: Path, serve: Callable[..., Served]) -> None:
    served = serve(photo_folder)
    served.wait_idle()
    search = served.client._searcher.Search
    allowed = {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
    }

    @settings(max_examples=120, deadline=None, derandomize=True)
    @given(
        image=st.one_of(st.binary(max_size=512), st.sampled_from(SEEDS)),
        path=st.one_of(st.none(), st.text(max_size=40)),
        limit=st.integers(0, 2**32 - 1),
        min_score=st.floats(width=32),
        subfolder=st.text(max_size=20),
    )
    def one(image: bytes, path: str | None, limit: int, min_score: float, subfolder: str) -> None:
        request = searcher_pb2.SearchRequest(limit=limit, min_score=min_score, subfolder=subfolder)
        if path is None:
            request.image = image
        else:
            request.path = path
        try:
            search(request, timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() in allowed, (exc.code(), exc.details())
            assert exc.details()

    one()
    # still serving, still right
    photo = next(photo_folder.iterdir())
    assert served.client.search(photo.read_bytes(), limit=1).matches[0].path == photo.name


def _hostile_folder(folder: Path, photo: Path) -> list[str]:
    """Special files and odd names beside the photos (issue 15): the path queries to try."""
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "dir.jpg").mkdir()
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    odd = [b"bad\xff\xfe.jpg", b"new\nline.jpg", b"tab\there.jpg", f"{photo.name}#region1".encode()]
    for name in odd:
        Path(os.fsdecode(os.fsencode(folder) + b"/" + name)).write_bytes(photo.read_bytes())
    return [
        "fifo.jpg",
        "zero.jpg",
        "dir.jpg",
        "loop.jpg",
        "../../etc/passwd",
        # As `imgsearch status` shows them (a request's path is UTF-8 text).
        *(name.decode("utf-8", "backslashreplace") for name in odd),
    ]


def _sixteen_bit_png(width: int, height: int, level: int) -> bytes:
    out = io.BytesIO()
    Image.new("I;16", (width, height), level).save(out, "PNG")
    return out.getvalue()


def test_hostile_shapes_fuzz(
    photo_folder: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    """Scan bombs, high-bit-depth PNGs, special files and odd names, drawn together against a
    live server: each answer is a precise status within its deadline, and the server keeps
    serving the right answer afterwards."""
    paths = _hostile_folder(photo_folder, sample_photos[0])
    served = serve(photo_folder)
    served.wait_idle()
    search = served.client._searcher.Search
    bombs = {scans: scan_bomb(scans) for scans in (101, 400, 3000)}
    allowed = {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(
        shape=st.one_of(
            st.sampled_from(sorted(bombs)).map(lambda scans: ("image", bombs[scans])),
            st.tuples(st.integers(16, 3000), st.integers(16, 3000), st.integers(0, 65535)).map(
                lambda whl: ("image", _sixteen_bit_png(*whl))
            ),
            st.sampled_from(paths).map(lambda path: ("path", path)),
        )
    )
    def one(shape: tuple[str, bytes | str]) -> None:
        kind, value = shape
        request = searcher_pb2.SearchRequest(limit=3)
        if kind == "image":
            assert isinstance(value, bytes)
            request.image = value
        else:
            assert isinstance(value, str)
            request.path = value
        started = time.monotonic()
        try:
            search(request, timeout=15)
        except grpc.RpcError as exc:
            assert exc.code() in allowed, (exc.code(), exc.details())
            assert exc.details() and str(photo_folder) not in exc.details()
        assert time.monotonic() - started < 10, kind

    one()
    for photo in sample_photos[:3]:  # still serving, still right
        assert served.client.search(photo.read_bytes(), limit=1).matches[0].match
    assert served.client.status().indexed >= len(sample_photos)
