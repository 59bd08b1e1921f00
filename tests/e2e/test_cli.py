"""The `imgsearch` command as a user runs it: a real server process and real client processes."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
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
def held_out(tmp_path: Path, photo_folder: Path) -> Path:
    """A photo taken out of the served folder: a query with no source in the index."""
    photo = sorted(photo_folder.iterdir())[-1]
    return photo.rename(tmp_path / f"held_out{photo.suffix}")


@pytest.fixture
def server(
    tmp_path: Path, photo_folder: Path, held_out: Path
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
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
    # A crop this worn may fall below the threshold: then the keypoint check confirms it.
    assert re.match(
        rf"\s+1\s+0\.\d{{3}}\s+-?\d\.\d{{3}}\s+SOURCE\s+{re.escape(source.name)}"
        r"(  \(\d+ keypoints agree\))?$",
        lines[1],
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


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr


def test_exit_codes_tell_found_not_found_bad_input_and_unreachable(
    server: tuple[str, subprocess.Popen[str]], tmp_path: Path, photo_folder: Path, held_out: Path
) -> None:
    address, _ = server
    source = sorted(photo_folder.iterdir())[0]
    query = tmp_path / "query.jpg"
    query.write_bytes(encode(crop(load(source), 0.6), quality=40))
    assert _cli("search", str(query), "--server", address).returncode == 0
    assert _cli("search", str(held_out), "--server", address).returncode == 1
    # Several queries: the worst outcome decides; an unreadable one does not stop the others.
    both = _cli("search", str(query), str(held_out), "--server", address)
    assert both.returncode == 1
    assert f"== {query}" in both.stdout and f"== {held_out}" in both.stdout
    missing = _cli("search", str(query), str(tmp_path / "nope.jpg"), "--server", address)
    assert missing.returncode == 2
    assert f"verdict: source found: {source.name}" in missing.stdout
    assert "cannot read" in missing.stderr

    nobody = f"127.0.0.1:{free_port()}"
    for command in (["search", str(query)], ["status"], ["rescan"]):
        unreachable = _cli(*command, "--server", nobody)
        assert unreachable.returncode == 3
        _no_traceback(unreachable)
        assert f"no server answers at {nobody}: is `imgsearch serve` running there?" in (
            unreachable.stderr
        )


def test_query_from_stdin_and_json_with_every_field(
    server: tuple[str, subprocess.Popen[str]], tmp_path: Path, photo_folder: Path
) -> None:
    address, _ = server
    source = sorted(photo_folder.iterdir())[1]
    data = encode(crop(load(source), 0.5), quality=50)
    result = subprocess.run(
        [*IMGSEARCH, "search", "-", "--server", address, "--json", "--limit", "3"],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.decode().splitlines()
    answer = json.loads(line)
    assert answer["query"] == "-" and answer["source_found"] is True
    assert set(answer) >= {"matches", "match_threshold", "model", "whitened"}
    assert answer["whitened"] is False  # a default value, still printed
    assert len(answer["matches"]) == 3
    for match in answer["matches"]:
        assert set(match) == {
            "path",
            "score",
            "margin",
            "match",
            "region",
            "inliers",
            "confidence",
        }
        assert isinstance(match["score"], float) and isinstance(match["match"], bool)
        assert (match["confidence"] >= 0.5) == match["match"]
        assert isinstance(match["inliers"], int)
        assert set(match["region"]) == {"x0", "y0", "x1", "y1"}
    assert answer["matches"][0]["path"] == source.name

    status = _cli("status", "--server", address, "--json")
    fields = json.loads(status.stdout)
    assert isinstance(fields["indexed"], int) and fields["indexed"] > 0
    assert fields["held_deletions"] == 0 and fields["failed"] == 0 and fields["failures"] == []
    assert isinstance(fields["index_rate"], float)


def test_status_into_a_closed_pipe(server: tuple[str, subprocess.Popen[str]]) -> None:
    address, _ = server
    command = " ".join([*IMGSEARCH, "status", "--server", address])
    result = subprocess.run(
        f"{command} | head -1", shell=True, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.startswith("folder:")
    assert result.stderr == ""


def test_usage_errors_are_one_line_with_a_hint(tmp_path: Path) -> None:
    query = tmp_path / "q.jpg"
    query.write_bytes(b"x")
    for args, expected in [
        (["search", str(query), "--limit", "-1"], "argument --limit: must be 0 or more, got -1"),
        (["search", str(query), "--min-score", "2"], "must be in [-1, 1], got 2.0"),
        (["status", "--server", "127.0.0.1:99999"], "port from 1 to 65535"),
        (["serve", "--listen", "nowhere"], "expected HOST:PORT"),
    ]:
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        _no_traceback(result)
        assert expected in result.stderr.splitlines()[0], result.stderr
        assert result.stderr.splitlines()[1].startswith("hint: "), result.stderr


def test_version_and_help_name_every_default() -> None:
    from imgsearch import __version__

    assert _cli("--version").stdout.strip() == f"imgsearch {__version__}"
    for command in ("serve", "search", "status", "find", "backup"):
        text = _cli(command, "--help").stdout
        # Every option's help ends with its default (argparse wraps: join the lines first).
        options = re.split(r"\n  (?=-)", " ".join(text.split("\n  \n")).replace("\n   ", " "))
        for option in options[1:]:
            if option.startswith(("-h, --help", "--json", "--quiet", "--allow-mass", "--merge")):
                continue
            assert "default" in option or "(required)" in option, (command, option)


def _serve_fails(
    *args: str, data: Path, listen: str = "127.0.0.1:0", metrics: str = ""
) -> subprocess.CompletedProcess[str]:
    """`imgsearch serve` that is expected to refuse to start."""
    command = [*IMGSEARCH, "serve", *args, "--data", str(data), "--listen", listen]
    result = subprocess.run(
        [*command, "--metrics-listen", metrics],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_a_taken_address_stops_a_second_server(
    server: tuple[str, subprocess.Popen[str]], tmp_path: Path, photo_folder: Path
) -> None:
    address, first = server
    # Metrics off, as in the report: gRPC alone must refuse the taken port.
    taken = _serve_fails(str(photo_folder), data=tmp_path / "other", listen=address)
    assert f"cannot listen for gRPC on {address}: the address is in use" in taken.stderr
    assert "indexing progress" not in taken.stderr  # refused before starting any work
    metrics_port = free_port()
    with socket.create_server(("127.0.0.1", metrics_port)):
        metrics = _serve_fails(
            str(photo_folder), data=tmp_path / "third", metrics=f"127.0.0.1:{metrics_port}"
        )
    assert f"cannot listen for metrics on 127.0.0.1:{metrics_port}" in metrics.stderr
    assert "--metrics-listen" in metrics.stderr
    assert first.poll() is None  # the first server still serves, alone
    for _ in range(5):
        status = json.loads(_cli("status", "--server", address, "--json").stdout)
        assert status["folder"] == str(photo_folder)


def test_a_file_or_a_missing_folder_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "photo.jpg"
    file.write_bytes(b"not a folder")
    refused = _serve_fails(str(file), data=tmp_path / "data")
    assert f"{file} is a file, not a folder of images" in refused.stderr
    missing = _serve_fails(str(tmp_path / "nope"), data=tmp_path / "data")
    assert "does not exist, and nothing is indexed from it yet" in missing.stderr


def test_make_run_keeps_a_folder_with_spaces_in_one_argument(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    folder = "/photos/my holiday/it's here"
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(root), "run", f"FOLDER={folder}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = next(x for x in result.stdout.splitlines() if "imgsearch serve" in x)
    argv = shlex.split(line)
    assert argv[argv.index("serve") + 1] == folder
