"""The package's layout holds: data flows one way, and the store starts without the ML stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "imgsearch"
HEAVY = {"onnxruntime", "PIL", "cv2", "pillow_heif"}


def _imports() -> dict[str, set[str]]:
    """imgsearch modules imported by each module of the package (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if relative.parts[1] == "v1":
            continue
        module = ".".join(relative.parts).removesuffix(".__init__")
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[module] = {n for n in names if n.startswith("imgsearch.")}
    return found


def _part(module: str) -> str:
    """The part of the package a module belongs to: a subpackage, or the core."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else ""
    own = ("embedder", "searcher", "store", "model", "rpc", "http", "v1", "app", "cli", "find")
    return name if name in own else "core"


def test_parts_import_downward_only() -> None:
    imports = _imports()
    forbidden = {
        "core": {"embedder", "searcher", "store", "model", "rpc", "http", "app", "cli", "find"},
        "store": {"model", "embedder", "searcher", "rpc", "app", "cli", "find"},
        "model": {"store", "embedder", "searcher", "rpc", "app", "cli", "find"},
        "rpc": {"embedder", "searcher", "store", "model", "http", "app", "cli", "find"},
        # The HTTP API calls the servicers it is given (app wires them), as gRPC does.
        "http": {"embedder", "searcher", "store", "app", "cli", "find"},
        "embedder": {"searcher", "app", "cli", "find"},
        "searcher": {"embedder", "app", "cli", "find"},
        "find": {"embedder", "searcher", "cli"},
    }
    for module, names in imports.items():
        part = _part(module)
        wrong = {n for n in names if _part(n) in forbidden.get(part, set())}
        assert not wrong, (module, sorted(wrong))
    both = [
        m for m, names in imports.items() if {"embedder", "searcher"} <= {_part(n) for n in names}
    ]
    assert both == ["imgsearch.app"], both


def test_parts_form_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for module, names in _imports().items():
        graph.setdefault(_part(module), set()).update(
            _part(n) for n in names if _part(n) != _part(module)
        )
    visiting: list[str] = []

    def visit(part: str) -> None:
        assert part not in visiting, f"import cycle: {' -> '.join([*visiting, part])}"
        visiting.append(part)
        for after in graph.get(part, ()):
            visit(after)
        visiting.pop()

    for part in graph:
        visit(part)


def _loaded(*args: str) -> set[str]:
    """Top-level packages Python imported to run `args` (from -X importtime)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [x for x in result.stderr.splitlines() if x.startswith("import time:")]
    return {x.rsplit("|", 1)[1].strip().split(".")[0] for x in lines[1:]}


def test_the_store_and_backup_start_without_the_ml_stack() -> None:
    assert not _loaded("-c", "import imgsearch.store") & HEAVY
    assert not _loaded("-m", "imgsearch.cli", "backup", "--help") & HEAVY
    assert {"onnxruntime", "PIL"} <= _loaded("-c", "import imgsearch.model")  # the check works
