"""`imgsearch find`: a program for one question, not a service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.imaging import crop, encode, load

IMGSEARCH = [sys.executable, "-m", "imgsearch.cli"]


def _find(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*IMGSEARCH, "find", *args], input=stdin, capture_output=True, timeout=180, check=False
    )


def test_find_indexes_once_then_only_searches(photo_folder: Path, tmp_path: Path) -> None:
    photos = sorted(photo_folder.iterdir())
    held_out = photos[-1].rename(tmp_path / f"held_out{photos[-1].suffix}")
    query = tmp_path / "query.jpg"
    query.write_bytes(encode(crop(load(photos[0]), 0.4), quality=40))
    data = tmp_path / "data"

    first = _find(str(query), "--in", str(photo_folder), "--data", str(data))
    assert first.returncode == 0, first.stderr.decode()
    indexed = len(photos) - 1
    assert f"{indexed} images indexed ({indexed} new), 0 failed" in first.stderr.decode()
    assert f"verdict: source found: {photos[0].name}" in first.stdout.decode()

    # Again, with one query from stdin and one with no source: nothing is embedded again.
    again = _find(
        "-",
        str(held_out),
        "--in",
        str(photo_folder),
        "--data",
        str(data),
        "--json",
        stdin=query.read_bytes(),
    )
    assert again.returncode == 1, again.stderr.decode()  # the held-out photo has no source
    assert f"{indexed} images indexed (0 new), 0 failed" in again.stderr.decode()
    answers = [json.loads(line) for line in again.stdout.decode().splitlines()]
    assert [(a["query"], a["source_found"]) for a in answers] == [
        ("-", True),
        (str(held_out), False),
    ]
    assert answers[0]["matches"][0]["path"] == photos[0].name


def test_find_without_data_keeps_each_folder_apart(photo_folder: Path, tmp_path: Path) -> None:
    env_home = tmp_path / "home"
    query = tmp_path / "q.jpg"
    query.write_bytes(encode(load(sorted(photo_folder.iterdir())[0]), quality=60))
    other = tmp_path / "other"
    other.mkdir()
    (other / "one.jpg").write_bytes(query.read_bytes())
    env = {"IMGSEARCH_DATA_DIR": str(env_home)}
    for folder, count in [(photo_folder, len(list(photo_folder.iterdir()))), (other, 1)]:
        result = subprocess.run(
            [*IMGSEARCH, "find", str(query), "--in", str(folder)],
            capture_output=True,
            timeout=180,
            check=False,
            env={**os.environ, **env},
        )
        assert result.returncode == 0, result.stderr.decode()
        assert f"{count} images indexed ({count} new)" in result.stderr.decode()
    assert len(list((env_home / "find").iterdir())) == 2


def test_find_on_a_missing_folder_is_an_input_error(tmp_path: Path) -> None:
    query = tmp_path / "q.jpg"
    query.write_bytes(b"anything")
    result = _find(str(query), "--in", str(tmp_path / "nope"), "--data", str(tmp_path / "d"))
    assert result.returncode == 2
    assert result.stderr.decode().startswith("error: folder ")
