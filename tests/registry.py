"""Reading this process's Prometheus registry: the metrics of servers a test runs in process."""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The sample's value, 0 where nothing has recorded it yet (a counter not yet touched)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def verifications(outcome: str) -> float:
    """Searches whose keypoint check ended so (confirmed, rejected) or took that step (closer,
    deep, sibling)."""
    return sample("imgsearch_verifications_total", outcome=outcome)


def candidates_described() -> float:
    """Candidate files the keypoint checks of this process have needed so far (cached or
    read, decoded and described)."""
    return sum(sample("imgsearch_keypoint_candidates_total", cache=c) for c in ("hit", "miss"))
