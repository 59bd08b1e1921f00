"""The descriptor: normalised, deterministic, independent of batching, robust to degradation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgsearch.backbones import ModelChoice
from imgsearch.errors import ModelError
from imgsearch.model import ImageEncoder
from imgsearch.model.session import OnnxBackbone
from tests.imaging import crop, encode, load


def test_vectors_are_unit_length_and_batch_independent(
    encoder: ImageEncoder, sample_photos: list[Path]
) -> None:
    decoded = [encoder.decode(p.read_bytes()) for p in sample_photos]
    together = encoder.encode(decoded)
    assert together.shape == (len(sample_photos), encoder.dimensions)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    for i, image in enumerate(decoded):
        alone = encoder.encode([image])[0]
        np.testing.assert_allclose(alone, together[i], atol=1e-5)


def test_a_crop_is_closer_to_its_source_than_to_other_photos(
    encoder: ImageEncoder, sample_photos: list[Path]
) -> None:
    database = encoder.encode([encoder.decode(p.read_bytes()) for p in sample_photos])
    for i, photo in enumerate(sample_photos):
        data = encode(crop(load(photo), 0.5, (0.2, 0.8)), quality=50)
        query = encoder.describe_file(data, regions=False).vectors[0]
        scores = database @ query
        assert int(np.argmax(scores)) == i, (photo.name, scores)


def test_model_contract_is_checked(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    with pytest.raises(ModelError, match="not found"):
        OnnxBackbone(ModelChoice("missing", missing, "test", redistributable=True))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        OnnxBackbone(ModelChoice("garbage", garbage, "test", redistributable=True))
