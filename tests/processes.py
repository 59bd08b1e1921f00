"""Helpers for tests and benchmarks that run `imgsearch serve` as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc

from imgsearch.rpc.client import Client

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now and that no earlier call
    returned: the kernel may hand one free port out twice in a row, and a server given it
    for both gRPC and metrics cannot start (seen once in CI)."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port on 127.0.0.1")


def start_serve(
    folder: Path,
    data: Path,
    address: str,
    *,
    metrics_listen: str = "",
    http_listen: str = "",
    stderr: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`imgsearch serve FOLDER` in a child process, its log going to `stderr`."""
    command = [sys.executable, "-m", "imgsearch.cli", "serve", str(folder), "--listen", address]
    command += ["--data", str(data), "--metrics-listen", metrics_listen]
    command += ["--http-listen", http_listen]
    if stderr is None:
        return subprocess.Popen(
            command, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}
        )
    with stderr.open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(command, stderr=log, env={**os.environ, **(env or {})})


def status_code(call: Callable[[], object]) -> grpc.StatusCode:
    """The gRPC status a call ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def serving_idle(client: Client) -> bool:
    """Whether the server answers and has indexed everything it found (False while it starts)."""
    try:
        status = client.status()
    except grpc.RpcError:
        return False
    return status.state == "watching" and status.pending == 0
