"""Query transforms applied to real photos: the degraded copies a user searches with."""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageOps


def load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=quality)
    return buffer.getvalue()


def crop(image: Image.Image, area: float, anchor: tuple[float, float] = (0.5, 0.5)) -> Image.Image:
    """A crop keeping `area` of the pixels (same aspect), placed at `anchor` (0..1 each axis)."""
    side = math.sqrt(area)
    width, height = round(image.width * side), round(image.height * side)
    left = round((image.width - width) * anchor[0])
    top = round((image.height - height) * anchor[1])
    return image.crop((left, top, left + width, top + height))


def rescale(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC)


def recompress(image: Image.Image, quality: int) -> Image.Image:
    return Image.open(io.BytesIO(encode(image, quality=quality))).convert("RGB")
