"""scripts/train_copy_detector.py (issue 18): a few steps on a handful of images, resumed
from its checkpoint, exported as models the service loads under both contracts, whose
vectors are more invariant to flips and resizing than the starting weights'."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgsearch.backbones import EFFICIENTNET, Contract, choose_model
from imgsearch.model.session import OnnxBackbone
from imgsearch.settings import BUNDLED_SAMPLES

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_copy_detector.py"
PHOTOS = ("astronaut", "building", "chelsea_cat", "coffee", "rocket_launch", "retina")
SIDE = 96


def _train(images: Path, out: Path, *flags: str) -> str:
    run = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--images", str(images), "--out", str(out)),
            *("--size", str(SIDE), "--batch", "6", "--threads", "1", *flags),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _vectors(model: OnnxBackbone, images: list[Image.Image]) -> np.ndarray:
    pixels = np.stack([np.asarray(i.resize((160, 160)), np.float32) / 255 for i in images])
    return model.run(pixels.transpose(0, 3, 1, 2).copy())


def _invariance(path: Path, photos: list[Image.Image]) -> float:
    """How much closer each photo's vector is to its mirror and to a blurred small copy of
    it than to the other photos' (cosine)."""
    model = OnnxBackbone(choose_model(str(path)))
    assert model.info.contract is Contract.EMBEDDING
    assert model.info.channels == 256
    base = _vectors(model, photos)
    assert np.allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-4)
    mirrored = _vectors(model, [ImageOps.mirror(p) for p in photos])
    small = _vectors(
        model, [p.resize((p.width // 4, p.height // 4)).resize(p.size) for p in photos]
    )
    same = float(np.mean([(base * mirrored).sum(1), (base * small).sum(1)]))
    similarity = base @ base.T
    others = float(similarity[~np.eye(len(photos), dtype=bool)].mean())
    return same - others


@pytest.mark.timeout(600)
def test_training_resumes_and_exports_a_more_invariant_model(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in PHOTOS:
        (images / f"{name}.jpg").write_bytes((BUNDLED_SAMPLES / f"{name}.jpg").read_bytes())
    start, trained = tmp_path / "start", tmp_path / "trained"
    _train(images, start, "--minutes", "0")  # the starting weights, exported as they are
    _train(images, trained, "--steps", "10")
    resumed = _train(images, trained, "--steps", "20")
    assert "resumed at step 10" in resumed
    curve = json.loads((trained / "curve.json").read_text())
    assert [c["step"] for c in curve] == list(range(1, 21))
    run = json.loads((trained / "run.json").read_text())
    assert run["steps"] == 20 and run["images"] == len(PHOTOS)
    assert (trained / "curve.png").stat().st_size > 0
    photos = [Image.open(images / f"{n}.jpg").convert("RGB") for n in PHOTOS]
    before, after = (
        _invariance(start / "model.onnx", photos),
        _invariance(trained / "model.onnx", photos),
    )
    assert after > before + 0.1, (before, after)


def _feature_map(path: Path, photos: list[Image.Image]) -> np.ndarray:
    model = OnnxBackbone(choose_model(str(path)))
    assert model.info.contract is Contract.FEATURE_MAP
    assert model.info.channels == 1280
    return _vectors(model, photos)


@pytest.mark.timeout(600)
def test_the_trained_network_is_exported_under_the_feature_map_contract_too(
    tmp_path: Path,
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in PHOTOS[:3]:
        (images / f"{name}.jpg").write_bytes((BUNDLED_SAMPLES / f"{name}.jpg").read_bytes())
    start, trained = tmp_path / "start", tmp_path / "trained"
    _train(images, start, "--minutes", "0")
    _train(images, trained, "--steps", "3")
    photos = [Image.open(images / f"{n}.jpg").convert("RGB") for n in PHOTOS[:3]]
    bundled = _feature_map(choose_model(EFFICIENTNET).path, photos)
    before = _feature_map(start / "model-feature-map.onnx", photos)
    after = _feature_map(trained / "model-feature-map.onnx", photos)
    assert before.shape == after.shape == bundled.shape == (3, 1280, 5, 5)
    # Untrained, it is the bundled network; trained, its map has moved.
    assert np.allclose(before, bundled, atol=1e-3 * float(np.abs(bundled).max()))
    assert not np.allclose(after, before, atol=1e-2 * float(np.abs(before).max()))
