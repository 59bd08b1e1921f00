"""Issue 17: the duplicates benchmark runs end to end on the quick corpus (imagededup's rows
only where it is installed: it is not a test dependency) and scores what it plants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_audit_summarises_the_judged_pairs_of_the_run(tmp_path: Path) -> None:
    from bench.duplicates.audit import main

    pairs = [["a.png", "b.png"], ["c.png", "d.png"], ["e.png", "f.png"], ["g.png", "h.png"]]
    run = {"method": "imgsearch", "images": 10_000, "precision": 0.5}
    run["false_details"] = [{"pair": p, "kinds": "x~x", "score": 0.9, "inliers": 0} for p in pairs]
    meta = {"git": "abc1234", "finished": "2026-12-06 21:31 UTC"}
    (tmp_path / "audited-run.json").write_text(json.dumps({"meta": meta, "results": [run]}))
    judged = [("same picture", "mirrored"), ("different", "frames"), ("different", "frames")]
    lines = ["n,first,second,kinds,score,inliers,judged,how"] + [
        f"{n},{a},{b},x~x,0.9,0,{label},{how}"
        for n, ((a, b), (label, how)) in enumerate(zip(pairs, judged, strict=False))
    ]
    (tmp_path / "audit.csv").write_text("\n".join(lines) + "\n")

    assert main(["--results", str(tmp_path)]) == 0

    text = (tmp_path / "audit.md").read_text()
    assert "| different | 2 | frames 2 |" in text
    assert "**1 of 3 (33%" in text
    # half the pairs unplanted, a third of those the same picture: 0.5 + 0.5 / 3
    assert "would be about 67%" in text
    assert "instead of the 50.0%" in text


def test_audit_refuses_labels_of_another_run(tmp_path: Path) -> None:
    from bench.duplicates.audit import main

    run = {"method": "imgsearch", "images": 10_000, "precision": 0.5}
    run["false_details"] = [{"pair": ["a.png", "b.png"], "kinds": "x~x", "score": 0.9}]
    meta = {"git": "abc1234", "finished": "now"}
    (tmp_path / "audited-run.json").write_text(json.dumps({"meta": meta, "results": [run]}))
    (tmp_path / "audit.csv").write_text(
        "n,first,second,kinds,score,inliers,judged,how\n0,a.png,z.png,x~x,0.9,0,different,x\n"
    )

    with pytest.raises(SystemExit, match="other pairs"):
        main(["--results", str(tmp_path)])
    assert not (tmp_path / "audit.md").exists()
