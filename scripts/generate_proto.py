"""Regenerate imgsearch/v1/ (messages, gRPC stubs and their type stubs) from proto/.

Run with the project's virtual environment (`make proto`); the versions of grpcio-tools and
mypy-protobuf are pinned in pyproject.toml so the output is reproducible and CI can fail
when the committed code is stale.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    bin_dir = Path(sys.executable).parent
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        "-I",
        "proto",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        "--python_out=.",
        "--mypy_out=quiet:.",
        "--grpc_python_out=.",
        "--mypy_grpc_out=quiet:.",
        *protos,
    ]
    os.chdir(ROOT)
    return int(protoc.main(args))


if __name__ == "__main__":
    sys.exit(main())
