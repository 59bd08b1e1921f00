"""What the unplanted pairs of a bench.duplicates run are: a person's judgement of a random
sample of them, and what it says about the precision.

bench.duplicates counts every pair it did not plant as false, but its "distinct" images are
not all distinct: icon sets hold the same drawing mirrored, turned or recoloured under two
names, and the tiles of one patterned photo repeat. `audit.csv` records, for the first pairs
of a 10,000-image run's random sample of unplanted pairs (`false_details`, in the order
drawn; that run's record is kept in `audited-run.json`, as later runs draw other pairs),
whether a person looking at the two files judged them the same picture edited
(mirrored, turned, recoloured, a mark added or a detail changed: what the copy families
do), pieces of a repeating pattern, or different pictures, and how. This script draws the
pairs side by side for checking those judgements (`--sheets`) and writes the summary
(`audit.md`).

    python -m bench.duplicates.audit [--sheets /tmp/audit-sheets]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from bench.accuracy import corpus as corpus_module
from bench.duplicates.cli import CACHE, REPO, SPEC, build_folder

RESULTS = REPO / "bench" / "results" / "duplicates"
SAME = "same picture"
AUDITED_SIZE = 10_000  # the folder size whose unplanted pairs were judged
_Z = 1.96  # a 95% interval
_PAIRS_PER_SHEET = 6
_SIDE = 300


def wilson(hits: int, total: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion."""
    if total == 0:
        return 0.0, 1.0
    share = hits / total
    centre = share + _Z**2 / (2 * total)
    spread = _Z * math.sqrt(share * (1 - share) / total + _Z**2 / (4 * total**2))
    scale = 1 + _Z**2 / total
    return (centre - spread) / scale, (centre + spread) / scale


def summary(rows: list[dict[str, str]], run: dict[str, object], meta: dict[str, object]) -> str:
    judged = Counter(row["judged"] for row in rows)
    how = Counter((row["judged"], row["how"]) for row in rows)
    same = judged[SAME]
    low, high = wilson(same, len(rows))
    precision = float(str(run["precision"]))
    unplanted = 1 - precision
    lines = [
        "# What imgsearch's unplanted pairs are (bench/duplicates, 10,000 images)",
        "",
        f"A person's judgement of the first {len(rows)} pairs of the random sample of unplanted "
        f"pairs that `python -m bench.duplicates` recorded (run of git {meta['git']}, "
        f"{meta['finished']}); labels in `audit.csv`, pairs drawn side by side by "
        "`python -m bench.duplicates.audit --sheets DIR`.",
        "",
        "| judged | pairs | how |",
        "|---|---|---|",
    ]
    for label, count in judged.most_common():
        parts = ", ".join(f"{h} {n}" for (j, h), n in how.most_common() if j == label)
        lines.append(f"| {label} | {count} | {parts} |")
    lines += [
        "",
        f"**{same} of {len(rows)} ({same / len(rows):.0%}, 95% interval {low:.0%}-{high:.0%}) "
        "are the same picture edited**: two files of an icon set or a sprite sheet that are "
        "one drawing mirrored, turned, recoloured or with a mark added, which the copy "
        "families plant too, but which the benchmark counts as false because it took both "
        "files for distinct images.",
        f"Counting them as right, the precision at 10,000 images would be about "
        f"{precision + unplanted * same / len(rows):.0%} "
        f"({precision + unplanted * low:.0%}-{precision + unplanted * high:.0%}) instead of "
        f"the {precision:.1%} the benchmark reports; the table keeps the strict number.",
    ]
    return "\n".join(lines) + "\n"


def draw_sheets(rows: list[dict[str, str]], size: int, out: Path) -> None:
    """The audited pairs side by side, _PAIRS_PER_SHEET to an image, transparent parts grey."""
    corpus = corpus_module.build(SPEC, CACHE, 1)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-duplicates-audit-") as tmp:
        root = build_folder(corpus, size, Path(tmp)).root
        for start in range(0, len(rows), _PAIRS_PER_SHEET):
            chunk = rows[start : start + _PAIRS_PER_SHEET]
            sheet = Image.new("RGB", (2 * _SIDE + 40, (_SIDE + 30) * len(chunk)), "white")
            pen = ImageDraw.Draw(sheet)
            for k, row in enumerate(chunk):
                top = k * (_SIDE + 30)
                pen.text(
                    (2, top + 2),
                    f"#{row['n']} {row['judged']} ({row['how']}): score {row['score']}, "
                    f"{row['inliers']} inliers",
                    fill="black",
                )
                for column, name in enumerate((row["first"], row["second"])):
                    sheet.paste(_thumbnail(root / name), (column * (_SIDE + 20), top + 20))
            sheet.save(out / f"audit-{start // _PAIRS_PER_SHEET:02d}.png")


def _thumbnail(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        image = opened.convert("RGBA")
    grey = Image.new("RGBA", image.size, (190, 190, 190, 255))
    grey.alpha_composite(image)
    shown = grey.convert("RGB")
    shown.thumbnail((_SIDE, _SIDE))
    return shown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.duplicates.audit", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS, help="audit.csv's folder")
    parser.add_argument(
        "--run", type=Path, help="the judged run's record (default: audited-run.json there)"
    )
    parser.add_argument("--sheets", type=Path, help="draw the audited pairs into this folder")
    args = parser.parse_args(argv)
    with (args.results / "audit.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    recorded = json.loads((args.run or args.results / "audited-run.json").read_text())
    run = next(
        r
        for r in recorded["results"]
        if r["method"] == "imgsearch" and int(r["images"]) == AUDITED_SIZE
    )
    drawn = [detail["pair"] for detail in run["false_details"][: len(rows)]]
    if drawn != [[row["first"], row["second"]] for row in rows]:
        raise SystemExit(
            "audit.csv judges other pairs than the run drew: judge that run's pairs "
            "(--sheets draws them)"
        )
    if args.sheets:
        draw_sheets(rows, AUDITED_SIZE, args.sheets)
    (args.results / "audit.md").write_text(summary(rows, run, recorded["meta"]))
    print(f"written {args.results / 'audit.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
