"""Issue 3: SIGKILL during a large indexing run loses nothing and redoes nothing."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bench.load import stored_paths
from tests.conftest import wait_until
from tests.imaging import variants
from tests.processes import free_port, start_serve

COUNT = 240


def _status(address: str) -> dict[str, object] | None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgsearch.cli",
            "status",
            "--server",
            address,
            "--json",
            "--timeout",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


def _start(
    folder: Path, data: Path, address: str, metrics: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {"IMGSEARCH_BATCH_SIZE": "8", "IMGSEARCH_RESCAN_INTERVAL": "0"}
    return start_serve(
        folder, data, address, metrics_listen=f"127.0.0.1:{metrics}", stderr=log, env=env
    )


def _metric(port: int, name: str, labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    match = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_stopped_mid_run_then_restart(
    stop_signal: signal.Signals, tmp_path: Path, sample_photos: list[Path]
) -> None:
    """SIGKILL: nothing indexed is lost. SIGTERM: a clean exit after the current batch."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, data in enumerate(variants(sample_photos, COUNT, side=400)):
        (folder / f"{i:03d}.jpg").write_bytes(data)
    data_dir = tmp_path / "data"
    address = f"127.0.0.1:{free_port()}"

    first = _start(folder, data_dir, address, free_port(), tmp_path / "first.log")
    try:

        def midway() -> bool:
            status = _status(address)
            return status is not None and int(str(status.get("indexed", 0))) >= 40

        wait_until(midway, timeout=120, interval=0.05)
        first.send_signal(stop_signal)
        code = first.wait(timeout=30)
        assert code == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
    status_at_kill = _status(address)
    assert status_at_kill is None  # really gone

    metrics_port = free_port()
    second = _start(folder, data_dir, address, metrics_port, tmp_path / "second.log")
    try:

        def finished() -> bool:
            status = _status(address)
            return (
                status is not None
                and status.get("state") == "watching"
                and not status.get("pending")
            )

        wait_until(finished, timeout=180, interval=0.2)
        log = (tmp_path / "second.log").read_text()
        loaded = int(re.search(r"index loaded images=(\d+)", log).group(1))  # type: ignore[union-attr]
        assert 40 <= loaded < COUNT, "the kill should land mid-run"
        embedded = _metric(metrics_port, "imgsearch_index_operations_total", 'op="embedded"')
        assert embedded == COUNT - loaded  # nothing already indexed was embedded again
        status = _status(address)
        assert status is not None
        assert int(str(status["indexed"])) == COUNT
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0

    paths, count = stored_paths(data_dir)
    assert sorted(paths) == sorted(p.name for p in folder.iterdir())
    assert count == COUNT
