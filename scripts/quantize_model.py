#!/usr/bin/env python3
"""Make an int8 (static, QDQ) copy of a contract-v1 backbone, calibrated on real photos.

    python scripts/quantize_model.py \\
        [--model imgsearch/model/weights/efficientnet_lite0.onnx] \\
        [--out imgsearch/model/weights/efficientnet_lite0_int8.onnx]

Choices, measured on this repo's model and photos (bench/results/speed/README.md):

* static quantisation in QDQ format, uint8 activations and int8 per-channel weights, so
  onnxruntime runs its u8s8 integer convolution kernels;
* ``reduce_range`` (7-bit weights): on x86 CPUs without VNNI (AVX2 only) onnxruntime's u8s8
  kernel multiplies with VPMADDUBSW, whose 16-bit sums saturate with full-range weights;
  without it the descriptors of this model fell to a mean cosine of ~0.84 with fp32, with
  it ~0.97. uint8 weights (u8u8) were as accurate but 5x slower; dynamic quantisation
  (ConvInteger) 2x slower than fp32; keeping the depthwise convolutions in fp32 less
  accurate;
* calibration (min/max) on the bundled sample photos and crops of them, decoded exactly as
  the service decodes (longer side 384).

The output meets the same contract (input ``pixels``, output ``features``, metadata), so it
drops in with ``--model`` / ``IMGSEARCH_MODEL``. Needs ``onnx`` and ``sympy`` (for
onnxruntime's pre-processing), which the service itself does not.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgsearch.model.preprocess import DecodeLimits, decode_image  # noqa: E402
from imgsearch.settings import BUNDLED_MODEL, BUNDLED_SAMPLES  # noqa: E402

DEFAULT_OUT = BUNDLED_MODEL.with_name("efficientnet_lite0_int8.onnx")
_CROPS = ((0.6, (0.0, 0.0)), (0.6, (1.0, 1.0)), (0.45, (0.5, 0.5)))


def calibration_inputs(photos: list[Path], side: int) -> list[NDArray[np.float32]]:
    """Each photo whole and three crops of it, decoded as the service decodes them."""
    inputs = []
    for photo in photos:
        data = photo.read_bytes()
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        variants = [data]
        for area, (ax, ay) in _CROPS:
            width, height = (round(s * math.sqrt(area)) for s in image.size)
            left, top = round((image.width - width) * ax), round((image.height - height) * ay)
            buffer = io.BytesIO()
            image.crop((left, top, left + width, top + height)).save(buffer, "JPEG", quality=90)
            variants.append(buffer.getvalue())
        for variant in variants:
            pixels = decode_image(variant, side, DecodeLimits()).pixels
            inputs.append(pixels.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255))
    return inputs


class _Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped
    def __init__(self, inputs: list[NDArray[np.float32]]) -> None:
        self._inputs: Iterator[NDArray[np.float32]] = iter(inputs)

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        batch = next(self._inputs, None)
        return None if batch is None else {"pixels": batch}


def quantize(model: Path, out: Path, photos: list[Path], side: int = 384) -> Path:
    """Write the int8 model to `out` and return it."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared))  # shape inference + graph fusions
        quantize_static(
            str(prepared),
            str(out),
            _Reader(calibration_inputs(photos, side)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    # Keep the contract metadata (arch, channels, stride, provenance) and say what changed.
    source = onnx.load(str(model), load_external_data=False)
    result = onnx.load(str(out))
    meta = {p.key: p.value for p in source.metadata_props if p.key.startswith("imgsearch.")}
    meta["imgsearch.arch"] = meta.get("imgsearch.arch", model.stem) + "-int8"
    meta["imgsearch.quantization"] = (
        "onnxruntime static QDQ, u8 activations / s8 per-channel weights, reduce_range, "
        f"min-max calibration on {len(photos)} photos x 4 views at {side} px "
        f"(scripts/quantize_model.py from {model.name})"
    )
    del result.metadata_props[:]
    for key, value in sorted(meta.items()):
        result.metadata_props.add(key=key, value=value)
    onnx.save(result, str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--photos", type=Path, default=BUNDLED_SAMPLES)
    parser.add_argument("--size", type=int, default=384, help="longer side, as the service")
    args = parser.parse_args()
    photos = sorted(p for p in args.photos.iterdir() if p.suffix in {".jpg", ".png", ".webp"})
    out = quantize(args.model, args.out, photos, args.size)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) from {len(photos)} photos")


if __name__ == "__main__":
    main()
