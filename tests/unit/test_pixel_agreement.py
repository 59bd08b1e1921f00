"""The duplicate finder's last check: a copy's pixels agree with its original's once mapped
onto it; two images that share one pasted part (a logo, a screenshot's frame) do not, however
many keypoints that part matches; and two frames of a burst are not copies of each other."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from imgsearch.searcher.duplicates import MIN_AGREEMENT, UNSHARED_EACH, _is_copy
from imgsearch.searcher.verify import (
    MAX_DISTORTION,
    SHAPE_INLIERS,
    Keypoints,
    Verification,
    Verifier,
    _distortion,
    _exact,
)
from tests.imaging import burst_pair, crop, encode, load, rescale


def _compare(folder: Path, first: Image.Image, second: Image.Image) -> Verification:
    for name, image in (("first.jpg", first), ("second.jpg", second)):
        (folder / name).write_bytes(encode(image, quality=90))
    verifier = Verifier(folder, max_file_bytes=1 << 26)
    query, candidate = (
        verifier.describe_file("first.jpg", exact=True),
        verifier.describe_file("second.jpg", exact=True),
    )
    assert query is not None and candidate is not None
    return verifier.compare(query, candidate[0])


def _framed(photo: Image.Image, frame: Image.Image) -> Image.Image:
    """`photo` over a third of `frame`'s area, as an app or a web page shows a picture."""
    framed = frame.resize((900, 600))
    framed.paste(photo.resize((540, 360)), (300, 160))
    return framed


def test_a_crop_agrees_with_its_original(tmp_path: Path, sample_photos: list[Path]) -> None:
    photo = load(sample_photos[0])
    found = _compare(tmp_path, rescale(crop(photo, 0.3, anchor=(0.3, 0.6)), 0.7), photo)
    assert found.inliers >= 15
    assert found.agreement is not None and found.agreement >= MIN_AGREEMENT
    assert _is_copy(False, found, 15)


def test_two_pictures_in_one_frame_are_not_copies(
    tmp_path: Path, sample_photos: list[Path]
) -> None:
    frame, one, other = (load(p) for p in sample_photos[:3])
    found = _compare(tmp_path, _framed(one, frame), _framed(other, frame))
    assert found.inliers >= 30, "the frame alone matches well"
    assert found.exact >= 0.8 * found.inliers
    assert found.agreement is not None and found.agreement < MIN_AGREEMENT
    assert not _is_copy(True, found, 15)
    # ... while the same picture in the same frame is one.
    same = _compare(tmp_path, _framed(one, frame), _framed(one, frame).resize((600, 400)))
    assert same.agreement is not None and same.agreement >= MIN_AGREEMENT
    assert _is_copy(True, same, 15)


def _drawing(parts: list[Image.Image], places: list[tuple[int, int]]) -> Image.Image:
    """Parts pasted on a blank page, as clip art of one set is drawn."""
    page = Image.new("RGB", (480, 480), "white")
    for part, place in zip(parts, places, strict=True):
        page.paste(part, place)
    return page


def test_two_drawings_of_one_set_are_not_copies(tmp_path: Path, sample_photos: list[Path]) -> None:
    body, arm = (load(p) for p in sample_photos[:2])
    body, arm = body.resize((200, 200)), arm.resize((96, 96))
    one = _drawing([body, arm, arm], [(140, 140), (20, 20), (360, 360)])
    other = _drawing([body, arm, arm], [(140, 140), (360, 20), (20, 360)])
    found = _compare(tmp_path, one, other)
    assert found.inliers >= 15 and found.exact >= 0.8 * found.inliers, "the body matches"
    assert found.agreement is not None and found.agreement >= MIN_AGREEMENT
    assert min(found.unshared) >= UNSHARED_EACH
    assert not _is_copy(True, found, 15)
    # ... while a copy with content added on the blank page (text, an emoji) is one.
    marked = one.copy()
    marked.paste(arm.resize((48, 48)), (400, 200))
    copy = _compare(tmp_path, rescale(marked, 0.7), one)
    assert copy.unshared[0] >= UNSHARED_EACH and copy.unshared[1] < UNSHARED_EACH
    assert _is_copy(True, copy, 15)


def test_a_burst_frame_is_not_a_copy_of_its_sibling(
    tmp_path: Path, sample_photos: list[Path]
) -> None:
    for photo in sample_photos:
        first, second = burst_pair(load(photo))
        found = _compare(tmp_path, second, first)
        assert found.inliers >= SHAPE_INLIERS, f"most of the scene of {photo.name} matches"
        assert found.distortion > MAX_DISTORTION, "but only under another perspective"
        # (Rocket launch: 77 of 101 inliers fit one similarity, as many as a blurred copy's.)
        assert not _is_copy(True, found, 15), photo.name
    # ... while a crop of a photo, turned a little and shrunk, bends no more than an affine
    # map does.
    photo = load(sample_photos[0])
    cut = crop(photo, 0.5, anchor=(0.4, 0.5)).rotate(4, resample=Image.Resampling.BILINEAR)
    copy = rescale(cut, 0.6)
    for found in (_compare(tmp_path, copy, photo), _compare(tmp_path, photo, copy)):
        assert found.inliers >= SHAPE_INLIERS
        assert found.distortion < MAX_DISTORTION, "either way round"
        assert _is_copy(False, found, 15)


def test_a_copy_resized_to_another_aspect_ratio_is_a_copy(
    tmp_path: Path, sample_photos: list[Path]
) -> None:
    """A fixed-size thumbnail squashes or stretches its photo: one similarity no longer maps
    it onto the original, one once the stretch is undone does (before: no stretched copy of
    any sample photo passed, its matches 10-50% exact)."""
    for path in sample_photos:
        photo = load(path)
        width, height = photo.size
        for across, down in ((0.6, 0.45), (0.42, 0.6)):
            squashed = photo.resize((round(width * across), round(height * down)))
            for found in (_compare(tmp_path, squashed, photo), _compare(tmp_path, photo, squashed)):
                assert found.exact >= 0.8 * found.inliers, (path.name, across, down)
                assert _is_copy(False, found, 15), (path.name, across, down)


def test_a_small_copy_enlarged_to_be_described_maps_exactly(
    tmp_path: Path, sample_photos: list[Path]
) -> None:
    """A copy shrunk to 0.3x (90-240 px) is enlarged to 640 px to be described, so its
    keypoints sit ~3 px apart from where a sharp image's would: the exactness tolerance
    grows by how much more it was enlarged than its original (before: 67-95% of its matches
    exact, two not copies)."""
    for path in sample_photos:
        photo = load(path)
        small = rescale(photo, 0.3)
        for found in (_compare(tmp_path, small, photo), _compare(tmp_path, photo, small)):
            assert found.inliers >= 15, path.name
            assert found.exact >= 0.95 * found.inliers, (path.name, found)
            assert _is_copy(False, found, 15), path.name


def test_with_too_few_keypoints_only_a_whole_frame_copy_agrees_everywhere(
    tmp_path: Path, sample_photos: list[Path]
) -> None:
    """Thumbnail-sized images too poor in keypoints for a homography are compared frame to
    frame: a recoloured, shrunk copy agrees in every square; the next frame of an
    animation (the subject moved a few pixels) agrees in most, and is not a copy however
    alike the descriptor finds them."""
    compared = 0
    for path in sample_photos:
        small = load(path).resize((40, 40))
        moved = small.copy()
        moved.paste(small.crop((8, 8, 28, 32)), (14, 8))
        copy = ImageEnhance.Color(small).enhance(0.4).resize((32, 32))
        other, same = _compare(tmp_path, moved, small), _compare(tmp_path, copy, small)
        if other.box is not None or same.box is not None:
            continue  # a homography fitted: the keypoint rules decide
        compared += 1
        assert other.agreement is not None and other.agreement >= MIN_AGREEMENT, path.name
        assert not _is_copy(True, other, 15), path.name
        assert _is_copy(True, same, 15), path.name
    assert compared >= 1, "some sample photo has too few keypoints at 40 px for a fit"


def test_distortion_is_the_same_either_way_round() -> None:
    """A pair is compared in whichever order the finder meets it: the bend is measured in the
    pixels of the image that shows the matched part smaller, so a crop blown up to twice
    its size does not bend twice as much seen from its original."""
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 320, (200, 2)).astype(np.float32)
    enlarging = np.array([[2.0, 0.1, 30.0], [-0.1, 2.0, 12.0], [4e-5, -3e-5, 1.0]])
    mapped = cv2.perspectiveTransform(points.reshape(-1, 1, 2), enlarging).reshape(-1, 2)
    forward = _distortion(enlarging, points)
    backward = _distortion(np.linalg.inv(enlarging), mapped)
    assert forward > 0.5, "the perspective terms bend it"
    assert backward == pytest.approx(forward, rel=0.25)
    similarity = enlarging.copy()
    similarity[2, :2] = 0
    assert _distortion(similarity, points) < 1e-6


def _keypoints(points: np.ndarray, side: int = 320) -> Keypoints:
    return Keypoints(
        points.astype(np.float32), np.zeros((len(points), 128), np.uint8), side, side, side
    )


def test_matches_collapsing_onto_a_few_points_are_not_exact() -> None:
    """A page's repeated glyphs can all match the same few keypoints of a small icon; a
    similarity that shrinks the page onto them "maps" every such match. Exactness fits its
    similarity to one match per candidate point, counts distinct points and no similarity
    beyond any copy's scale: the icon no longer out-scores the photo the page shows
    (bench/accuracy page queries). A true copy's matches stay exact."""
    rng = np.random.default_rng(5)
    page = rng.uniform(0, 320, (120, 2))
    icon = np.array([[100.0, 100.0], [101.0, 100.5], [100.5, 101.0]])
    collapsing = [cv2.DMatch(i, i % 3, 0, float(i)) for i in range(len(page))]
    assert _exact(_keypoints(page), _keypoints(icon), collapsing, None).exact == 0
    shifted = page * 0.8 + 20.0  # the page shrunk and moved: a copy
    copying = [cv2.DMatch(i, i, 0, 1.0) for i in range(len(page))]
    assert _exact(_keypoints(page), _keypoints(shifted), copying, None).exact == len(page)


def test_a_sibling_lands_as_many_matches_within_the_tolerance_but_less_closely() -> None:
    """A burst sibling, a hair of perspective away, lands about as many matches within the
    exact tolerance as the frame a query was cut from, but further from the similarity:
    the spread tells them apart where the count cannot."""
    rng = np.random.default_rng(11)
    query = rng.uniform(0, 320, (150, 2))
    matches = [cv2.DMatch(i, i, 0, 1.0) for i in range(len(query))]
    frame = query * 1.4 + 30.0 + rng.normal(0, 0.1, query.shape)  # keypoint noise only
    # A sibling: the same similarity, each point off by ~0.6-1.0 px (the perspective).
    angle = rng.uniform(0, 2 * np.pi, len(query))
    off = rng.uniform(0.6, 1.0, (len(query), 1)) * np.stack([np.cos(angle), np.sin(angle)], 1)
    sibling = query * 1.4 + 30.0 + off
    found_frame = _exact(_keypoints(query), _keypoints(frame), matches, None)
    found_sibling = _exact(_keypoints(query), _keypoints(sibling), matches, None)
    assert found_frame.exact == len(query)
    assert found_sibling.exact >= 0.95 * len(query), "within the exact tolerance alike"
    assert found_sibling.spread > 3 * found_frame.spread
