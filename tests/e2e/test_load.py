"""Issue 7: a short bounded load run (the long one is `python -m bench.load`)."""

from __future__ import annotations

from pathlib import Path

from bench.load import run_load


def test_short_load_run_has_no_errors_and_loses_nothing(tmp_path: Path) -> None:
    result = run_load(duration=15, clients=4, file_interval=0.3, work=tmp_path, message_wait=3)
    assert result.errors == {}
    assert result.searches > 20
    assert result.files_added >= 20
    assert result.final_files == result.final_indexed == result.final_points
    assert result.p50_ms <= result.p99_ms
    # The hostile mix (second half) was answered with precise statuses, each in bounded time,
    # and the normal searches beside it went on (their errors are counted above: none).
    answered: dict[str, set[str]] = {}
    for key in result.hostile_codes:
        name, _, code = key.rpartition(": ")
        answered.setdefault(name, set()).add(code)
    refused = {"INVALID_ARGUMENT", "NOT_FOUND"}
    for name in ("scan bomb", "fifo", "link to /dev/zero", "directory", "traversal"):
        assert answered[name] and answered[name] <= refused, answered
    assert answered["16-bit png"] <= {"OK", "RESOURCE_EXHAUSTED"}, answered  # within limits
    # 32 calls that never send their message, beside it all: each ended after 3 s.
    assert answered["half-open call"] == {"DEADLINE_EXCEEDED"}, answered
    assert result.hostile_max_ms < 10_000
    assert result.p99_ms_hostile > 0
