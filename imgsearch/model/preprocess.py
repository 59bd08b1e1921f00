"""Pure image decoding and preprocessing: bytes in, bounded RGB pixels out.

Every limit is checked from the header before pixels are decoded, so a hostile file costs
bounded memory and time. The whole image is kept (never centre-cropped): a cropped query
may come from any part of its source, borders included.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pillow_heif
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from imgsearch.errors import ImageTooLargeError, InvalidImageError, UnrecognisedImageError
from imgsearch.settings import MAX_PIXELS, MIN_SIDE

pillow_heif.register_heif_opener()

_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds applied to every decoded image."""

    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An upright RGB image resized so that its longer side equals the model input size."""

    pixels: NDArray[np.uint8]  # H x W x 3
    original_width: int
    original_height: int
    format: str


Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) as fractions of width and height


def decode_image(
    data: bytes, target_side: int, limits: DecodeLimits, box: Box | None = None
) -> DecodedImage:
    """Decode an encoded image file and resize its longer side to `target_side`; with `box`,
    only that part of the (upright) image, at the resolution the box deserves.

    Raises:
        InvalidImageError: empty, unrecognised, truncated or degenerate image.
        ImageTooLargeError: more pixels than `limits.max_pixels` (checked from the header).
    """
    if not data:
        raise InvalidImageError("image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit replaces Pillow's global bomb warning, and a corrupt file
            # ends in one precise error rather than a trail of decoder warnings.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            image = Image.open(io.BytesIO(data))
            return _decode_opened(image, target_side, limits, box)
    except UnidentifiedImageError as exc:
        raise UnrecognisedImageError("not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires in open() for headers far beyond any sane size.
        raise ImageTooLargeError(
            f"image has more pixels than the limit of {limits.max_pixels} ({exc})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        # Pillow reports truncated and corrupt data through all of these.
        raise InvalidImageError(f"corrupt or truncated image data: {exc}") from exc


def _decode_opened(
    image: Image.Image, target_side: int, limits: DecodeLimits, box: Box | None
) -> DecodedImage:
    width, height = image.size
    image_format = image.format or "unknown"
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, "
            f"more pixels than the limit of {limits.max_pixels}"
        )
    if min(width, height) < limits.min_side:
        raise InvalidImageError(
            f"image is {width}x{height}, smaller than {limits.min_side} pixels on a side"
        )
    share = 1.0 if box is None else max(box[2] - box[0], box[3] - box[1])
    scale = target_side / (max(width, height) * max(share, 1e-3))
    if image_format == "JPEG" and scale < 1:
        # DCT-domain downscaling: decodes a 12 MP JPEG at 1/8 the cost when the model needs less.
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    image.load()
    image = ImageOps.exif_transpose(image)
    image = _to_rgb(image)
    if box is not None:
        w, h = image.size
        left, top = min(round(box[0] * w), w - 1), min(round(box[1] * h), h - 1)
        image = image.crop(
            (left, top, max(left + 1, round(box[2] * w)), max(top + 1, round(box[3] * h)))
        )
    new_width, new_height = _fit_longer_side(image.width, image.height, target_side)
    image = image.resize((new_width, new_height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    pixels = np.asarray(image, dtype=np.uint8)
    return DecodedImage(pixels, width, height, image_format)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white so a pasted logo looks the same in query and index."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _fit_longer_side(width: int, height: int, side: int) -> tuple[int, int]:
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def rescaled(image: DecodedImage, side: int) -> DecodedImage:
    """The same decoded image with its longer side resized to `side` (for multi-scale queries)."""
    height, width = image.pixels.shape[:2]
    new_width, new_height = _fit_longer_side(width, height, side)
    pixels = Image.fromarray(image.pixels).resize(
        (new_width, new_height), Image.Resampling.BILINEAR
    )
    return DecodedImage(
        np.asarray(pixels, dtype=np.uint8),
        image.original_width,
        image.original_height,
        image.format,
    )


def content_box(
    image: DecodedImage, *, flatness: float = 6.0, keep_at_most: float = 0.95
) -> Box | None:
    """The part of a query inside flat borders: padding, a slide or page background, a
    letterbox. Rows and columns of one colour (per-channel spread under `flatness`) are peeled
    off every edge until none is left, so a two-tone canvas goes too. None when there is
    nothing to peel (under 1 - `keep_at_most` of the area) or when almost nothing is left.

    A photo shown small on a screenshot or with wide borders is described mostly by its
    surroundings; describing the box too lets its source win again.
    """
    pixels = image.pixels.astype(np.float32)
    height, width = pixels.shape[:2]
    top, bottom, left, right = 0, height, 0, width
    for _ in range(4):  # a few passes: peeling columns can make more rows flat, and back
        before = (top, bottom, left, right)
        block = pixels[top:bottom, left:right]
        flat_rows = block.std(axis=1).max(axis=1) < flatness
        flat_cols = block.std(axis=0).max(axis=1) < flatness
        while bottom - top > 1 and flat_rows[top - before[0]]:
            top += 1
        while bottom - top > 1 and flat_rows[bottom - 1 - before[0]]:
            bottom -= 1
        while right - left > 1 and flat_cols[left - before[2]]:
            left += 1
        while right - left > 1 and flat_cols[right - 1 - before[2]]:
            right -= 1
        if (top, bottom, left, right) == before:
            break
    share = (bottom - top) * (right - left) / (height * width)
    if share > keep_at_most or min(bottom - top, right - left) < 8:
        return None
    return left / width, top / height, right / width, bottom / height
