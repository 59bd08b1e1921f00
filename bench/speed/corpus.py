"""Real photos as 1-4 megapixel JPEGs, and the degraded queries a user searches with.

The sources are the bundled sample photos plus wallpapers and example photos from three Debian
packages (mate-backgrounds, plasma-workspace-wallpapers, opencv-doc), fetched with
`apt-get download` and unpacked with `dpkg-deb -x` into the cache, never committed. Each
benchmark image is a crop of a source at a common photo aspect ratio, resized (up or down)
to 1-4 megapixels and saved as a baseline JPEG at quality 80-95 with 4:2:0 chroma, which is
what a folder of camera or phone photos holds.
"""

from __future__ import annotations

import io
import math
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench.speed.common import SPEED_CACHE, log
from imgsearch.settings import BUNDLED_SAMPLES

DEBIAN_PACKAGES = ("mate-backgrounds", "plasma-workspace-wallpapers", "opencv-doc")
_SAMPLE_SUFFIXES = {".jpg", ".png", ".webp"}
_ASPECTS = ((3, 2), (4, 3), (16, 9), (1, 1), (2, 3), (3, 4))
_ASPECT_WEIGHTS = (4, 3, 2, 1, 2, 2)
_MIN_SOURCE_PIXELS = 250_000
_CALIBRATION_BOARDS = re.compile(r"^(left|right)\d+\.jpg$")  # chessboards, not photos
_COMPLETE = ".complete"
_VERSION = 2  # of the generator: a change makes new files


@dataclass(frozen=True, slots=True)
class Query:
    """A degraded copy of `source` (an index into the photo list) as encoded bytes."""

    source: int
    kind: str
    data: bytes


def bundled_photos() -> list[Path]:
    return sorted(p for p in BUNDLED_SAMPLES.iterdir() if p.suffix in _SAMPLE_SUFFIXES)


def index_photos(sources: list[Path], tag: str) -> list[Path]:
    """The sources as the photos of a folder: JPEG, at most 2048 px (cached)."""
    folder = SPEED_CACHE / "photos" / tag
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, source in enumerate(sources):
        target = folder / f"{i:03d}_{source.stem[:32].replace(' ', '-')}.jpg"
        if not target.is_file():
            with Image.open(source) as image:
                if image.format == "JPEG":
                    image.draft("RGB", (4096, 4096))
                rgb = image.convert("RGB")
                rgb.thumbnail((2048, 2048))
                rgb.save(target, "JPEG", quality=92)
        out.append(target)
    return out


def photo_sources(quick: bool) -> list[Path]:
    """The benchmark's photos: the bundled samples, and for a full run the Debian packages'
    photos too."""
    return bundled_photos() + ([] if quick else debian_photos())


def photo_files(quick: bool) -> list[Path]:
    """The benchmark's photos as the files of a folder (made once, cached)."""
    return index_photos(photo_sources(quick), "quick" if quick else "full")


def debian_photos(cache: Path = SPEED_CACHE) -> list[Path]:
    """Photos from the Debian packages; [] (with a log line) where apt cannot fetch them."""
    photos: list[Path] = []
    for package in DEBIAN_PACKAGES:
        root = _unpacked(package, cache)
        if root is not None:
            photos += _pick_photos(package, root)
    return photos


def _unpacked(package: str, cache: Path) -> Path | None:
    root = cache / "pkgs" / package
    if (root / _COMPLETE).is_file():
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        log(f"apt-get/dpkg-deb not found: {package} photos left out")
        return None
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        result = subprocess.run(
            ["apt-get", "download", package], cwd=debs, capture_output=True, text=True, check=False
        )
        if result.returncode != 0 and "Unable to locate" in result.stderr:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            result = subprocess.run(
                ["apt-get", "download", package],
                cwd=debs,
                capture_output=True,
                text=True,
                check=False,
            )
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            log(f"cannot download {package}: {result.stderr.strip()[-200:]}")
            return None
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
    (root / _COMPLETE).write_text(found[-1].name + "\n")
    return root


def _pixels(path: Path) -> int:
    try:
        with Image.open(path) as image:
            return image.width * image.height
    except OSError:
        return 0


def _pick_photos(package: str, root: Path) -> list[Path]:
    if package == "mate-backgrounds":
        base = root / "usr/share/backgrounds/mate"
        nature = sorted((base / "nature").glob("*.jpg"))
        elephants = sorted((base / "abstract").glob("Elephants*.jpg"), key=_pixels)[-1:]
        return nature + elephants
    if package == "plasma-workspace-wallpapers":
        picked = []
        for theme in sorted((root / "usr/share/wallpapers").iterdir()):
            images = [
                p
                for p in (theme / "contents" / "images").glob("*")
                if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
            ]
            if images:
                picked.append(max(images, key=_pixels))  # one size of each wallpaper
        return picked
    data = root / "usr/share/doc/opencv-doc/examples/data"
    return [
        p
        for p in sorted(data.glob("*.jpg"))
        if not _CALIBRATION_BOARDS.match(p.name) and _pixels(p) >= _MIN_SOURCE_PIXELS
    ]


def _load_source(path: Path) -> Image.Image:
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (4096, 4096))  # sources above 16 MP: half-size DCT decode
        return ImageOps.exif_transpose(image).convert("RGB")


def make_jpegs(sources: list[Path], count: int, tag: str, seed: int = 5) -> list[Path]:
    """`count` JPEGs of 1-4 megapixels made from `sources`; cached under the speed cache."""
    folder = SPEED_CACHE / "corpus" / f"v{_VERSION}-{tag}-{count}-{seed}"
    manifest = folder / "manifest.txt"
    if manifest.is_file():
        names = manifest.read_text().split()
        if len(names) == count and all((folder / n).is_file() for n in names):
            return [folder / n for n in names]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    log(f"making {count} JPEGs of 1-4 MP from {len(sources)} photos into {folder}")
    names = [""] * count
    for s, source in enumerate(sources):
        indices = range(s, count, len(sources))
        if not indices:
            continue
        image = _load_source(source)
        for i in indices:
            rng = random.Random(seed * 1_000_003 + i)  # noqa: S311 - reproducible, not secret
            name = f"{i:05d}_{re.sub(r'[^A-Za-z0-9]+', '-', source.stem)[:24]}.jpg"
            _derive(image, rng).save(
                folder / name, "JPEG", quality=rng.randint(80, 95), subsampling=2
            )
            names[i] = name
    manifest.write_text("\n".join(names) + "\n")
    return [folder / n for n in names]


def _derive(image: Image.Image, rng: random.Random) -> Image.Image:
    aw, ah = rng.choices(_ASPECTS, weights=_ASPECT_WEIGHTS)[0]
    if image.width < image.height and aw > ah and rng.random() < 0.7:
        aw, ah = ah, aw  # portrait sources mostly give portrait photos
    # The largest crop of that aspect, then a random part of it (45-100% of its area).
    scale = min(image.width / aw, image.height / ah)
    area = rng.uniform(0.45, 1.0)
    width = max(16, round(aw * scale * math.sqrt(area)))
    height = max(16, round(ah * scale * math.sqrt(area)))
    left = rng.randint(0, image.width - width)
    top = rng.randint(0, image.height - height)
    crop = image.crop((left, top, left + width, top + height))
    megapixels = rng.uniform(1.0, 4.0) * 1e6
    out_w = round(math.sqrt(megapixels * aw / ah))
    out_h = round(out_w * ah / aw)
    resized = crop.resize((out_w, out_h), Image.Resampling.BICUBIC)
    # Sensor-like grain: upscaled wallpapers are smoother than camera photos, and JPEG
    # decoding time grows with the entropy-coded bytes, not only with the pixel count.
    noise = np.random.default_rng(rng.getrandbits(32)).normal(
        0.0, rng.uniform(1.5, 4.0), (out_h, out_w, 1)
    )
    pixels = np.asarray(resized, dtype=np.float32) + noise.astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _encode(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def make_queries(photos: list[Path], per_photo: int = 4, seed: int = 11) -> list[Query]:
    """Degraded copies of each photo: crops, a smaller copy, a quality-30 recompression.

    Queries are at most 1024 px on their longer side, like a screenshot or a shared copy.
    """
    kinds = ("crop60", "jpeg30", "crop45", "half", "crop60_jpeg50")
    queries = []
    for index, path in enumerate(photos):
        image = _load_source(path)
        image.thumbnail((2048, 2048))
        rng = random.Random(seed * 7919 + index)  # noqa: S311 - reproducible, not secret
        for kind in kinds[:per_photo]:
            if kind.startswith("crop"):
                area = 0.6 if kind.startswith("crop60") else 0.45
                side = math.sqrt(area)
                w, h = round(image.width * side), round(image.height * side)
                left = rng.randint(0, image.width - w)
                top = rng.randint(0, image.height - h)
                query = image.crop((left, top, left + w, top + h))
            elif kind == "half":
                query = image.resize(
                    (image.width // 2, image.height // 2), Image.Resampling.BICUBIC
                )
            else:
                query = image.copy()
            query.thumbnail((1024, 1024))
            quality = 30 if kind == "jpeg30" else 50 if kind.endswith("jpeg50") else 85
            queries.append(Query(index, kind, _encode(query, quality)))
    return queries
