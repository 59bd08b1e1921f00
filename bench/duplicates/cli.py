"""Finding the copies inside a folder (issue 17): imgsearch's duplicate finder beside
imagededup's hashing methods, on the same folders.

Each folder holds distinct images from bench/accuracy's registry packages: 770 photos
(food, nebulae, wallpapers, sample photos) first, then clip art and sprites (~6,600), then,
for folders larger than that, tiles: non-overlapping 256 x 192 pieces of the full-size
originals of the largest photos (which are then not in the folder whole); and planted
copies of a tenth as many images, one per original (where the folder wants more copies
than it has photos, some originals are drawn twice: their two copies are copies of each
other too, right to pair but not required), made by every query family of bench/accuracy in
turn (crops, rescales, JPEG, blur, colour, grey, overlays,
padding, rotation, mirroring, screenshots, pages, combinations). Burst pairs of the corpus
(two overlapping frames of one scene) are in the folder too: merely similar photos that must
not be paired. Reported per method and folder size: precision and recall of the pairs each
method asserts (imgsearch: the pairs of its groups; imagededup: each file's list of
duplicates), for imgsearch also the precision of every pair its groups imply, recall per
family, burst pairs called copies, false pairs by the origins of their files, and the wall
time (imgsearch: indexing and finding apart).

    python -m bench.duplicates [--sizes 1000,3000,10000] [--quick] [--out bench/results/duplicates]

imagededup (and the torch it imports) is not among the test dependencies:
`pip install -r bench/duplicates/requirements.txt` first, or its rows are left out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench.accuracy import corpus as corpus_module
from bench.accuracy.cli import QUICK
from bench.accuracy.corpus import Corpus, CorpusSpec
from bench.accuracy.fetch import fetch
from bench.accuracy.imaging import encode, flatten, open_rgb
from bench.accuracy.progress import log
from bench.accuracy.transforms import BURST_FAMILY, FAMILIES, make_query

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("IMGSEARCH_BENCH_CACHE", Path.home() / ".cache" / "imgsearch-bench"))
COPY_SHARE = 0.1  # planted copies, as a share of the folder
BURST_PAIRS = 40  # burst pairs (hard negatives) put into each folder, where the corpus has them
# All the distinct photos the registries' packages give (bench/accuracy's per-origin caps
# allow ~860), and all the distinct clip art and sprites (~6,600) for larger folders.
SPEC = CorpusSpec("duplicates", sources=770, heldout=0, distractors=6600, quick=False, bursts=40)
# Larger folders are filled with tiles of the largest photos (`_tiles`).
TILE = (256, 192)
TILE_GAP = 16
TILE_MIN_SPREAD = 16.0
# Photos never tiled: their pieces are copies of one another. Elephants_5640x3172 is a
# painting whose left and right parts are mirror images of each other (a kaleidoscope): in
# the 10,000-image folder, 107 of the 163 tile pairs imgsearch called copies that were not
# planted were its mirrored pieces (2026-12-08, git 2393298), copies by the hflip family's
# own measure, which the benchmark counted as false.
UNTILED = ("wallpapers-Elephants_5640x3172-",)
COPY_FAMILIES = tuple(name for name in FAMILIES if name != BURST_FAMILY)
HASHES = ("PHash", "DHash", "WHash", "AHash")
FALSE_DETAILS = 300

Pair = tuple[str, str]


@dataclass
class Folder:
    root: Path
    images: int
    copies: dict[Pair, str]  # (original, copy) sorted -> family
    bursts: set[Pair]
    kinds: dict[str, str] = field(default_factory=dict)  # file -> origin (food, clipart, ...)
    # Two planted copies of one original (folders with more copies than photos draw some
    # originals twice): copies of each other as well, so pairing them is right, though
    # not required for recall.
    alike: set[Pair] = field(default_factory=set)

    @property
    def right(self) -> set[Pair]:
        """Every pair a method may rightly call copies."""
        return set(self.copies) | self.alike


@dataclass
class Result:
    method: str
    size: int
    images: int
    seconds: float  # finding, after indexing for imgsearch
    index_seconds: float
    pairs_found: int
    precision: float
    recall: float
    burst_pairs_called_copies: int
    false_pairs: list[Pair]
    false_by_kind: dict[str, int] = field(default_factory=dict)  # "clipart~clipart": n
    recall_by_family: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    # imgsearch reports groups: the precision of every pair its groups imply (one false link
    # joins two groups), beside that of the pairs it asserted.
    group_precision: float | None = None
    # imgsearch: what it said of its first FALSE_DETAILS unplanted pairs (kinds, score,
    # inliers), for finding out why it paired them.
    false_details: list[dict[str, object]] = field(default_factory=list)


def build_folder(corpus: Corpus, size: int, work: Path, seed: int = 17) -> Folder:
    """`size` files: distinct images, one planted copy for COPY_SHARE of them, burst pairs;
    tiles of the largest photos where the corpus has too few distinct images (see _tiles)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    # Photos first; clip art and sprites fill larger folders: distinct images too, though
    # not photos.
    photos = [i for i in corpus.items if i.role in ("source", "heldout")]
    others = [i for i in corpus.items if i.role == "distractor"]
    bursts = sorted(i.id for i in corpus.of_role("burst"))
    burst_pairs = [(bursts[k], bursts[k + 1]) for k in range(0, len(bursts) - 1, 2)]
    burst_pairs = burst_pairs[:BURST_PAIRS]
    copies = round(size * COPY_SHARE)
    originals_needed = size - copies - 2 * len(burst_pairs)
    tiled, tiles = _tiles(corpus, originals_needed - len(photos) - len(others))
    photos = [i for i in photos if i.id not in tiled]
    distinct = photos + rng.sample(others, len(others))
    if originals_needed > len(distinct) + len(tiles):
        raise SystemExit(
            f"the corpus has {len(distinct) + len(tiles)} distinct images (tiles included): "
            f"a folder of {size} needs {originals_needed} (use smaller --sizes)"
        )
    chosen = distinct[: originals_needed - len(tiles)]
    photos = [i for i in chosen if i.role != "distractor"] or chosen
    root = work / f"folder-{size}"
    root.mkdir(parents=True)
    for item in chosen:
        _link(corpus.path_of(item), root / item.id)
    for tile in tiles:
        _link(tile, root / "tiles" / tile.parent.name / tile.name)
    for a, b in burst_pairs:
        for name in (a, b):
            item = next(i for i in corpus.items if i.id == name)
            _link(corpus.path_of(item), root / item.id)
    planted: dict[Pair, str] = {}
    made_from: dict[str, list[str]] = {}  # original -> its copies
    originals = rng.sample(photos, min(copies, len(photos)))
    originals += rng.sample(chosen, copies - len(originals))
    for n, item in enumerate(originals):
        family = FAMILIES[COPY_FAMILIES[n % len(COPY_FAMILIES)]]
        image = open_rgb(corpus.path_of(item).read_bytes())
        data, _ = make_query(image, family, seed=f"{seed}:{item.id}")
        name = f"copies/{family.name}/{n:05d}.jpg"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        planted[_pair(item.id, name)] = family.name
        made_from.setdefault(item.id, []).append(name)
    files = sum(1 for p in root.rglob("*") if p.is_file())
    kinds = {i.id: i.origin for i in corpus.items}
    kinds.update({copy: "copy" for pair in planted for copy in pair if copy.startswith("copies/")})
    kinds.update({f"tiles/{t.parent.name}/{t.name}": "tiles" for t in tiles})
    alike = {_pair(a, b) for copies in made_from.values() for a, b in combinations(copies, 2)}
    return Folder(root, files, planted, {_pair(a, b) for a, b in burst_pairs}, kinds, alike)


def _tiles(corpus: Corpus, needed: int) -> tuple[set[str], list[Path]]:
    """At least `needed` more distinct images (none where `needed` <= 0): non-overlapping
    TILE-sized pieces, a TILE_GAP apart, of the full-size originals of the corpus's largest
    photos, leaving out flat ones (grey-level spread under TILE_MIN_SPREAD: sky, plain
    backgrounds, which no one could tell apart). A tiled photo is not put in the folder
    whole (each tile would be a crop of it); the photos burst pairs were made from are not
    tiled (a tile would be a crop of a frame), nor those of UNTILED. Returns the ids of the
    tiled photos and the tile files (made once, in the cache)."""
    if needed <= 0:
        return set(), []
    packages = {origin.package.name: origin.package for origin in corpus_module.ORIGINS}
    burst_originals = {i.original for i in corpus.of_role("burst")}
    photos = [
        i
        for i in corpus.items
        if i.role in ("source", "heldout")
        and i.original not in burst_originals
        and not Path(i.id).stem.startswith(UNTILED)
    ]
    root = corpus.root.parent / f"{corpus.root.name}-tiles-{TILE[0]}x{TILE[1]}-{TILE_MIN_SPREAD:g}"
    sized = []
    for item in photos:
        original = fetch(packages[item.package], corpus.root.parent) / item.original
        with Image.open(original) as image:
            width, height = image.size
        sized.append((width * height, item.id, original))
    tiled: set[str] = set()
    tiles: list[Path] = []
    for _, item_id, original in sorted(sized, reverse=True):
        if len(tiles) >= needed + len(tiled):
            break
        tiled.add(item_id)
        tiles += _tiles_of(original, root / Path(item_id).stem)
    log(f"{len(tiles)} tiles of {len(tiled)} photos fill the folder")
    return tiled, tiles


def _tiles_of(original: Path, folder: Path) -> list[Path]:
    done = folder / ".complete"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        image = flatten(ImageOps.exif_transpose(Image.open(original)))
        width, height = TILE
        step_x, step_y = width + TILE_GAP, height + TILE_GAP
        for top in range(0, image.height - height + 1, step_y):
            for left in range(0, image.width - width + 1, step_x):
                tile = image.crop((left, top, left + width, top + height))
                if np.asarray(tile.convert("L"), dtype=np.float32).std() >= TILE_MIN_SPREAD:
                    (folder / f"{top:05d}-{left:05d}.jpg").write_bytes(encode(tile, "JPEG", 90))
        done.write_text(original.name + "\n")
    return sorted(folder.glob("*.jpg"))


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _pair(a: str, b: str) -> Pair:
    return (a, b) if a <= b else (b, a)


def score(
    method: str,
    size: int,
    folder: Folder,
    found: set[Pair],
    seconds: float,
    index_seconds: float = 0.0,
) -> Result:
    hits = found & set(folder.copies)
    correct = found & folder.right
    by_family: dict[str, list[bool]] = {}
    for pair, family in folder.copies.items():
        by_family.setdefault(family, []).append(pair in found)
    false = sorted(found - folder.right)
    false_by_kind: dict[str, int] = {}
    for a, b in false:
        kind = "~".join(sorted((folder.kinds.get(a, "?"), folder.kinds.get(b, "?"))))
        false_by_kind[kind] = false_by_kind.get(kind, 0) + 1
    return Result(
        method=method,
        size=size,
        images=folder.images,
        seconds=seconds,
        index_seconds=index_seconds,
        pairs_found=len(found),
        precision=len(correct) / len(found) if found else 1.0,
        recall=len(hits) / len(folder.copies) if folder.copies else 1.0,
        burst_pairs_called_copies=len(found & folder.bursts),
        false_pairs=false[:20],
        false_by_kind=dict(sorted(false_by_kind.items(), key=lambda kv: -kv[1])),
        recall_by_family={f: sum(v) / len(v) for f, v in sorted(by_family.items())},
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


@dataclass
class Found:
    """What imgsearch's FindDuplicates answered."""

    pairs: dict[Pair, tuple[float, int]]  # asserted pair -> (score, inliers)
    implied: set[Pair]  # every pair of each group
    seconds: float  # finding
    index_seconds: float


def run_imgsearch(folder: Folder, work: Path) -> Found:
    """Index the folder with a real server, then ask its FindDuplicates RPC."""
    from imgsearch.app import Application
    from imgsearch.settings import Settings

    settings = Settings(
        folder=folder.root,
        data_dir=work / f"data-{folder.root.name}",
        listen="127.0.0.1:0",
        metrics_listen=None,
        http_listen=None,
        rescan_interval=0,
    )
    started = time.monotonic()
    app = Application(settings)
    app.start()
    try:
        from imgsearch.rpc.client import Client

        assert app.indexer is not None
        app.indexer.wait_ready(24 * 3600)
        with Client(f"127.0.0.1:{app.port}", timeout=60) as client:
            while client.status().pending:
                time.sleep(0.5)
            indexed = time.monotonic()
            found: dict[Pair, tuple[float, int]] = {}
            implied: set[Pair] = set()
            for event in client.duplicates():
                if event.WhichOneof("event") == "group":
                    for p in event.group.pairs:
                        found[_pair(p.first, p.second)] = (round(p.score, 4), p.inliers)
                    implied |= {_pair(a, b) for a, b in combinations(event.group.paths, 2)}
            finished = time.monotonic()
    finally:
        app.stop()
    return Found(found, implied, finished - indexed, indexed - started)


def _details(folder: Folder, found: Found, most: int) -> list[dict[str, object]]:
    unplanted = sorted(set(found.pairs) - folder.right)
    details: list[dict[str, object]] = []
    for a, b in random.Random(0).sample(unplanted, min(most, len(unplanted))):  # noqa: S311
        score, inliers = found.pairs[(a, b)]
        kinds = "~".join(sorted((folder.kinds.get(a, "?"), folder.kinds.get(b, "?"))))
        details.append({"pair": [a, b], "kinds": kinds, "score": score, "inliers": inliers})
    return details


def run_imagededup(method_name: str, folder: Folder) -> tuple[set[Pair], float] | None:
    try:
        from imagededup import methods
    except ImportError:
        return None
    hasher = getattr(methods, method_name)(verbose=False)
    started = time.monotonic()
    duplicates = hasher.find_duplicates(image_dir=str(folder.root), recursive=True)
    seconds = time.monotonic() - started
    found = {_pair(a, b) for a, others in duplicates.items() for b in others}
    return found, seconds


def write(out: Path, results: list[Result], meta: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "duplicates.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    lines = [
        "# Copies inside a folder: imgsearch duplicates vs imagededup",
        "",
        f"`{meta['command']}` on {meta['cpus']} cores, {meta['finished']}, git {meta['git']}; "
        f"{meta['note']}",
        "",
        "| images | method | precision | recall | burst pairs called copies | find time | "
        "index time | precision of the pairs its groups imply |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        index = f"{r.index_seconds:.0f} s" if r.index_seconds else "-"
        grouped = "-" if r.group_precision is None else f"{100 * r.group_precision:.1f}%"
        lines.append(
            f"| {r.images} | {r.method} | {100 * r.precision:.1f}% ({r.pairs_found} pairs) | "
            f"{100 * r.recall:.1f}% | {r.burst_pairs_called_copies} | {r.seconds:.1f} s | "
            f"{index} | {grouped} |"
        )
    families = sorted({f for r in results for f in r.recall_by_family})
    lines += ["", "Recall by the family the copy was made with:", ""]
    lines.append("| images | method | " + " | ".join(families) + " |")
    lines.append("|---|---|" + "---|" * len(families))
    for r in results:
        cells = " | ".join(f"{100 * r.recall_by_family.get(f, 0):.0f}%" for f in families)
        lines.append(f"| {r.images} | {r.method} | {cells} |")
    lines += ["", "Pairs that were not planted, by the origins of their two files:", ""]
    lines += [
        f"- {r.images} images, {r.method}: "
        + (", ".join(f"{kind} {n}" for kind, n in r.false_by_kind.items()) or "none")
        for r in results
    ]
    false = [(r, p) for r in results if r.method == "imgsearch" for p in r.false_pairs]
    if false:
        lines += ["", "imgsearch's pairs that were not planted (first 20 per size):", ""]
        lines += [f"- {r.images} images: `{a}` ~ `{b}`" for r, (a, b) in false]
    (out / "duplicates.md").write_text("\n".join(lines) + "\n")
    _plot(out / "duplicates.png", results)


def _plot(target: Path, results: list[Result]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r.method for r in results))
    sizes = sorted({r.images for r in results})
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, metric, label in zip(
        axes,
        ("precision", "recall", "seconds"),
        ("precision", "recall", "find time (s)"),
        strict=True,
    ):
        for m in methods:
            points = [(r.images, getattr(r, metric)) for r in results if r.method == m]
            ax.plot(*zip(*points, strict=True), marker="o", label=m)
        ax.set_xlabel("images in the folder")
        ax.set_title(label)
        ax.set_xticks(sizes)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(target, dpi=90)
    plt.close(figure)


def _git() -> str:
    import subprocess

    result = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


def _meta(args: argparse.Namespace) -> dict[str, object]:
    given = ["--sizes", args.sizes] + (["--quick"] if args.quick else [])
    return {
        "command": " ".join(["python -m bench.duplicates", *given]),
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "copy_families": list(COPY_FAMILIES),
        "note": "imgsearch with its default model; imagededup's hashing methods with their "
        "default max_distance_threshold (10); nothing else running.",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.duplicates", description=__doc__)
    parser.add_argument("--sizes", default="1000,3000,10000", help="folder sizes (images)")
    parser.add_argument("--quick", action="store_true", help="the quick corpus (CI smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "duplicates")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    corpus = corpus_module.build(QUICK if args.quick else SPEC, args.cache, args.workers)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-duplicates-") as tmp:
        work = Path(tmp)
        for size in sizes:
            folder = build_folder(corpus, size, work)
            log(f"{folder.images} images, {len(folder.copies)} planted copies")
            found = run_imgsearch(folder, work)
            ours = score(
                "imgsearch", size, folder, set(found.pairs), found.seconds, found.index_seconds
            )
            implied = found.implied
            ours.group_precision = len(implied & folder.right) / len(implied) if implied else 1.0
            ours.false_details = _details(folder, found, FALSE_DETAILS)
            results.append(ours)
            log(f"imgsearch: {results[-1].precision:.3f} / {results[-1].recall:.3f}")
            for name in HASHES:
                measured = run_imagededup(name, folder)
                if measured is None:
                    log("no imagededup: pip install -r bench/duplicates/requirements.txt")
                    break
                results.append(score(f"imagededup {name}", size, folder, *measured))
                log(f"imagededup {name}: {results[-1].precision:.3f} / {results[-1].recall:.3f}")
            write(args.out, results, _meta(args))  # each size as it is done
    log(f"results written to {args.out}")
    return 0
