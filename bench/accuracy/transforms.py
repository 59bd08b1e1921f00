"""Query families: what a copy of a photo may have gone through, implemented with AugLy.

Every family is a pure function of (image, seeded RNG): the same source, family and seed give
the same query bytes. Parameters are drawn at random within each family's range and kept
with the query, so a failure can be replayed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import augly.image as imaugs  # type: ignore[import-untyped]
from augly.utils import EMOJI_DIR, SCREENSHOT_TEMPLATES_DIR  # type: ignore[import-untyped]
from PIL import Image, ImageDraw, ImageFont

from bench.accuracy.imaging import encode

Params = dict[str, Any]
Step = Callable[[Image.Image, random.Random, Params], Image.Image]
_EMOJIS = sorted(Path(EMOJI_DIR).glob("*/*.png"))
_SCREENSHOT_TEMPLATES = ("web.png", "mobile.png")


def _pil(result: Any) -> Image.Image:  # noqa: ANN401 - AugLy is untyped
    assert isinstance(result, Image.Image), f"AugLy returned {type(result)}"
    return result


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    description: str
    steps: tuple[Step, ...]  # empty for "combo": two steps drawn per query
    jpeg_quality: tuple[int, int] = (90, 90)  # the query's own encoding
    quality_family: bool = False  # one of the "quality/colour/resize/blur" target families


def _crop(area: float) -> Step:
    def crop(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
        # A random aspect (within 2:3 .. 3:2 of the source's), at a random position.
        aspect = math.exp(rng.uniform(-0.4, 0.4))
        width = min(1.0, math.sqrt(area) * aspect)
        height = min(1.0, area / width)
        width = area / height
        x1, y1 = rng.uniform(0, 1 - width), rng.uniform(0, 1 - height)
        params["crop"] = [round(v, 4) for v in (x1, y1, x1 + width, y1 + height)]
        return _pil(imaugs.crop(image, x1=x1, y1=y1, x2=x1 + width, y2=y1 + height))

    return crop


def _rescale(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    factor = rng.uniform(0.25, 0.5)
    params["scale"] = round(factor, 3)
    return _pil(imaugs.scale(image, factor=factor))


def _stretch(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    # A fixed-size thumbnail or a squashed re-post: one axis scaled 0.6-0.85x the other.
    scale, squash = rng.uniform(0.4, 0.8), rng.uniform(0.6, 0.85)
    across, down = (scale, scale * squash) if rng.random() < 0.5 else (scale * squash, scale)
    params["stretch"] = [round(across, 3), round(down, 3)]
    width, height = image.size
    return _pil(
        imaugs.resize(
            image, width=max(1, round(width * across)), height=max(1, round(height * down))
        )
    )


def _blur(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    # Radius relative to a 640-px rendering, so small and large sources blur alike.
    radius = rng.uniform(1.5, 4.0) * max(image.size) / 640
    params["blur_radius"] = round(radius, 2)
    return _pil(imaugs.blur(image, radius=radius))


def _colour(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    def factor(low: float, high: float) -> float:
        # At least a 20% change, up or down.
        return rng.choice((rng.uniform(low, 0.8), rng.uniform(1.2, high)))

    brightness, contrast, saturation = factor(0.5, 1.6), factor(0.5, 1.6), factor(0.2, 2.2)
    params["colour"] = [round(v, 3) for v in (brightness, contrast, saturation)]
    return _pil(
        imaugs.color_jitter(
            image,
            brightness_factor=brightness,
            contrast_factor=contrast,
            saturation_factor=saturation,
        )
    )


def _grayscale(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    del rng, params
    return _pil(imaugs.grayscale(image))


def _overlay(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    x, y = rng.uniform(0.0, 0.6), rng.uniform(0.0, 0.8)
    if rng.random() < 0.5:
        size = rng.uniform(0.08, 0.2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        text = [rng.randrange(1, 1000) for _ in range(rng.randint(6, 14))]
        params["overlay"] = {"text": len(text), "size": round(size, 3), "x": x, "y": y}
        return _pil(
            imaugs.overlay_text(image, text=text, font_size=size, color=colour, x_pos=x, y_pos=y)
        )
    emoji = rng.choice(_EMOJIS)
    size = rng.uniform(0.2, 0.4)
    params["overlay"] = {"emoji": emoji.name, "size": round(size, 3), "x": x, "y": y}
    return _pil(
        imaugs.overlay_emoji(image, emoji_path=str(emoji), emoji_size=size, x_pos=x, y_pos=y)
    )


def _pad(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    w, h = rng.uniform(0.1, 0.35), rng.uniform(0.1, 0.35)
    colour = tuple(rng.randrange(256) for _ in range(3))
    params["pad"] = [round(w, 3), round(h, 3)]
    return _pil(imaugs.pad(image, w_factor=w, h_factor=h, color=colour))


def _rotate(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    # AugLy crops the rotated image to its largest upright rectangle, as editors do.
    degrees = rng.uniform(3, 12) * rng.choice((-1, 1))
    params["degrees"] = round(degrees, 2)
    return _pil(imaugs.rotate(image, degrees=degrees))


def _hflip(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    del rng, params
    return _pil(imaugs.hflip(image))


def _screenshot(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    if rng.random() < 0.5:
        template = rng.choice(_SCREENSHOT_TEMPLATES)
        params["screenshot"] = template
        return _pil(
            imaugs.overlay_onto_screenshot(
                image, template_filepath=str(Path(SCREENSHOT_TEMPLATES_DIR) / template)
            )
        )
    # Scaled down and pasted whole on a plain or two-tone canvas, as a page or a slide shows it.
    width, height = rng.choice(((1280, 800), (1366, 768), (1080, 1920), (1920, 1080)))
    canvas = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    if rng.random() < 0.5:
        band = Image.new("RGB", (width, height // 6), tuple(rng.randrange(256) for _ in range(3)))
        canvas.paste(band, (0, 0))
    share = rng.uniform(0.3, 0.6)  # of the canvas width
    scale = min(share * width / image.width, 0.9 * height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    x, y = rng.randint(0, width - size[0]), rng.randint(0, height - size[1])
    params["screenshot"] = {"canvas": [width, height], "box": [x, y, *size]}
    canvas.paste(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), (x, y))
    return canvas


_TEXT = (
    "the photo was taken on a quiet morning near the harbour and shared by many readers who "
    "asked where it came from and who had made it first before it spread across the web"
)
_WORDS = tuple(_TEXT.split())


def _page(image: Image.Image, rng: random.Random, params: Params) -> Image.Image:
    """The photo inside a rendered web page: a header bar with a title, maybe a navigation
    column, paragraphs of text and a caption; the photo at 28-55% of the page's width, on the
    left or right; light or dark."""
    width = rng.choice((1280, 1366, 1440))
    height = round(width * rng.uniform(0.6, 0.75))
    dark = rng.random() < 0.5
    ground = (24, 26, 30) if dark else (250, 250, 248)
    ink = (220, 220, 220) if dark else (40, 40, 40)
    page = Image.new("RGB", (width, height), ground)
    draw = ImageDraw.Draw(page)
    font_size = rng.choice((14, 16, 18))
    font = ImageFont.load_default(size=font_size)
    title = ImageFont.load_default(size=28)
    bar = rng.randint(56, 90)
    accent = tuple(rng.randrange(40, 200) for _ in range(3))
    draw.rectangle((0, 0, width, bar), fill=accent)
    draw.text(
        (24, bar // 2 - 14), " ".join(rng.sample(_WORDS, 4)).title(), fill="white", font=title
    )
    left = 24
    nav = rng.random() < 0.5
    if nav:
        column = rng.randint(180, 240)
        draw.rectangle((0, bar, column, height), fill=(40, 44, 52) if dark else (236, 238, 242))
        for n in range(rng.randint(6, 12)):
            draw.text((20, bar + 30 + 34 * n), rng.choice(_WORDS).title(), fill=ink, font=font)
        left = column + 24
    share = rng.uniform(0.28, 0.55)
    photo_w = round(share * width)
    photo_h = min(round(photo_w * image.height / image.width), height - bar - 90)
    photo_w = round(photo_h * image.width / image.height)
    on_right = rng.random() < 0.5
    x = width - photo_w - 32 if on_right else left
    y = bar + rng.randint(24, 48)
    page.paste(image.convert("RGB").resize((photo_w, photo_h), Image.Resampling.BILINEAR), (x, y))
    draw.text((x, y + photo_h + 8), " ".join(rng.sample(_WORDS, 6)), fill=ink, font=font)
    text_left, text_right = (left, x - 24) if on_right else (x + photo_w + 24, width - 24)
    line = 16 + font_size
    for row in range(max(0, (height - bar - 60) // line)):
        if row % 6 == 5:
            continue  # a gap between paragraphs
        words, text = rng.sample(_WORDS, len(_WORDS)), ""
        for word in words:
            if draw.textlength(f"{text} {word}", font=font) > text_right - text_left:
                break
            text = f"{text} {word}".strip()
        draw.text((text_left, bar + 30 + row * line), text, fill=ink, font=font)
    params["page"] = {"size": [width, height], "box": [x, y, photo_w, photo_h], "nav": nav}
    params["page"]["dark"] = dark
    return page


_COMBINABLE: dict[str, Step] = {
    "crop50": _crop(0.5),
    "rescale": _rescale,
    "blur": _blur,
    "colour": _colour,
    "grayscale": _grayscale,
    "overlay": _overlay,
    "pad": _pad,
    "rotate": _rotate,
    "hflip": _hflip,
}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("crop70", "crop keeping 70% of the area, random aspect and position", (_crop(0.7),)),
        Family("crop50", "crop keeping 50% of the area", (_crop(0.5),)),
        Family("crop30", "crop keeping 30% of the area", (_crop(0.3),)),
        Family("crop20", "crop keeping 20% of the area", (_crop(0.2),)),
        Family("rescale", "shrunk to 0.25-0.5x", (_rescale,), quality_family=True),
        Family(
            "stretch",
            "resized to another aspect ratio: one side 0.6-0.85x as much as the other",
            (_stretch,),
            quality_family=True,
        ),
        Family("jpeg", "re-encoded as JPEG quality 10-30", (), (10, 30), quality_family=True),
        Family("blur", "Gaussian blur, radius 1.5-4 px at 640 px", (_blur,), quality_family=True),
        Family(
            "colour",
            "brightness, contrast and saturation each changed by 20-120%",
            (_colour,),
            quality_family=True,
        ),
        Family("grayscale", "converted to grey", (_grayscale,), quality_family=True),
        Family("overlay", "a line of text or a large emoji on top", (_overlay,)),
        Family("pad", "borders of 10-35% in a random colour", (_pad,)),
        Family("rotate", "rotated 3-12 degrees, cropped upright", (_rotate,)),
        Family("hflip", "mirrored left-right", (_hflip,)),
        Family(
            "screenshot",
            "scaled and pasted onto a page or screenshot template",
            (_screenshot,),
            (85, 85),
        ),
        Family("combo", "two of the above drawn at random, then JPEG 30-90", (), (30, 90)),
        Family(
            "page",
            "inside a rendered web page (header, text, maybe navigation) at 28-55% of its width",
            (_page,),
            (85, 85),
        ),
        Family(
            "burst",
            "crop keeping 50% of frame a of a burst pair; its sibling frame b is indexed too",
            (_crop(0.5),),
            (75, 90),
        ),
    )
}
QUICK_FAMILIES = ("jpeg", "crop50", "crop20", "screenshot", "page", "burst")
# Made from burst frames (and held-out photos) only; every other family from sources.
BURST_FAMILY = "burst"


def make_query(image: Image.Image, family: Family, seed: str) -> tuple[bytes, Params]:
    """The query bytes for one source image and one family, and the parameters drawn."""
    rng = random.Random(f"{seed}:{family.name}")  # noqa: S311 - reproducible, not secret
    params: Params = {}
    steps = family.steps
    if family.name == "combo":
        names = rng.sample(sorted(_COMBINABLE), 2)
        params["ops"] = names
        steps = tuple(_COMBINABLE[n] for n in names)
    result = image
    for step in steps:
        result = step(result, rng, params)
    quality = rng.randint(*family.jpeg_quality)
    params["quality"] = quality
    return encode(result.convert("RGB"), "JPEG", quality), params
