"""Stable point ids: one per relative path, so re-indexing a file is an idempotent upsert."""

import uuid

_NAMESPACE = uuid.UUID("6f1c2b1e-5d1a-4bb0-9a57-1e0f3e8e2a10")


def point_id(relative_path: str) -> str:
    """UUID derived from a '/'-separated path relative to the watched folder."""
    return str(uuid.uuid5(_NAMESPACE, relative_path))


def region_point_id(relative_path: str, region: int) -> str:
    """Region 0 (the whole image) keeps the file's own id; regions get ids of their own."""
    return point_id(relative_path if region == 0 else f"{relative_path}#region{region}")


def parent_folders(relative_path: str) -> list[str]:
    """Every folder above a path ('a/b/c.jpg' -> ['a', 'a/b']), for subfolder filters."""
    parts = relative_path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
