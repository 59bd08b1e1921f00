"""The full scan: what differs between the folder and the index, and the mass-delete guard.

Pure functions over what the folder holds and what the index holds; the indexer queues what
they return. Kept apart so that the rules (what counts as changed, when a deletion is too
large to act on) read in one place and are tested without threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imgsearch.paths import is_candidate, relative_to_root
from imgsearch.store import FileState

MASS_DELETE_FLOOR = 10  # removing this many files or fewer is never held back

Version = tuple[int, int]  # (size, mtime_ns): what tells one version of a file from another


@dataclass
class FolderDiff:
    seen: set[str] = field(default_factory=set)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Folders that could not be listed (permissions, I/O): what is indexed below them is kept.
    unlisted: list[str] = field(default_factory=list)


def walk_files(folder: Path, unlisted: list[Path] | None = None) -> list[Path]:
    """Regular files below `folder`, skipping hidden folders and not following symlinks; the
    folders that cannot be listed are appended to `unlisted`."""
    found: list[Path] = []

    def note(error: OSError) -> None:
        if unlisted is not None and error.filename is not None:
            unlisted.append(Path(error.filename))

    for directory, subdirs, files in os.walk(folder, onerror=note, followlinks=False):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        base = Path(directory)
        found.extend(base / name for name in files)
    return found


def candidates(root: Path, folder: Path, unlisted: list[Path] | None = None) -> list[str]:
    """Relative paths of the files below `folder` that may be images to index."""
    found = []
    for path in walk_files(folder, unlisted):
        relative = relative_to_root(root, path)
        if relative is not None and is_candidate(relative):
            found.append(relative)
    return found


def diff_folder(
    root: Path,
    indexed: Mapping[str, FileState],
    settled: Callable[[str, Version], bool],
) -> FolderDiff:
    """Compare the files below `root` with the index: new files (unless `settled`, a version
    that failed or is not an image), files whose version changed, and indexed files gone."""
    diff = FolderDiff()
    unlisted: list[Path] = []
    for relative in candidates(root, root, unlisted):
        diff.seen.add(relative)
        try:
            info = (root / relative).stat()
        except OSError:
            continue
        version = (info.st_size, info.st_mtime_ns)
        known = indexed.get(relative)
        if known is None:
            if not settled(relative, version):
                diff.added.append(relative)
        elif (known.size, known.mtime_ns) != version:
            diff.changed.append(relative)
    diff.unlisted = sorted(
        "" if folder == root else relative_to_root(root, folder) or "" for folder in unlisted
    )
    if "" in diff.unlisted:  # the root itself could not be listed: nothing can be judged gone
        return diff
    prefixes = tuple(f"{folder}/" for folder in diff.unlisted)
    diff.removed = [p for p in indexed if p not in diff.seen and not p.startswith(prefixes)]
    return diff


def holds_mass_deletion(removed: int, indexed: int, fraction: float, *, allowed: bool) -> bool:
    """True when removing `removed` of `indexed` files is too much to do without a
    confirmation: an unmounted disk or a mistaken `rm` must not empty the index."""
    return not allowed and removed > max(fraction * indexed, MASS_DELETE_FLOOR)
