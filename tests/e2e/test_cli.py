"""The `imgsearch` command as a user runs it: a real server process and real client processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.imaging import crop, encode, load
from tests.processes import free_port

IMGSEARCH = [sys.executable, "-m", "imgsearch.cli"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IMGSEARCH, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def server(tmp_path: Path, photo_folder: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "IMGSEARCH_SETTLE_SECONDS": "0.2"}
    process = subprocess.Popen(
        [
            *IMGSEARCH,
            "serve",
            str(photo_folder),
            "--listen",
            address,
            "--data",
            str(tmp_path / "data"),
            "--metrics-listen",
            f"127.0.0.1:{free_port()}",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )

    def idle() -> bool:
        result = _cli("status", "--server", address, "--json", "--timeout", "2")
        return result.returncode == 0 and json.loads(result.stdout).get("state") == "watching"

    try:
        wait_until(idle, timeout=90, interval=0.5)
        yield address, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_search_and_status_commands(
    server: tuple[str, subprocess.Popen[str]], tmp_path: Path, photo_folder: Path
) -> None:
    address, _ = server
    source = sorted(photo_folder.iterdir())[2]
    query = tmp_path / "query.jpg"
    query.write_bytes(encode(crop(load(source), 0.6), quality=30))

    result = _cli("search", str(query), "--server", address, "--limit", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.match(
        rf"\s+1\s+0\.\d{{3}}\s+-?\d\.\d{{3}}\s+SOURCE\s+{re.escape(source.name)}$", lines[1]
    ), lines
    assert f"verdict: source found: {source.name}" in result.stdout

    status = _cli("status", "--server", address)
    assert status.returncode == 0, status.stderr
    count = len(list(photo_folder.iterdir()))
    assert f"indexed:  {count}" in status.stdout
    assert "pending:  0" in status.stdout
    assert "state:    watching" in status.stdout


def test_search_errors_are_reported(
    server: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    address, _ = server
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = _cli("search", str(bad), "--server", address)
    assert result.returncode == 2
    assert result.stderr.startswith("error: INVALID_ARGUMENT: ")
    missing = _cli("search", str(tmp_path / "nope.jpg"), "--server", address)
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


def test_sigterm_stops_cleanly(server: tuple[str, subprocess.Popen[str]]) -> None:
    _, process = server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert process.stderr is not None
    log = process.stderr.read()
    assert "stopped" in log
    assert "Traceback" not in log
