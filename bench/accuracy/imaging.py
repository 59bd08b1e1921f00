"""Decoding shared by the baseline methods and the query maker (the production path has its own)."""

from __future__ import annotations

import io

from PIL import Image, ImageOps

_WHITE = (255, 255, 255)


def open_rgb(data: bytes, max_side: int | None = None) -> Image.Image:
    """Decode to upright RGB, transparency flattened onto white (as production does).

    With `max_side`, the longer side is shrunk to at most that many pixels (JPEGs are decoded
    in DCT draft mode first, which is what a fast implementation of any method would do).
    """
    image: Image.Image = Image.open(io.BytesIO(data))
    if max_side is not None and image.format == "JPEG":
        scale = max_side / max(image.size)
        if scale < 1:
            image.draft("RGB", (int(image.width * scale) + 1, int(image.height * scale) + 1))
    image.load()
    image = ImageOps.exif_transpose(image)
    image = flatten(image)
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return image


def flatten(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clipping.
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()
