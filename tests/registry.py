"""Reading this process's Prometheus registry: the metrics of servers a test runs in process."""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The sample's value, 0 where nothing has recorded it yet (a counter not yet touched)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
