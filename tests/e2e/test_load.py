"""Issue 7: a short bounded load run (the long one is `python -m bench.load`)."""

from __future__ import annotations

from pathlib import Path

from bench.load import run_load


def test_short_load_run_has_no_errors_and_loses_nothing(tmp_path: Path) -> None:
    result = run_load(duration=15, clients=4, file_interval=0.3, work=tmp_path)
    assert result.errors == {}
    assert result.searches > 20
    assert result.files_added >= 20
    assert result.final_files == result.final_indexed == result.final_points
    assert result.p50_ms <= result.p99_ms
