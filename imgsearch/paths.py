"""Paths relative to the watched folder: the only form that is stored, filtered and returned."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from imgsearch.errors import OutsideFolderError

# Names that downloaders, editors and sync tools use while a file is still being written.
_TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".swp", "~")
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
    }
)


def relative_to_root(root: Path, path: str | os.PathLike[str]) -> str | None:
    """'/'-separated path of `path` inside `root`, or None when it lies outside."""
    try:
        # abspath, not resolve(): a symlink inside the folder keeps its own (inside) path.
        relative = Path(os.path.abspath(path)).relative_to(root)  # noqa: PTH100
    except ValueError:
        return None
    text = relative.as_posix()
    return None if text in ("", ".") else text


def is_candidate(relative: str) -> bool:
    """False for hidden files and folders and for names of files still being written."""
    parts = PurePosixPath(relative).parts
    if any(part.startswith(".") for part in parts):
        return False
    return not parts[-1].lower().endswith(_TEMP_SUFFIXES)


def has_image_suffix(relative: str) -> bool:
    return PurePosixPath(relative).suffix.lower() in IMAGE_SUFFIXES


def resolve_inside(root: Path, relative: str) -> Path:
    """The real file for a client-supplied relative path, refusing anything that escapes `root`."""
    if not relative or relative.startswith("/") or "\\" in relative or "\x00" in relative:
        raise OutsideFolderError(f"path must be relative to the watched folder: {relative!r}")
    try:
        candidate = (root / relative).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise OutsideFolderError(
            f"path cannot be resolved (a symbolic link loop?): {relative!r}"
        ) from exc
    if not candidate.is_relative_to(root.resolve()):
        raise OutsideFolderError(f"path is outside the watched folder: {relative!r}")
    return candidate
