"""The descriptor: normalised, deterministic, independent of batching, robust to degradation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgsearch.backbones import ModelChoice
from imgsearch.errors import ModelError
from imgsearch.model import ImageEncoder
from imgsearch.model.encoder import SLIVER_ASPECT
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


def test_the_geometric_check_looks_inside_flat_borders_but_never_at_a_sliver(
    encoder: ImageEncoder, sample_photos: list[Path]
) -> None:
    """A photo shown small on a plain ground is checked as the photo; a strip that border
    peeling cuts from a photo on a plain ground (bench/accuracy: food on white, peeled down
    to a band 36x as wide as tall) is no view of it: the whole query is checked."""
    assert 600 / 12 > SLIVER_ASPECT > 240 / 180
    photo = load(sample_photos[0]).resize((240, 180))
    canvas = Image.new("RGB", (600, 450), "white")
    canvas.paste(photo, (180, 135))
    seen = encoder.describe_query(encode(canvas)).image
    assert seen is not None
    whole = encoder.decode(encode(canvas)).pixels.shape
    assert seen.pixels.shape != whole, "the photo inside the borders"
    height, width = seen.pixels.shape[:2]
    assert width / height == pytest.approx(240 / 180, rel=0.05)
    band = Image.new("RGB", (600, 450), "white")
    band.paste(photo.crop((0, 80, 240, 92)).resize((600, 12)), (0, 219))
    seen = encoder.describe_query(encode(band)).image
    assert seen is not None
    assert seen.pixels.shape == encoder.decode(encode(band)).pixels.shape
