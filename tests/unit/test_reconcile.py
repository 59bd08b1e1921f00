"""The full scan's rules: what counts as gone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgsearch.embedder.reconcile import diff_folder
from imgsearch.store import FileState


def test_a_folder_that_cannot_be_listed_is_not_a_deletion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "locked").mkdir()
    (tmp_path / "open" / "a.jpg").write_bytes(b"a")
    (tmp_path / "locked" / "b.jpg").write_bytes(b"b")
    indexed = {p: FileState(p, 1, 1, "x") for p in ["open/a.jpg", "locked/b.jpg", "gone.jpg"]}
    real_scandir = os.scandir

    def scandir(path: object) -> object:  # chmod 000 as root still reads: fail it here
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    diff = diff_folder(tmp_path, indexed, lambda *_: False)
    assert diff.unlisted == ["locked"]
    assert diff.removed == ["gone.jpg"]  # not locked/b.jpg: its folder could not be read
