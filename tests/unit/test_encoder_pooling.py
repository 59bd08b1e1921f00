"""The vectorised pooling equals the straightforward one: a GeM per window, one at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from imgsearch.model import ImageEncoder
from imgsearch.model.encoder import GEM_POWER, REGION_SCALES, REGIONS_PER_IMAGE, _regions, _whole

_EPS = 1e-6


def _reference_gem(cells: NDArray[np.float32]) -> NDArray[np.float32]:
    flat = np.clip(cells, _EPS, None).reshape(cells.shape[0], -1)
    pooled = np.power(np.mean(np.power(flat, GEM_POWER), axis=1), 1 / GEM_POWER)
    vector = pooled.astype(np.float32)
    normalised: NDArray[np.float32] = vector / max(float(np.linalg.norm(vector)), _EPS)
    return normalised


def _reference_regions(
    feature_map: NDArray[np.float32],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    rows, cols = feature_map.shape[1:]
    vectors = [_reference_gem(feature_map)]
    boxes = [np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32)]
    for per_side, fraction in REGION_SCALES:
        height, width = max(1, round(rows * fraction)), max(1, round(cols * fraction))
        for i in range(per_side):
            top = round(i * (rows - height) / (per_side - 1))
            for j in range(per_side):
                left = round(j * (cols - width) / (per_side - 1))
                vectors.append(
                    _reference_gem(feature_map[:, top : top + height, left : left + width])
                )
                boxes.append(
                    np.array(
                        [left / cols, top / rows, (left + width) / cols, (top + height) / rows],
                        dtype=np.float32,
                    )
                )
    return np.stack(vectors), np.stack(boxes)


def _feature_map(
    rng: np.random.Generator, channels: int, rows: int, cols: int
) -> NDArray[np.float32]:
    # Like a ReLU6 conv map: many exact zeros, some saturated cells, a few all-zero channels.
    values = np.clip(rng.normal(0.5, 2.0, (channels, rows, cols)), 0.0, 6.0).astype(np.float32)
    values[rng.random(channels) < 0.05] = 0.0
    return values


SHAPES = [(12, 12), (12, 9), (9, 12), (12, 7), (7, 12), (1, 1), (1, 2), (2, 1), (1, 12),
          (12, 1), (2, 2), (2, 3), (3, 3), (3, 1), (4, 5), (5, 4), (1, 30)]  # fmt: skip


@pytest.mark.parametrize(("rows", "cols"), SHAPES)
def test_regional_pooling_equals_one_gem_per_window(rows: int, cols: int) -> None:
    rng = np.random.default_rng(rows * 100 + cols)
    for channels in (1280, 7):
        feature_map = _feature_map(rng, channels, rows, cols)
        vectors, boxes = _regions(feature_map)
        expected_vectors, expected_boxes = _reference_regions(feature_map)
        assert vectors.shape == (REGIONS_PER_IMAGE, channels)
        assert vectors.dtype == np.float32 and boxes.dtype == np.float32
        np.testing.assert_allclose(vectors, expected_vectors, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(boxes, expected_boxes)
        whole, whole_box = _whole(feature_map)
        np.testing.assert_allclose(whole, expected_vectors[:1], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(whole_box, expected_boxes[:1])


def test_all_zero_and_negative_maps_pool_like_the_reference() -> None:
    for feature_map in (
        np.zeros((16, 3, 4), dtype=np.float32),
        -np.ones((16, 3, 4), dtype=np.float32),
        np.full((16, 1, 1), 1e-9, dtype=np.float32),
    ):
        np.testing.assert_allclose(
            _regions(feature_map)[0], _reference_regions(feature_map)[0], rtol=1e-5, atol=1e-6
        )


def test_returned_boxes_are_the_callers_own() -> None:
    feature_map = _feature_map(np.random.default_rng(1), 8, 6, 6)
    first = _regions(feature_map)[1]
    first[:] = 0.0
    np.testing.assert_array_equal(_regions(feature_map)[1], _reference_regions(feature_map)[1])


def test_real_feature_maps_pool_like_the_reference(
    encoder: ImageEncoder, sample_photos: list[Path]
) -> None:
    pooled: list[tuple[NDArray[np.float32], NDArray[np.float32]]] = []

    def capture(
        feature_map: NDArray[np.float32],
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        pooled.append(_reference_regions(feature_map))
        return _regions(feature_map)

    images = [encoder.decode(p.read_bytes()) for p in sample_photos[:3]]
    got = encoder._run(images, capture)
    assert len(got) == len(pooled) == 3
    for (vectors, boxes), (expected, expected_boxes) in zip(got, pooled, strict=True):
        np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(boxes, expected_boxes)
