"""Stable point ids: one per relative path, so re-indexing a file is an idempotent upsert."""

import hashlib
import uuid

_NAMESPACE = uuid.UUID("6f1c2b1e-5d1a-4bb0-9a57-1e0f3e8e2a10")


def point_id(relative_path: str) -> str:
    """UUID5 of a '/'-separated path relative to the watched folder. A name that is not UTF-8
    (kept by Python as surrogate escapes) hashes its own bytes, so every file has an id."""
    name = relative_path.encode("utf-8", "surrogateescape")
    digest = hashlib.sha1(_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def region_point_id(relative_path: str, region: int) -> str:
    """Region 0 (the whole image) keeps the file's own id; regions get ids of their own,
    joined with NUL, which no file name holds (a file named 'a.jpg#region1' once took the id
    of a.jpg's first region)."""
    return point_id(relative_path if region == 0 else f"{relative_path}\x00{region}")


def parent_folders(relative_path: str) -> list[str]:
    """Every folder above a path ('a/b/c.jpg' -> ['a', 'a/b']), for subfolder filters."""
    parts = relative_path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def shown(relative_path: str) -> str:
    """A path as it can be shown and sent (UTF-8): bytes of a name that is not UTF-8 as \\xNN."""
    return relative_path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
