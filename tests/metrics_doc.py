"""The metrics table of docs/operations.md, and /metrics scrapes, for the tests that check both."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

OPERATIONS_DOC = Path(__file__).parents[1] / "docs" / "operations.md"
_HEADER = "| metric | type | labels | meaning |"
_TYPES = {"counter", "gauge", "histogram"}


@dataclass(frozen=True)
class Documented:
    name: str  # as queried in PromQL: counters end in _total, histograms have _bucket etc.
    type: str
    labels: frozenset[str]

    @property
    def family(self) -> str:
        """The family name the Prometheus parser reports (counters without `_total`)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name


def documented_metrics() -> dict[str, Documented]:
    """Rows of the one metrics table in docs/operations.md."""
    lines = OPERATIONS_DOC.read_text().splitlines()
    start = lines.index(_HEADER) + 2  # skip the |---| row
    found: dict[str, Documented] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = cells[0].strip("`")
        assert re.fullmatch(r"imgsearch_[a-z_]+", name), line
        assert cells[1] in _TYPES, line
        labels = frozenset(re.findall(r"`([a-z_]+)`", cells[2]))
        assert name not in found, f"{name} documented twice"
        found[name] = Documented(name, cells[1], labels)
    assert len(found) >= 10, "the metrics table is missing or was cut short"
    return found


class Scrape:
    """One read of a /metrics endpoint, parsed."""

    def __init__(self, port: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
            self.text = response.read().decode()
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}

    def samples(self, family: str) -> list[Sample]:
        return list(self.families[family].samples) if family in self.families else []

    def value(self, sample_name: str, **labels: str) -> float:
        """The value of one sample; 0 when the labelled series does not exist yet."""
        family = re.sub(r"(_total|_count|_sum|_bucket|_created)$", "", sample_name)
        for sample in self.samples(family):
            if sample.name == sample_name and sample.labels == labels:
                return float(sample.value)
        return 0.0
