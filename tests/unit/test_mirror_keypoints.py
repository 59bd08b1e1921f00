"""The mirror image's keypoints are the query's own, reflected: no second SIFT detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgsearch.model.preprocess import DecodedImage, DecodeLimits, decode_image
from imgsearch.searcher.verify import Verifier, mirrored


def _decoded(photo: Path) -> DecodedImage:
    return decode_image(photo.read_bytes(), 640, DecodeLimits())


def test_reflected_descriptors_are_those_detected_on_the_mirror_image(
    tmp_path: Path, sample_photos: list[Path]
) -> None:
    verifier = Verifier(tmp_path, max_file_bytes=1 << 26)
    for photo in sample_photos[:4]:
        image = _decoded(photo)
        reflected = mirrored(verifier.describe(image)[0])
        flipped = DecodedImage(
            np.ascontiguousarray(image.pixels[:, ::-1]),
            image.original_width,
            image.original_height,
            image.format,
        )
        detected = verifier.describe(flipped)[0]
        # Keypoints found at the same place on both: their descriptors agree.
        agree = total = 0
        for point, descriptor in zip(detected.points, detected.descriptors, strict=True):
            distance = np.linalg.norm(reflected.points - point, axis=1)
            nearest = int(np.argmin(distance))
            if distance[nearest] < 0.5:
                total += 1
                difference = reflected.descriptors[nearest].astype(float) - descriptor
                agree += np.linalg.norm(difference) < 0.25 * np.linalg.norm(
                    descriptor.astype(float)
                )
        assert total >= 20, photo.name
        assert agree >= 0.6 * total, (photo.name, agree, total)


def test_reflecting_twice_gives_the_keypoints_back(
    tmp_path: Path, sample_photos: list[Path]
) -> None:
    keypoints = Verifier(tmp_path, max_file_bytes=1 << 26).describe(_decoded(sample_photos[0]))[0]
    twice = mirrored(mirrored(keypoints))
    assert np.array_equal(twice.descriptors, keypoints.descriptors)
    assert np.allclose(twice.points, keypoints.points)
    assert not np.array_equal(mirrored(keypoints).descriptors, keypoints.descriptors)
