"""The committed gRPC code in imgsearch/v1 is exactly what proto/ generates."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    (tmp_path / "imgsearch" / "v1").mkdir(parents=True)
    subprocess.run([sys.executable, str(tmp_path / "scripts" / "generate_proto.py")], check=True)
    committed = {p.name: p.read_bytes() for p in (ROOT / "imgsearch" / "v1").glob("*_pb2*")}
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "imgsearch" / "v1").glob("*_pb2*")}
    assert fresh.keys() == committed.keys()
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `make proto`: stale {stale}"
