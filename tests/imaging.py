"""Query transforms applied to real photos: the degraded copies a user searches with."""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps


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


def variants(photos: list[Path], count: int, side: int = 200) -> list[bytes]:
    """`count` distinct small JPEGs: crops of the photos at varying places, sizes and tints."""
    sources = [load(p) for p in photos]
    out = []
    for i in range(count):
        image = sources[i % len(sources)]
        k = i // len(sources)
        area = 0.35 + (k % 7) * 0.08
        anchor = ((k * 37 % 100) / 100, (k * 61 % 100) / 100)
        piece = crop(image, area, anchor)
        piece.thumbnail((side, side))
        tint = Image.new("RGB", piece.size, ((k * 53) % 256, (k * 97) % 256, (k * 29) % 256))
        out.append(encode(Image.blend(piece, tint, 0.15), quality=85))
    assert len(set(out)) == count
    return out


def on_screen(
    image: Image.Image,
    canvas: tuple[int, int] = (1366, 768),
    share: float = 0.35,
    at: tuple[float, float] = (0.6, 0.55),
    colours: tuple[tuple[int, int, int], tuple[int, int, int]] = ((236, 240, 244), (40, 60, 90)),
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The photo shown small on a two-tone page (a screenshot); also its pixel box on it."""
    page = Image.new("RGB", canvas, colours[0])
    page.paste(Image.new("RGB", (canvas[0], canvas[1] // 7), colours[1]), (0, 0))
    scale = share * canvas[0] / image.width
    size = (round(image.width * scale), round(image.height * scale))
    left = round((canvas[0] - size[0]) * at[0])
    top = round((canvas[1] - size[1]) * at[1])
    page.paste(image.resize(size, Image.Resampling.BILINEAR), (left, top))
    return page, (left, top, left + size[0], top + size[1])


def progressive_jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, progressive=True)
    return out.getvalue()


def scan_bomb(scans: int) -> bytes:
    """A real progressive JPEG whose last scan is repeated `scans` times: valid, small (a flat
    image's scans are a few bytes), and each repetition one more pass over the whole image."""
    data = progressive_jpeg(Image.new("RGB", (4000, 4000), (120, 130, 140)))
    last_scan, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last_scan:end] * scans + data[end:]


def on_page(
    image: Image.Image, share: float = 0.35, dark: bool = False
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The photo inside an article page: a header bar with a title, a navigation column, the
    photo at `share` of the width with text beside it; also the photo's pixel box."""
    width, height = 1280, 860
    ground, ink = ((28, 28, 32), (225, 225, 225)) if dark else ((252, 252, 250), (35, 35, 35))
    page = Image.new("RGB", (width, height), ground)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=16)
    draw.rectangle((0, 0, width, 72), fill=(30, 90, 160))
    draw.text(
        (24, 22), "Where This Picture Came From", fill="white", font=ImageFont.load_default(28)
    )
    draw.rectangle((0, 72, 200, height), fill=(236, 238, 242) if not dark else (44, 46, 52))
    for row in range(10):
        draw.text((20, 100 + 34 * row), f"Section {row + 1}", fill=ink, font=font)
    size = (round(share * width), round(share * width * image.height / image.width))
    left, top = 224, 100
    page.paste(image.resize(size, Image.Resampling.BILINEAR), (left, top))
    draw.text((left, top + size[1] + 8), "A caption under the photo", fill=ink, font=font)
    words = ("the", "photo", "was", "shared", "by", "many", "readers", "who", "asked", "where")
    for row in range((height - 120) // 30):
        line = " ".join(words[(row + k) % len(words)] for k in range(9))
        draw.text((left + size[0] + 24, 100 + 30 * row), line, fill=ink, font=font)
    return page, (left, top, left + size[0], top + size[1])


def in_feed(image: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The photo as a post in a social-network feed: little text, so not a page to the page
    test; a search bar, a menu of icons, a row of avatars above the post, the photo fitted
    into the post's frame (letterboxed), a sponsored picture in a side card, all in thin
    frames on a grey ground. Also the photo's pixel box."""
    width, height = 1200, 736
    page = Image.new("RGB", (width, height), (240, 242, 245))
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=14)
    draw.rectangle((0, 0, width, 52), fill="white")
    draw.rounded_rectangle((60, 12, 420, 40), radius=12, outline=(200, 200, 205), fill="white")
    draw.text((80, 18), "Search", fill=(120, 120, 120), font=font)
    for row, label in enumerate(("Timeline", "Messages", "Watch", "Groups", "Events")):
        draw.ellipse((20, 80 + 40 * row, 40, 100 + 40 * row), fill=(70, 110, 200))
        draw.text((52, 82 + 40 * row), label, fill=(40, 40, 40), font=font)
    card = (250, 70, 790, 730)
    draw.rectangle(card, fill="white", outline=(215, 215, 220))
    palette = ((220, 80, 60), (60, 160, 90), (230, 180, 40), (90, 90, 200), (160, 60, 160))
    for k in range(8):
        x = 270 + 62 * k
        draw.ellipse((x, 84, x + 44, 128), fill=palette[k % len(palette)], outline="white")
    draw.text((270, 150), "John Doe  2 hours ago", fill=(40, 40, 40), font=font)
    slot = (254, 424, 783, 710)  # where the post's photo goes, letterboxed in black
    draw.rectangle(slot, fill="black")
    scale = min((slot[2] - slot[0]) / image.width, (slot[3] - slot[1]) / image.height)
    size = (round(image.width * scale), round(image.height * scale))
    left = slot[0] + (slot[2] - slot[0] - size[0]) // 2
    top = slot[1] + (slot[3] - slot[1] - size[1]) // 2
    page.paste(image.resize(size, Image.Resampling.BILINEAR), (left, top))
    draw.rectangle((830, 70, 1180, 330), fill="white", outline=(215, 215, 220))
    draw.text((845, 80), "Sponsored", fill=(40, 40, 40), font=font)
    ad = Image.linear_gradient("L").resize((300, 160)).convert("RGB")
    page.paste(ImageOps.colorize(ad.convert("L"), (30, 60, 120), (250, 200, 90)), (855, 110))
    return page, (left, top, left + size[0], top + size[1])


def burst_pair(image: Image.Image, tilt: float = 0.02) -> tuple[Image.Image, Image.Image]:
    """Two frames of one scene a moment apart: overlapping views of 82% of each side, the
    second shifted by 7% of the width, zoomed in 5% and seen under a slight perspective
    (corners moved by `tilt` of the width)."""
    width, height = image.size
    w, h = width * 0.82, height * 0.82
    first = image.crop((0, 0, round(w), round(h)))
    x, y, zw, zh = 0.07 * width + w * 0.025, 0.03 * height + h * 0.025, w / 1.05, h / 1.05
    tilt = tilt * zw
    quad = (x + tilt, y, x, y + zh, x + zw, y + zh - tilt, x + zw - tilt, y + tilt / 2)
    second = image.transform(
        (round(zw), round(zh)), Image.Transform.QUAD, quad, Image.Resampling.BILINEAR
    )
    return first, second


def shuffled_tiles(image: Image.Image, per_side: int, seed: int = 1) -> Image.Image:
    """The image cut into per_side x per_side tiles put back in a random order: its colours
    and textures stay, no one homography maps it onto the original."""
    width, height = image.width // per_side, image.height // per_side
    tiles = [
        image.crop((i * width, j * height, (i + 1) * width, (j + 1) * height))
        for j in range(per_side)
        for i in range(per_side)
    ]
    random.Random(seed).shuffle(tiles)
    out = Image.new("RGB", (width * per_side, height * per_side))
    for k, tile in enumerate(tiles):
        out.paste(tile, ((k % per_side) * width, (k // per_side) * height))
    return out
