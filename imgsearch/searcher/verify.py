"""Geometric verification: does the query really show (part of) this candidate image?

Global and regional descriptors rank well but cannot tell a copy from a similar scene with
confidence. SIFT keypoints matched with Lowe's ratio test and a homography fitted with
MAGSAC count the query points that land consistently on the candidate: a copy, cropped,
rescaled or recoloured, keeps dozens of inliers; a different photo of a similar scene
keeps almost none. The mirrored query is tried too (SIFT is not mirror-invariant): its
keypoints are the query's own, reflected, not a second detection.
Verification is only run when the descriptor score is not already conclusive, and only on
the first few candidates, because it costs tens of milliseconds per candidate.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from imgsearch.errors import InvalidImageError, UnreadableFileError
from imgsearch.files import read_folder_file
from imgsearch.metrics import KEYPOINT_CANDIDATES
from imgsearch.model.preprocess import DecodedImage, DecodeLimits, decode_image

log = logging.getLogger(__name__)

_RATIO = 0.8
# SIFT's contrast threshold for the keypoint check (OpenCV's default, 0.04, stays for
# exactness): at the default, a crop of a smooth photo (sky, a plate on white, a nebula's
# glow) keeps a handful of keypoints, too few to confirm its source. At 0.01, 218 of the 394
# bench/accuracy sourced queries whose source the check saw but did not confirm reach 15
# inliers; no no-source query's candidate passed 9 either way (600 checked). The strongest
# 1,000 keypoints are kept, so a textured image keeps its own. Exactness and the duplicate
# finder's pixel checks keep the default: at 0.01 even a 24 px thumbnail, enlarged to be
# described, fits a homography, and the frame-to-frame comparison of tiny images (frames
# of an animation) would no longer be reached.
_CHECK_CONTRAST = 0.01
# The closer look (`Verifier.describe_closer`): where the check's view of a query confirms no
# candidate, the whole query file is decoded again at up to _CLOSER_SIDE and up to
# _CLOSER_FEATURES keypoints are kept. A photo on a web page is a fraction of the query, which
# the model decodes at a short side of 288 px, and the page's text keeps most of the strongest
# 1,000 keypoints; a small crop has finer detail in its file than at 288 px. Probed on
# bench/accuracy (a31f2a4): of the 234 sourced queries the check left unconfirmed, 85 reached
# 15 inliers this way (42 pages, 20 screenshots, 10 crops to a fifth, the rest spread), while
# the most any of 1,772 no-source queries reached was 13 (9 before): ~70 ms per closer look
# (decode and 2,000 keypoints), ~120 ms with three candidates matched again.
_CLOSER_SIDE = 720
_CLOSER_FEATURES = 2000
_MIN_MATCHES = 8  # fewer tentative matches cannot support a homography
# Exactness (`Verification.exact`): a copy maps onto its own source by a similarity (scale,
# rotation, shift) to within a pixel or two; a burst sibling, taken a moment apart, needs
# perspective and parallax, so far fewer matches land that precisely (bench/accuracy `burst`).
_EXACT_PIXELS = 1.5
# A copy resized to another aspect ratio is a similarity once the stretch is undone; a
# homography whose axes scale apart by more than this (log ratio, ~3%) is tried so too.
_STRETCHED = 0.03
# SIFT places the keypoints of a stretched image less precisely (the stretch reshapes each
# blob): of a photo's matches that its 3:4 stretch and the original share, ~87% land
# within _EXACT_PIXELS of one similarity once the stretch is undone, ~99% within this.
_STRETCHED_EXACT_PIXELS = 3.0
# No copy is described at more than this scale of its source, or less than its inverse.
_MAX_SIMILAR_SCALE = 20.0
# Both tolerances are for two images described at like resolutions. A small file is
# enlarged to be described (`Keypoints.coarseness`) and its keypoints are as much less
# precise: a copy shrunk to 0.3x had 67-95% of its matches within 1.5 px of its original's,
# ~100% within 1.5 px times how much more it was enlarged (`_exact`). Growing the tolerance
# with the enlargement of the coarser image alone (not relative to the other's) found more
# copies at 3,000 images of bench/duplicates (recall 82.3 -> 86.3%) but passed frames of one
# sprite sheet, icons of one set and ~250 px burst frames too (precision 73.5 -> 65.9%).
# Pixel agreement (`Verifier.compare`): the query's thumbnail mapped onto the candidate's,
# both at _THUMBNAIL_SIDE, compared in _CELL-pixel squares that are textured in both
# (grey-level spread >= _TEXTURED) and wholly inside the mapped query; a square agrees when
# its pixels correlate >= _AGREE. A copy agrees nearly everywhere (overlaid text, padding
# and blur cost a few squares); two drawings that share one motif, or two screenshots of
# one app with different photos, agree only where they share it (bench/duplicates).
_THUMBNAIL_SIDE = 160
_CELL = 16
_TEXTURED = 6.0
_AGREE = 0.5
# A square is flat below this spread (JPEG noise stays under it): textured in one image and
# flat in the other, it is content only that image has (`Verification.unshared`).
_FLAT = 3.0
# A homography bent more than this away from an affine map (`Verification.distortion`,
# pixels at 640 px), fitted to at least SHAPE_INLIERS inliers, is of another frame of the
# scene, not of a copy. Measured on the 3,000-image folder of bench/duplicates, each pair
# compared both ways round: of the 300 planted copies none bends more than 1.54 px (a
# rotated one; most under 1), of the 40 burst pairs 30 bend 1.7-7 px. (Against one
# similarity the bursts bend more, but so would a copy stretched by 1%.) Fewer inliers fit
# a less certain homography.
MAX_DISTORTION = 1.7
SHAPE_INLIERS = 20


def _mirror_order() -> NDArray[np.intp]:
    """Where each value of a SIFT descriptor goes when the image is mirrored. A descriptor is
    4 x 4 cells (rows across the keypoint's orientation) of 8 orientation bins; a mirror image
    reflects each patch about its orientation axis: cell row i becomes 3 - i, bin k becomes -k.
    The order is its own inverse."""
    row, col, angle = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    order: NDArray[np.intp] = (((3 - row) * 4 + col) * 8 + (8 - angle) % 8).ravel()
    return order


_MIRROR_ORDER = _mirror_order()


@dataclass(frozen=True, slots=True)
class Keypoints:
    points: NDArray[np.float32]  # [K, 2] in pixels of the described image
    descriptors: NDArray[np.uint8]  # [K, 128]; SIFT values fit a byte (4x smaller cache)
    width: int
    height: int
    side: int  # the longer side the image was described at (candidates are described alike)
    # The grey image at _THUMBNAIL_SIDE: what `compare` checks pixel agreement on (~25 kB).
    thumbnail: NDArray[np.uint8] = field(default_factory=lambda: np.zeros((0, 0), np.uint8))
    # Described pixels per pixel of the file, where a small image was enlarged to be
    # described: its keypoints sit that much less precisely (`_exact`).
    coarseness: float = 1.0


@dataclass(frozen=True, slots=True)
class Verification:
    inliers: int
    box: tuple[float, float, float, float] | None  # query outline in the candidate, 0..1
    keypoints: tuple[int, int] = (0, 0)  # of the query and of the candidate (0: not read)
    # Matches one similarity maps exactly, once any stretch along the axes is undone
    # (`Verifier.compare` and `shape_file`).
    exact: int = 0
    # How far from the similarity those matches land: their median distance, as a share of
    # the tolerance. The frame a query was cut from and a burst sibling a hair of perspective
    # away (not `bent`) can land as many matches within the tolerance, the sibling more
    # where it is zoomed in (more keypoints on the query's part of the scene), but the
    # frame's land closer: 1.2-16x closer in each of bench/accuracy's 60 burst queries
    # (frames 0.02-0.21, siblings 0.09-0.55).
    spread: float = 1.0
    # Share of the textured cells of the overlap whose pixels agree once the query is mapped
    # onto the candidate (`Verifier.compare` only; None: nothing textured to compare).
    agreement: float | None = None
    # Squares of the overlap textured in only the query, and in only the candidate, the other
    # image flat there (`Verifier.compare` only). A copy adds content (text, an emoji) or
    # loses it (blur), on one side; two drawings of one set (the same figure with its arms
    # elsewhere) each have some of their own.
    unshared: tuple[int, int] = (0, 0)
    # How far the homography bends away from an affine map over the matched points: the
    # greatest distance, in pixels of whichever image shows the matched part smaller,
    # between where it and the closest affine map put an inlier. A copy (cropped, resized,
    # turned) is affine, so a pixel or so at most; two frames of a burst need perspective
    # (`_distortion`, `bent`).
    distortion: float = 0.0

    @property
    def bent(self) -> bool:
        """The candidate is another view of the scene (a burst frame), not the query's source
        (MAX_DISTORTION)."""
        return self.inliers >= SHAPE_INLIERS and self.distortion > MAX_DISTORTION


class Verifier:
    """SIFT + MAGSAC homography between a query and candidate files of the folder."""

    def __init__(
        self,
        folder: Path,
        *,
        # SIFT is most of a check's cost and grows with the pixels: at 480 px it confirmed as
        # many sources of bench/accuracy's checked queries as at 640 (366 and 362 of 459, no
        # false confirmation of 241) in 0.73x the time; at 400, 358 in 0.51x.
        max_side: int = 480,
        # Exactness needs the finer keypoints: at 480 px a burst sibling out-scored its frame
        # in 5 of bench/accuracy's 60 burst queries, at 640 in 3.
        exact_side: int = 640,
        features: int = 1000,
        limits: DecodeLimits | None = None,
        max_file_bytes: int,
        cache_size: int = 128,  # ~130 kB of keypoints per cached candidate
    ) -> None:
        """Candidates are read as the indexer reads them: regular files of at most
        `max_file_bytes`, never through a link."""
        self._folder = folder
        self._max_file_bytes = max_file_bytes
        self._max_side = max_side
        self._exact_side = exact_side
        self._limits = limits or DecodeLimits()
        self._check_sift = cv2.SIFT.create(nfeatures=features, contrastThreshold=_CHECK_CONTRAST)
        self._exact_sift = cv2.SIFT.create(nfeatures=features)
        self._closer_sift = cv2.SIFT.create(
            nfeatures=_CLOSER_FEATURES, contrastThreshold=_CHECK_CONTRAST
        )
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)
        self._cache: OrderedDict[tuple[str, int, int, int], Keypoints] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def describe(self, image: DecodedImage, *, exact: bool = False) -> tuple[Keypoints, Keypoints]:
        """Keypoints of a decoded query and of its mirror image; `exact`: at the finer side
        that `Verification.exact` needs (candidates are then described at that side too)."""
        side = self._exact_side if exact else self._max_side
        pixels = _shrink(image.pixels, side)
        keypoints = self._keypoints(pixels, side, _coarseness(pixels, image))
        return keypoints, mirrored(keypoints)

    def describe_closer(
        self, data: bytes, seen: DecodedImage
    ) -> tuple[Keypoints, Keypoints] | None:
        """The whole query file in finer detail than `describe` saw `seen` at: decoded again
        at up to _CLOSER_SIDE (never enlarged past the file), up to _CLOSER_FEATURES
        keypoints. Candidates are described as for `describe` (its side). None where the
        file cannot be decoded again."""
        side = min(_CLOSER_SIDE, max(seen.original_width, seen.original_height))
        try:
            image = decode_image(data, side, self._limits)
        except InvalidImageError as exc:
            log.debug("no closer look at the query: %s", exc)
            return None
        keypoints = self._keypoints(
            image.pixels, self._max_side, _coarseness(image.pixels, image), self._closer_sift
        )
        return keypoints, mirrored(keypoints)

    def describe_file(
        self, relative_path: str, *, exact: bool = False
    ) -> tuple[Keypoints, Keypoints] | None:
        """Keypoints of a file of the folder and of its mirror image (None: unreadable), for
        comparing two indexed files."""
        keypoints = self._candidate(relative_path, self._exact_side if exact else self._max_side)
        return None if keypoints is None else (keypoints, mirrored(keypoints))

    def verify(self, query: tuple[Keypoints, Keypoints], relative_path: str) -> Verification:
        """Inliers of the best homography from the query (or its mirror) into the candidate."""
        candidate = self._candidate(relative_path, query[0].side)
        if candidate is None:
            return Verification(0, None)
        direct, mirrored = (
            self._fit(side, candidate, self._good_matches(side, candidate))[0] for side in query
        )
        best = direct if direct.inliers >= mirrored.inliers else mirrored
        return replace(best, keypoints=(len(query[0].points), len(candidate.points)))

    def compare(self, query: tuple[Keypoints, Keypoints], candidate: Keypoints) -> Verification:
        """`shape`, and the pixel agreement of the pair where the fit maps the query (the
        duplicate finder)."""
        found, orientation, homography = self._shape(query, candidate)
        if homography is not None:
            overlap = _overlap(query[orientation], candidate, homography)
        else:  # no fit: only a whole-frame copy (resized, recoloured, mirrored) can agree
            overlap = _best_overlap(
                _overlap(side, candidate, _frame_to_frame(side, candidate)) for side in query
            )
        return replace(
            found,
            agreement=None if overlap is None else overlap.agreement,
            unshared=(0, 0) if overlap is None else overlap.unshared,
        )

    def shape_file(self, query: tuple[Keypoints, Keypoints], relative_path: str) -> Verification:
        """`shape` against a file of the folder, described as the query was (its `exact` side
        gives `Verification.exact` its meaning); nothing found where it cannot be read. No
        pixel agreement: the sibling check needs only exactness and bend."""
        candidate = self._candidate(relative_path, query[0].side)
        if candidate is None:
            return Verification(0, None)
        return self._shape(query, candidate)[0]

    def _shape(
        self, query: tuple[Keypoints, Keypoints], candidate: Keypoints
    ) -> tuple[Verification, int, NDArray[np.float64] | None]:
        """`verify`, the exactness and the bend of the fit at once, for two images both
        described with `exact=True`: each orientation's matches are found once and serve
        all of them. Also which orientation fitted best (0 direct, 1 mirrored) and its
        homography."""
        results = []
        for side in query:
            good = self._good_matches(side, candidate)
            found, homography = self._fit(side, candidate, good)
            results.append((found, homography, _exact(side, candidate, good, homography)))
        best = 0 if results[0][0].inliers >= results[1][0].inliers else 1
        found, homography, _ = results[best]
        exactness = max((exactness for _, _, exactness in results), key=lambda e: e.exact)
        shaped = replace(
            found,
            keypoints=(len(query[0].points), len(candidate.points)),
            exact=exactness.exact,
            spread=exactness.spread,
        )
        return shaped, best, homography

    def _good_matches(self, query: Keypoints, candidate: Keypoints) -> list[cv2.DMatch]:
        """Tentative matches that pass the ratio test."""
        if len(query.points) < _MIN_MATCHES or len(candidate.points) < _MIN_MATCHES:
            return []
        pairs = self._matcher.knnMatch(
            query.descriptors.astype(np.float32), candidate.descriptors.astype(np.float32), k=2
        )
        return [p[0] for p in pairs if len(p) == 2 and p[0].distance < _RATIO * p[1].distance]

    def _candidate(self, relative_path: str, side: int) -> Keypoints | None:
        path = self._folder / relative_path
        try:
            info = path.lstat()
            key = (relative_path, side, info.st_size, info.st_mtime_ns)
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    KEYPOINT_CANDIDATES.labels("hit").inc()
                    return self._cache[key]
            KEYPOINT_CANDIDATES.labels("miss").inc()
            data = read_folder_file(path, self._max_file_bytes)
            image = decode_image(data, side, self._limits)
        except (OSError, InvalidImageError, UnreadableFileError) as exc:
            log.debug("cannot verify against path=%s error=%s", relative_path, exc)
            return None
        keypoints = self._keypoints(image.pixels, side, _coarseness(image.pixels, image))
        with self._lock:
            self._cache[key] = keypoints
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return keypoints

    def _keypoints(
        self,
        rgb: NDArray[np.uint8],
        side: int,
        coarseness: float,
        sift: cv2.SIFT | None = None,
    ) -> Keypoints:
        """Keypoints found as exactness needs them at its side, as the check needs them at
        any other (_CHECK_CONTRAST), or by `sift`; tagged with `side`, the side candidates
        are described at to be compared with them."""
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        if sift is None:
            sift = self._exact_sift if side == self._exact_side else self._check_sift
        found, descriptors = sift.detectAndCompute(gray, None)
        points: NDArray[np.float32] = np.asarray([k.pt for k in found], dtype=np.float32).reshape(
            -1, 2
        )
        if descriptors is None:
            descriptors = np.empty((0, 128), dtype=np.float32)
        packed = np.clip(np.rint(descriptors), 0, 255).astype(np.uint8)
        thumbnail = _shrink(np.asarray(gray, dtype=np.uint8), _THUMBNAIL_SIDE)
        return Keypoints(points, packed, gray.shape[1], gray.shape[0], side, thumbnail, coarseness)

    def _fit(
        self, query: Keypoints, candidate: Keypoints, good: list[cv2.DMatch]
    ) -> tuple[Verification, NDArray[np.float64] | None]:
        """The inliers of the homography MAGSAC fits to the matches, and the homography."""
        if len(good) < _MIN_MATCHES:
            return Verification(0, None), None
        pairs = _pairs(good)
        source, target = query.points[pairs[:, 0]], candidate.points[pairs[:, 1]]
        fitted, mask = cv2.findHomography(source, target, cv2.USAC_MAGSAC, 5.0)
        if fitted is None or mask is None:
            return Verification(0, None), None
        homography = np.asarray(fitted, dtype=np.float64)
        outline = _outline(homography, query, candidate) if _plausible(homography) else None
        if outline is None:
            return Verification(0, None), None
        chosen = mask.ravel().astype(bool)
        distinct = _distinct(pairs[chosen])
        distortion = _distortion(homography, source[chosen])
        return Verification(distinct, outline, distortion=distortion), homography


class Exactness(NamedTuple):
    """How many matches one similarity maps within the exact tolerance, and how closely
    (`Verification.exact` and `spread`)."""

    exact: int
    spread: float


_NOT_EXACT = Exactness(0, 1.0)


def _exact(
    query: Keypoints,
    candidate: Keypoints,
    good: list[cv2.DMatch],
    homography: NDArray[np.float64] | None,
) -> Exactness:
    """The matches one similarity maps to within _EXACT_PIXELS, and how closely: of the
    query as it is, or stretched along its axes as the homography stretches it (a copy
    resized to another aspect ratio, a fixed-size thumbnail, is a similarity once that
    stretch is undone). Where one image was enlarged to be described more than the other (a
    small copy of a larger file), its keypoints sit as much less precisely, and the
    tolerance grows by as much. Two images of like size keep it: two frames of one small
    sprite sheet, or of a small burst, are no easier to tell from copies for being small."""
    if len(good) < _MIN_MATCHES:
        return _NOT_EXACT
    pairs = _pairs(good)
    source, target = query.points[pairs[:, 0]], candidate.points[pairs[:, 1]]
    # The closest match of each candidate point: what the similarity is fitted to.
    order = np.lexsort((np.array([m.distance for m in good]), pairs[:, 1]))
    closest = order[np.r_[True, pairs[order[1:], 1] != pairs[order[:-1], 1]]]
    if len(closest) < _MIN_MATCHES:
        return _NOT_EXACT
    finer, coarser = sorted((query.coarseness, candidate.coarseness))
    coarse = coarser / finer
    exact = _similar(source, target, pairs, closest, _EXACT_PIXELS * coarse)
    stretch = 1.0 if homography is None else _axis_stretch(_closest_affine(homography, source)[0])
    if abs(np.log(stretch)) > _STRETCHED:
        unstretched = source * np.array([stretch, 1.0], np.float32)
        stretched = _similar(unstretched, target, pairs, closest, _STRETCHED_EXACT_PIXELS * coarse)
        exact = max(exact, stretched, key=lambda e: e.exact)
    return exact


def _similar(
    source: NDArray[np.float32],
    target: NDArray[np.float32],
    pairs: NDArray[np.intp],
    fitted_to: NDArray[np.intp],
    pixels: float,
) -> Exactness:
    """The matches (`pairs`: query and candidate keypoint indices) one similarity maps to
    within `pixels`, counted as distinct points on both sides as `_fit` counts inliers, and
    their median distance from it as a share of `pixels`.

    The similarity is fitted to the matches `fitted_to` (one per candidate point), and none
    beyond any copy's scale counts: fitted to every match, a similarity that collapses the query
    onto a few points of a small candidate "maps" every match landing there (a page's
    repeated glyphs onto an icon: 225 exact matches of its 122 keypoints, which out-scored
    the page photo's own source in the sibling check)."""
    transform, mask = cv2.estimateAffinePartial2D(
        source[fitted_to], target[fitted_to], method=cv2.RANSAC, ransacReprojThreshold=pixels
    )
    if transform is None or mask is None:
        return _NOT_EXACT
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    if not 1 / _MAX_SIMILAR_SCALE < scale < _MAX_SIMILAR_SCALE:
        return _NOT_EXACT
    mapped = source @ transform[:, :2].T.astype(np.float32) + transform[:, 2].astype(np.float32)
    missed = np.hypot(*(mapped - target).T)
    within = missed <= pixels
    spread = float(np.median(missed[within])) / pixels if within.any() else 1.0
    return Exactness(_distinct(pairs[within]), spread)


def _pairs(matches: list[cv2.DMatch]) -> NDArray[np.intp]:
    """[M, 2]: each match's query and candidate keypoint index."""
    return np.array([(m.queryIdx, m.trainIdx) for m in matches], dtype=np.intp).reshape(-1, 2)


def _distinct(pairs: NDArray[np.intp]) -> int:
    """Matches counted as distinct points on both sides: repeated texture (or a collapse onto
    a few points) must not vote many times."""
    return min(len(np.unique(pairs[:, 0])), len(np.unique(pairs[:, 1])))


def _closest_affine(
    homography: NDArray[np.float64], points: NDArray[np.float32]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The affine map closest to the homography over `points` (least squares; 3 x 2, rows:
    where the query's x and y axes go, then the shift), and how far from where the
    homography puts each point it puts it (x, y)."""
    source = np.asarray(points, np.float64).reshape(-1, 2)
    mapped = cv2.perspectiveTransform(source.reshape(-1, 1, 2), homography).reshape(-1, 2)
    design = np.column_stack([source, np.ones(len(source))])
    affine, *_ = np.linalg.lstsq(design, mapped, rcond=None)
    return np.asarray(affine, np.float64), np.asarray(design @ affine - mapped, np.float64)


def _axis_stretch(affine: NDArray[np.float64]) -> float:
    """How much more an affine map scales the query's x axis than its y axis: 1 for a
    similarity."""
    along_x, along_y = np.linalg.norm(affine[:2], axis=1)
    return float(along_x / along_y) if along_y > 0 else 1.0


def mirrored(keypoints: Keypoints) -> Keypoints:
    """The keypoints of the mirror image, without detecting them again (half the cost of a
    query's description): each point reflected, each descriptor reordered."""
    points = keypoints.points.copy()
    points[:, 0] = keypoints.width - 1 - points[:, 0]
    return Keypoints(
        points,
        np.ascontiguousarray(keypoints.descriptors[:, _MIRROR_ORDER]),
        keypoints.width,
        keypoints.height,
        keypoints.side,
        np.ascontiguousarray(keypoints.thumbnail[:, ::-1]),
        keypoints.coarseness,
    )


def _coarseness(pixels: NDArray[np.uint8], image: DecodedImage) -> float:
    """How much the decoder enlarged the image to describe it (1: not at all)."""
    height, width = pixels.shape[:2]
    enlarged = min(width / image.original_width, height / image.original_height, 8.0)
    return max(1.0, float(enlarged))


def _plausible(homography: NDArray[np.float64]) -> bool:
    """Rejects degenerate fits: collapsing, mirroring or strongly perspective mappings."""
    h = np.asarray(homography, dtype=np.float64)
    if abs(h[2, 2]) < 1e-9:
        return False
    h = h / h[2, 2]
    det = float(np.linalg.det(h[:2, :2]))
    return 0.002 < det < 500 and abs(h[2, 0]) < 0.002 and abs(h[2, 1]) < 0.002


def _distortion(homography: NDArray[np.float64], points: NDArray[np.float32]) -> float:
    """The greatest distance between where the homography and the affine map closest to it
    (least squares over `points`) put `points`, in pixels of whichever image shows the
    matched part smaller (a crop blown up to full size magnifies every error). Measured on
    the homography's own mapping, not on the matched points, so keypoint noise does not
    count. A copy, however cropped, resized, stretched or turned, is affine: at most 1.54 px
    in bench/duplicates (either way round); a burst frame, seen a moment later under
    another perspective, mostly 1.7-7 px."""
    if len(points) < 3:
        return 0.0
    affine, residuals = _closest_affine(homography, points)
    magnified = max(1.0, float(np.sqrt(abs(np.linalg.det(affine[:2])))))
    return float(np.hypot(residuals[:, 0], residuals[:, 1]).max()) / magnified


def _shrink(pixels: NDArray[np.uint8], max_side: int) -> NDArray[np.uint8]:
    height, width = pixels.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _outline(
    homography: NDArray[np.float64], query: Keypoints, candidate: Keypoints
) -> tuple[float, float, float, float] | None:
    """Bounding box of the query's corners mapped into the candidate, as fractions."""
    corners = np.array(
        [[0, 0], [query.width, 0], [query.width, query.height], [0, query.height]],
        dtype=np.float32,
    ).reshape(-1, 1, 2)
    mapped = cv2.perspectiveTransform(corners, homography).reshape(-1, 2)
    if not np.all(np.isfinite(mapped)):
        return None
    x0, y0 = np.clip(mapped.min(axis=0) / (candidate.width, candidate.height), 0, 1)
    x1, y1 = np.clip(mapped.max(axis=0) / (candidate.width, candidate.height), 0, 1)
    if x1 - x0 < 0.01 or y1 - y0 < 0.01:
        return None
    return float(x0), float(y0), float(x1), float(y1)


def _frame_to_frame(query: Keypoints, candidate: Keypoints) -> NDArray[np.float64] | None:
    """The whole query stretched onto the whole candidate, where their shapes are alike (a
    copy that was only resized, recoloured or blurred), in keypoint pixels."""
    if abs(np.log((query.width * candidate.height) / (query.height * candidate.width))) > 0.1:
        return None
    return np.diag([candidate.width / query.width, candidate.height / query.height, 1.0])


@dataclass(frozen=True, slots=True)
class _Overlap:
    agreement: float | None
    unshared: tuple[int, int]


def _overlap(
    query: Keypoints, candidate: Keypoints, homography: NDArray[np.float64] | None
) -> _Overlap | None:
    """The query's thumbnail mapped onto the candidate's, compared square by square: the
    share of squares textured in both where the pixels agree (None: no such square), and
    the squares textured in only one of them (None: nothing to compare)."""
    if homography is None or not query.thumbnail.size or not candidate.thumbnail.size:
        return None
    height, width = candidate.thumbnail.shape
    rows, cols = height // _CELL, width // _CELL
    if rows == 0 or cols == 0:
        return None

    def to_thumbnail(keypoints: Keypoints) -> NDArray[np.float64]:
        high, wide = keypoints.thumbnail.shape
        return np.diag([wide / keypoints.width, high / keypoints.height, 1.0])

    mapping = to_thumbnail(candidate) @ homography @ np.linalg.inv(to_thumbnail(query))
    size = (width, height)
    warped = np.asarray(
        cv2.warpPerspective(query.thumbnail.astype(np.float32), mapping, size), np.float32
    )
    ones = np.ones(query.thumbnail.shape, np.float32)
    inside = np.asarray(
        cv2.warpPerspective(ones, mapping, size, flags=cv2.INTER_NEAREST), np.float32
    )

    def squares(image: NDArray[np.float32]) -> NDArray[np.float32]:
        cut = image[: rows * _CELL, : cols * _CELL]
        return cut.reshape(rows, _CELL, cols, _CELL).transpose(0, 2, 1, 3).reshape(-1, _CELL**2)

    mapped, own = squares(warped), squares(candidate.thumbnail.astype(np.float32))
    covered = squares(inside).min(axis=1) > 0
    mapped = mapped - mapped.mean(axis=1, keepdims=True)
    own = own - own.mean(axis=1, keepdims=True)
    spread_mapped = np.sqrt((mapped**2).mean(axis=1))
    spread_own = np.sqrt((own**2).mean(axis=1))
    unshared = (
        int((covered & (spread_mapped >= _TEXTURED) & (spread_own < _FLAT)).sum()),
        int((covered & (spread_own >= _TEXTURED) & (spread_mapped < _FLAT)).sum()),
    )
    compared = covered & (spread_mapped >= _TEXTURED) & (spread_own >= _TEXTURED)
    if not compared.any():
        return _Overlap(None, unshared)
    correlation = (mapped * own)[compared].mean(axis=1) / (
        spread_mapped[compared] * spread_own[compared]
    )
    return _Overlap(float((correlation >= _AGREE).mean()), unshared)


def _best_overlap(overlaps: Iterable[_Overlap | None]) -> _Overlap | None:
    """The orientation whose pixels agree best."""
    measured = [o for o in overlaps if o is not None and o.agreement is not None]
    return max(measured, key=lambda o: o.agreement or 0.0) if measured else None
