"""Issue 17: the duplicates benchmark runs end to end on the quick corpus (imagededup's rows
only where it is installed: it is not a test dependency) and scores what it plants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.duplicates.cli import Folder, score

REPO = Path(__file__).resolve().parents[2]
EXIT_NO_CORPUS = 3


def test_quick_duplicates_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "bench.duplicates", "--quick", "--sizes", "120", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "duplicates.json").read_text())
    ours = next(r for r in report["results"] if r["method"] == "imgsearch")
    assert ours["images"] == 120
    # 12 planted copies of different families; the easy ones (quality changes) are all found.
    assert ours["recall"] >= 0.5, ours
    assert ours["precision"] >= 0.5, ours
    for family in ("jpeg", "rescale", "colour", "grayscale", "blur"):
        if family in ours["recall_by_family"]:
            assert ours["recall_by_family"][family] == 1.0, (family, ours)
    assert ours["index_seconds"] > 0 and ours["seconds"] > 0
    text = (out / "duplicates.md").read_text()
    assert "| 120 | imgsearch |" in text
    assert (out / "duplicates.png").stat().st_size > 0


def test_two_copies_of_one_original_are_a_right_pair(tmp_path: Path) -> None:
    """Where a folder draws an original twice, its two copies are copies of each other:
    pairing them counts as right, and missing that pair costs no recall."""
    copies = {("a.jpg", "copies/crop50/1.jpg"): "crop50", ("a.jpg", "copies/jpeg/2.jpg"): "jpeg"}
    alike = {("copies/crop50/1.jpg", "copies/jpeg/2.jpg")}
    folder = Folder(tmp_path, 3, copies, set(), {}, alike)
    found = {("a.jpg", "copies/crop50/1.jpg"), ("copies/crop50/1.jpg", "copies/jpeg/2.jpg")}
    result = score("imgsearch", 3, folder, found, 1.0)
    assert result.precision == 1.0 and result.false_pairs == []
    assert result.recall == 0.5
    # ... while a pair that is neither planted nor alike is false.
    wrong = score("imgsearch", 3, folder, found | {("a.jpg", "b.jpg")}, 1.0)
    assert wrong.false_pairs == [("a.jpg", "b.jpg")]
    assert wrong.precision == 2 / 3
