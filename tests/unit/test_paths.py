"""Relative paths: candidates, confinement to the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgsearch.errors import OutsideFolderError
from imgsearch.ids import parent_folders, point_id
from imgsearch.paths import is_candidate, relative_to_root, resolve_inside


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("album/2024/a.JPG", True),
        ("a.jpg.part", False),
        ("a.jpg.crdownload", False),
        ("a.jpg~", False),
        (".hidden.jpg", False),
        (".thumbnails/a.jpg", False),
        ("notes.txt", True),  # decided by content later, not by name
    ],
)
def test_is_candidate(name: str, expected: bool) -> None:
    assert is_candidate(name) is expected


def test_relative_to_root(tmp_path: Path) -> None:
    assert relative_to_root(tmp_path, tmp_path / "a" / "b.jpg") == "a/b.jpg"
    assert relative_to_root(tmp_path, tmp_path) is None
    assert relative_to_root(tmp_path, tmp_path.parent / "x.jpg") is None


def test_resolve_inside_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.jpg").write_bytes(b"x")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    (root / "link.jpg").symlink_to(outside)
    assert resolve_inside(root, "ok.jpg") == (root / "ok.jpg").resolve()
    for bad in ["../secret.jpg", "/etc/passwd", "link.jpg", "", "a\\..\\b"]:
        with pytest.raises(OutsideFolderError):
            resolve_inside(root, bad)


def test_ids_are_stable_and_distinct() -> None:
    assert point_id("a/b.jpg") == point_id("a/b.jpg")
    assert point_id("a/b.jpg") != point_id("a/c.jpg")
    assert parent_folders("a/b/c.jpg") == ["a", "a/b"]
    assert parent_folders("c.jpg") == []
