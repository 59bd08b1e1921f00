"""Idle connections cannot take the descriptors a server needs to serve and to index."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import grpc

from imgsearch.rpc.client import Client
from tests.conftest import wait_until
from tests.imaging import variants
from tests.processes import free_port, serving_idle

LIMIT = 256  # open files the server process may have
IDLE = 300  # raw connections that never speak


def test_idle_connections_neither_lock_out_clients_nor_starve_indexing(
    photo_folder: Path, sample_photos: list[Path], tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "imgsearch.cli", "serve", str(photo_folder)]
    command += ["--listen", address, "--data", str(tmp_path / "data"), "--metrics-listen", ""]
    env = {**os.environ, "IMGSEARCH_MAX_CONNECTIONS": "100", "IMGSEARCH_SETTLE_SECONDS": "0.2"}
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(command, stderr=log, env=env)
    resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
    idle: list[socket.socket] = []
    try:
        with Client(address, timeout=60) as client:
            wait_until(lambda: serving_idle(client), 120, 0.5)
            count = client.status().indexed
            idle = [socket.create_connection(address.split(":")) for _ in range(IDLE)]  # type: ignore[arg-type]
            (photo_folder / "landed.jpg").write_bytes(variants(sample_photos, 1)[0])
        # A new client gets through once the silent connections are closed (10 s), and the
        # file that landed meanwhile was read: no descriptor was missing.
        with Client(address, timeout=60) as late:
            wait_until(lambda: _indexed(late) == count + 1, 90, 0.5)
            assert late.status().failed == 0
    finally:
        for connection in idle:
            connection.close()
        process.terminate()
        process.wait(30)
    assert "Too many open files" not in (tmp_path / "serve.log").read_text()


def _indexed(client: Client) -> int:
    try:
        return int(client.status().indexed)
    except grpc.RpcError:
        return -1
