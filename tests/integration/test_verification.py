"""Issue 4: geometric verification confirms true sources the score alone is unsure about."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import ImageOps

from tests.conftest import Served
from tests.imaging import crop, encode, load


@pytest.fixture
def strict(tmp_path: Path, sample_photos: list[Path], serve: Callable[..., Served]) -> Served:
    """All but the last photo indexed, and a threshold so high that every search verifies."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sample_photos[:-1]:
        shutil.copy(photo, folder / photo.name)
    served = serve(folder, match_threshold=0.99)
    served.wait_idle()
    return served


def test_small_crops_are_confirmed_and_located(strict: Served, sample_photos: list[Path]) -> None:
    confirmed = []
    for photo in sample_photos[:-1]:
        image = load(photo)
        piece = crop(image, 0.25, (0.8, 0.3))
        response = strict.client.search(encode(piece, quality=50), limit=5)
        top = response.matches[0]
        assert top.path == photo.name
        assert not any(m.match for m in response.matches[1:])
        if top.match:
            confirmed.append(photo.name)
            assert top.inliers >= 15
            # where the crop was cut: x 0.8 * (1 - 0.5) .. +0.5, y 0.3 * (1 - 0.5) .. +0.5
            region = (top.region.x0, top.region.y0, top.region.x1, top.region.y1)
            assert region == pytest.approx((0.4, 0.15, 0.9, 0.65), abs=0.06), photo.name
    # Smooth, texture-poor photos (the retina fundus image) give SIFT too few keypoints.
    assert len(confirmed) >= len(sample_photos[:-1]) - 1, confirmed


def test_mirrored_copies_are_confirmed(strict: Served, sample_photos: list[Path]) -> None:
    photo = sample_photos[1]
    query = encode(ImageOps.mirror(crop(load(photo), 0.5, (0.1, 0.9))), quality=60)
    top = strict.client.search(query, limit=3).matches[0]
    assert (top.path, top.match) == (photo.name, True)
    assert top.inliers >= 15


def test_photos_without_a_source_stay_unconfirmed(
    strict: Served, sample_photos: list[Path]
) -> None:
    held_out = load(sample_photos[-1])
    for query in (encode(held_out), encode(crop(held_out, 0.3, (0.5, 0.5)), quality=40)):
        response = strict.client.search(query, limit=5)
        assert not any(m.match for m in response.matches)
        assert all(m.inliers < 15 for m in response.matches)
