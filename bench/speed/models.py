"""Model files and encoders for the variants compared: fp32 (bundled), int8 and fp16 copies."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.speed.common import SPEED_CACHE, log
from imgsearch.model import ImageEncoder
from imgsearch.model.preprocess import DecodedImage
from imgsearch.settings import BUNDLED_MODEL, ModelSettings

INT8_MODEL = BUNDLED_MODEL.with_name("efficientnet_lite0_int8.onnx")


def model_files(*, fp16: bool) -> dict[str, Path]:
    """Precision name -> ONNX file. int8 is the committed file (scripts/quantize_model.py)."""
    files = {"fp32": BUNDLED_MODEL}
    if INT8_MODEL.is_file():
        files["int8"] = INT8_MODEL
    else:
        log(f"{INT8_MODEL} missing (run scripts/quantize_model.py): int8 left out")
    if fp16:
        files["fp16"] = _fp16_model()
    return files


def _fp16_model() -> Path:
    """fp16 weights and activations with fp32 input/output (built once into the cache)."""
    out = SPEED_CACHE / "models" / "efficientnet_lite0_fp16.onnx"
    if not out.is_file():
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        out.parent.mkdir(parents=True, exist_ok=True)
        model = convert_float_to_float16(onnx.load(str(BUNDLED_MODEL)), keep_io_types=True)
        onnx.save(model, str(out))
    return out


class ModelClock:
    """Measures the time an encoder spends inside onnxruntime (the rest of encode() is
    batch assembly and GeM pooling), by wrapping its backbone's run() on this instance."""

    def __init__(self, encoder: ImageEncoder) -> None:
        self.seconds = 0.0
        backbone = encoder._backbone
        run = backbone.run

        def timed(pixels: NDArray[np.float32]) -> NDArray[np.float32]:
            start = time.perf_counter()
            try:
                return run(pixels)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(backbone, "run", timed)  # noqa: B010 - an instance attribute, not the class


class Encoders:
    """One ImageEncoder per (precision, onnxruntime threads), made on first use."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self._made: dict[tuple[str, int], tuple[ImageEncoder, ModelClock]] = {}

    def get(self, precision: str, threads: int) -> tuple[ImageEncoder, ModelClock]:
        key = (precision, threads)
        if key not in self._made:
            encoder = ImageEncoder(ModelSettings(model=str(self.files[precision])), threads=threads)
            self._made[key] = (encoder, ModelClock(encoder))
        return self._made[key]


def canvas_groups(images: list[DecodedImage], stride: int = 32) -> int:
    """How many distinct padded sizes (separate model batches) a list of images makes."""
    return len(
        {
            (math.ceil(i.pixels.shape[0] / stride), math.ceil(i.pixels.shape[1] / stride))
            for i in images
        }
    )
