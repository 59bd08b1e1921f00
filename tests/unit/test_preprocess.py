"""Decoding: orientation, size, formats and limits, on real photos."""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from imgsearch.errors import ImageTooLargeError, InvalidImageError
from imgsearch.model.preprocess import (
    DecodeLimits,
    _symmetric_eigenvalues,
    content_box,
    decode_image,
)
from imgsearch.settings import BUNDLED_SAMPLES
from tests.imaging import encode, load, on_screen, progressive_jpeg, scan_bomb

LIMITS = DecodeLimits()


def test_exif_orientation_is_applied() -> None:
    rotated = BUNDLED_SAMPLES / "rocket_launch.jpg"
    with Image.open(rotated) as raw:
        assert raw.getexif().get(0x0112) == 6  # stored sideways, displayed upright
        stored_w, stored_h = raw.size
    decoded = decode_image(rotated.read_bytes(), 384, LIMITS)
    height, width = decoded.pixels.shape[:2]
    assert stored_w < stored_h
    assert width > height  # upright: landscape
    assert max(width, height) == 384


def test_longer_side_is_resized_never_cropped(sample_photos: list[Path]) -> None:
    for photo in sample_photos:
        image = load(photo)
        decoded = decode_image(photo.read_bytes(), 256, LIMITS)
        height, width = decoded.pixels.shape[:2]
        assert max(width, height) == 256
        assert width / height == pytest.approx(image.width / image.height, rel=0.02)
        assert decoded.pixels.dtype == np.uint8


def test_large_jpeg_uses_draft_decoding_and_matches_full_decode(sample_photos: list[Path]) -> None:
    big = load(sample_photos[0]).resize((4000, 3000))
    data = encode(big, quality=92)
    decoded = decode_image(data, 384, LIMITS)
    reference = np.asarray(big.resize((384, 288), Image.Resampling.BILINEAR), dtype=np.float32)
    assert decoded.pixels.shape == (288, 384, 3)
    assert np.abs(decoded.pixels.astype(np.float32) - reference).mean() < 6


def test_transparency_is_flattened_on_white() -> None:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    decoded = decode_image(encode(image, "PNG"), 64, LIMITS)
    assert decoded.pixels.min() == 255


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_formats_decode_by_content(fmt: str, sample_photos: list[Path]) -> None:
    image = load(sample_photos[0])
    decoded = decode_image(encode(image.convert("RGB"), fmt), 128, LIMITS)
    assert decoded.format == fmt
    assert max(decoded.pixels.shape[:2]) == 128


def test_heic_decodes(sample_photos: list[Path]) -> None:
    image = load(sample_photos[0])
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=80)
    decoded = decode_image(buffer.getvalue(), 128, LIMITS)
    assert decoded.format == "HEIF"
    assert max(decoded.pixels.shape[:2]) == 128


def test_limits() -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"", 128, LIMITS)
    with pytest.raises(ImageTooLargeError, match="more pixels than the limit"):
        decode_image(encode(Image.new("RGB", (300, 300))), 128, DecodeLimits(max_pixels=80_000))
    with pytest.raises(InvalidImageError, match="smaller than 16"):
        decode_image(encode(Image.new("RGB", (200, 8))), 128, LIMITS)


def test_decoding_leaves_the_process_warning_filters_alone(
    sample_photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filters are one list for all threads: a decode that swapped them (catch_warnings)
    dropped or leaked the filters of code running beside it, FastAPI's route building
    included, whose warning then failed CI."""
    seen_while_decoding: list[list[object]] = []
    open_image = Image.open

    def open_and_look(*args: object, **kwargs: object) -> Image.Image:
        seen_while_decoding.append(list(warnings.filters))
        return open_image(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "open", open_and_look)
    before = list(warnings.filters)
    decode_image(sample_photos[0].read_bytes(), 128, LIMITS)
    assert seen_while_decoding == [before]


def test_content_box_finds_a_photo_on_a_page(sample_photos: list[Path]) -> None:
    for photo in sample_photos[:4]:
        page, (left, top, right, bottom) = on_screen(load(photo))
        decoded = decode_image(encode(page), 384, DecodeLimits())
        box = content_box(decoded)
        assert box is not None, photo.name
        width, height = page.size
        expected = (left / width, top / height, right / width, bottom / height)
        # The decoded page is 384 px wide: a cell is 1/384 of the side; allow a few.
        assert np.allclose(box, expected, atol=4 / 384), (photo.name, box, expected)


@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
def test_content_box_peels_a_border_on_one_side_only(sample_photos: list[Path], side: str) -> None:
    """Only one edge is flat (a caption bar, a letterbox on one side): it is still peeled."""
    photo = load(sample_photos[0]).resize((300, 200))
    width, height = (300, 260) if side in ("top", "bottom") else (380, 200)
    canvas = Image.new("RGB", (width, height), (240, 240, 240))
    at = {"top": (0, 60), "bottom": (0, 0), "left": (80, 0), "right": (0, 0)}[side]
    canvas.paste(photo, at)
    box = content_box(decode_image(encode(canvas, quality=95), 384, DecodeLimits()))
    expected = (at[0] / width, at[1] / height, (at[0] + 300) / width, (at[1] + 200) / height)
    assert box is not None and np.allclose(box, expected, atol=4 / 384), (box, expected)


def test_content_box_leaves_photos_without_borders_alone(sample_photos: list[Path]) -> None:
    for photo in sample_photos:
        decoded = decode_image(photo.read_bytes(), 384, DecodeLimits())
        assert content_box(decoded) is None, photo.name


def test_decoding_a_box_matches_decoding_the_cropped_file(sample_photos: list[Path]) -> None:
    image = load(sample_photos[0])
    box = (0.25, 0.1, 0.75, 0.6)
    pixels = (
        round(box[0] * image.width),
        round(box[1] * image.height),
        round(box[2] * image.width),
        round(box[3] * image.height),
    )
    data = encode(image, "PNG")
    part = decode_image(data, 384, DecodeLimits(), box)
    whole = decode_image(encode(image.crop(pixels), "PNG"), 384, DecodeLimits())
    assert part.pixels.shape == whole.pixels.shape
    assert max(part.pixels.shape[:2]) == 384  # the box gets the full input size
    assert np.abs(part.pixels.astype(int) - whole.pixels.astype(int)).mean() < 1.0


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding() -> None:
    bomb = scan_bomb(3000)
    started = time.monotonic()
    with pytest.raises(ImageTooLargeError, match=r"JPEG has \d+ scans"):
        decode_image(bomb, 384, LIMITS)
    assert time.monotonic() - started < 0.5
    ordinary = progressive_jpeg(Image.effect_noise((800, 600), 60).convert("RGB"))
    assert decode_image(ordinary, 384, LIMITS).pixels.shape[1] == 384


def test_closed_form_eigenvalues_match_lapack() -> None:
    """The page test's colour covariances: random ones, a flat cell (all zero), grey (a
    multiple of the identity) and two-colour text (rank one), where the cubic degenerates."""
    rng = np.random.default_rng(7)
    colours = rng.normal(0, 40, (500, 64, 3))
    ink = rng.normal(0, 60, (50, 64, 1)) * np.array([0.2, 0.5, 0.8])
    samples = np.concatenate([colours, ink])
    matrices = np.einsum("nki,nkj->nij", samples, samples) / 64
    matrices = np.concatenate([matrices, np.zeros((1, 3, 3)), 25 * np.eye(3)[None]])
    six = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
    entries = [matrices[:, i, j].astype(np.float32) for i, j in six]
    found = np.stack(_symmetric_eigenvalues(*entries), axis=-1)
    expected = np.linalg.eigvalsh(matrices)
    assert np.allclose(found, expected, rtol=1e-4, atol=1e-3 * expected.max())
