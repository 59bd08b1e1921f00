"""A non-Python client (Node, @grpc/grpc-js + @grpc/proto-loader) calls Search from the .proto."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Served
from tests.imaging import crop, encode, load

CLIENT = Path(__file__).parents[1] / "node" / "search_client.js"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    assert found, "node is required (installed by the test command)"
    assert (CLIENT.parent / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run `make test`"
    return found


def _run(node: str, port: int, image: Path, limit: int = 3) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [node, str(CLIENT), f"127.0.0.1:{port}", str(image), str(limit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, json.loads(result.stdout)


def test_node_client_searches(
    node: str, tmp_path: Path, photo_folder: Path, serve: Callable[..., Served]
) -> None:
    served = serve(photo_folder)
    served.wait_idle()
    source = sorted(photo_folder.iterdir())[3]
    query = tmp_path / "query.jpg"
    query.write_bytes(encode(crop(load(source), 0.6), quality=40))

    code, response = _run(node, served.app.port, query)
    assert code == 0, response
    matches = response["matches"]
    assert isinstance(matches, list)
    assert len(matches) == 3
    assert matches[0]["path"] == source.name
    assert matches[0]["match"] is True
    assert matches[0]["score"] > matches[1]["score"]

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    code, error = _run(node, served.app.port, bad)
    assert code == 1
    assert error["code"] == "INVALID_ARGUMENT"
