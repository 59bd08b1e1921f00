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

from imgsearch.errors import ImageTooLargeError, InvalidImageError

pillow_heif.register_heif_opener()

_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds applied to every decoded image."""

    max_pixels: int = 64_000_000
    min_side: int = 16


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An upright RGB image resized so that its longer side equals the model input size."""

    pixels: NDArray[np.uint8]  # H x W x 3
    original_width: int
    original_height: int
    format: str


def decode_image(data: bytes, target_side: int, limits: DecodeLimits) -> DecodedImage:
    """Decode an encoded image file and resize its longer side to `target_side`.

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
            return _decode_opened(image, target_side, limits)
    except UnidentifiedImageError as exc:
        raise InvalidImageError("not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires in open() for headers far beyond any sane size.
        raise ImageTooLargeError(
            f"image has more pixels than the limit of {limits.max_pixels} ({exc})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        # Pillow reports truncated and corrupt data through all of these.
        raise InvalidImageError(f"corrupt or truncated image data: {exc}") from exc


def _decode_opened(image: Image.Image, target_side: int, limits: DecodeLimits) -> DecodedImage:
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
    scale = target_side / max(width, height)
    if image_format == "JPEG" and scale < 1:
        # DCT-domain downscaling: decodes a 12 MP JPEG at 1/8 the cost when the model needs less.
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    image.load()
    image = ImageOps.exif_transpose(image)
    image = _to_rgb(image)
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
