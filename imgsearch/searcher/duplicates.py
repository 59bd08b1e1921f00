"""Groups of indexed files that are copies of each other (resized, recompressed, cropped,
re-encoded), found from the index: each image is ranked against the others with its stored
vector and the verdict of an ordinary search. Never an all-pairs matrix: memory holds the
pairs that were checked (a few numbers each), the paths visited and the keypoints of the
last few hundred images, so a folder of 100k images stays in bounded memory.

Where the searcher has the folder's files, every candidate pair, sure or unsure, is checked
geometrically: a copy maps onto its original by one similarity (scale, turn, shift; a
stretch to another aspect ratio undone first), to a pixel or two, for nearly all the matches
a homography accepts; two frames of a burst, or two photos of one scene, need perspective,
so far fewer of their matches are exact (bench/duplicates). Where one image has too few
keypoints to say anything (tiny, flat, blurred), the descriptor's verdict stands; where both
have many and hardly any agree, the pair is not a copy however alike they look (sprites of
one game, frames of one animation). A copy maps onto its original by an affine map
everywhere, not only at its centre: a homography that needs perspective is of another frame.
Last, the pixels must agree where the pair overlaps: drawings that share one motif, or
screenshots of one app showing different photos, match well on what they share only; and two
drawings of one set each have content of their own where the other is blank."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from imgsearch.metrics import DUPLICATE_IMAGES, DUPLICATE_PAIRS, DUPLICATE_RUNS
from imgsearch.model import QueryDescription
from imgsearch.priority import lower_priority
from imgsearch.searcher.verdict import RankedMatch, Ranker
from imgsearch.searcher.verify import Keypoints, Verification, Verifier
from imgsearch.store import VectorStore

NEIGHBOURS = 8  # the nearest images each image is compared with
_PROGRESS_EVERY = 256  # images between progress reports
_KEYPOINTS_KEPT = 256  # images whose keypoints are kept (~270 kB each, mirror included)
# Candidates this far below the verdict's threshold are checked geometrically too (a crop to
# a fifth of the area scores well under it; the keypoints decide). At 3,000 images of
# bench/duplicates, 0.45 finds 85.0% of the planted copies where 0.35 found 80.3%.
UNSURE_BELOW = 0.45
# A candidate the descriptor was unsure of is a copy when the homography confirms it as a
# search's verification would (`min_inliers`) and at least this share of those inliers also
# fit one similarity: copies measure 0.82-1.0, most burst pairs 0.4-0.7 (bench/duplicates).
# (Similarity alone is not enough: among the 1,000 stars of two different star fields,
# RANSAC finds 15-22 that line up by chance.)
COPY_EXACT_SHARE = 0.8
# One the descriptor calls a copy stays one unless fewer than this share fit: blurred copies
# measure ~0.7 (their keypoints sit less precisely).
NOT_COPY_EXACT_SHARE = 0.65
MIN_EXACT = 12
# Fewer homography inliers than this cannot overrule the descriptor's "copy" by exactness.
CONCLUSIVE = 30
# Below CONCLUSIVE, the descriptor's "copy" needs the inliers there are to fit one
# similarity as a copy's do (COPY_EXACT_SHARE, or BLURRED_EXACT_SHARE where one image has
# under POORER_SHARE of the other's keypoints: a blurred or shrunk copy); with fewer than
# SOME_INLIERS it stands only where one image has too few keypoints to say anything (under
# FEW_KEYPOINTS: tiny, flat; or the poorer one). Game sprites and sprite sheets of one set
# score 0.83-0.93 to each other, have as many keypoints as each other, and those do not
# agree (bench/duplicates at 3,000 images: of the pairs the raw cosine calls copies, 154 of
# 156 planted copies and 124 of 389 look-alikes pass, against 154 and 335 when the
# descriptor stood on any pair short of CONCLUSIVE inliers).
SOME_INLIERS = 8
FEW_KEYPOINTS = 50
POORER_SHARE = 0.5
BLURRED_EXACT_SHARE = 0.6
# Whatever the keypoints say, a copy's pixels agree with its original's once mapped onto it
# (Verification.agreement): at 3,000 images of bench/duplicates, 244 of 250 planted copies
# the rules above accept agree in >= 80% of their textured squares, and 135 of 297 pairs
# that were not planted (clip art sharing a motif, screenshots of one page template).
# Counting squares textured in only one image as disagreeing kept 226 copies and 67 others
# at 0.8, 236 and 128 at 0.7 (replayed): fewer copies for fewer look-alikes, not tried live.
MIN_AGREEMENT = 0.8
# Where no homography fits (too few keypoints: icons, sprites, small flat images), the pixels
# are compared frame to frame, and only a whole-frame copy (resized, recoloured, re-encoded,
# mirrored) is possible: nothing in it moved, so it agrees nearly everywhere. In bench/
# duplicates' folders (replayed, both ways round), the whole-frame planted copies compared
# so agree on all their squares (14 at 3,000 images, 40 at 10,000; crops, pads and pages
# compared so agree on under 0.7 and fail MIN_AGREEMENT anyway); frames of one animation
# and icons of one set with different symbols on 0.81-0.95: of a sample of 300 unplanted
# pairs at 10,000 images this rejects 25, 16 of them frames of sprite animations.
WHOLE_FRAME_AGREEMENT = 0.97
# Nor is a pair whose images each have content of their own where the other is flat
# (Verification.unshared): the same figure with its arms elsewhere, one jigsaw piece beside
# another. A copy has it on one side at most (an overlay added, a blur took it away). At
# 3,000 images of bench/duplicates, of the pairs the rules above accept, 45 of 135 that were
# not planted (44 clip art) have at least this many squares of their own on each side, and 2
# of 280 planted copies (blurred: blur spreads an edge into a flat neighbour) (replayed).
UNSHARED_EACH = 2


# The photo-like blocks of an indexed page-like file, described (None: not page-like, or
# unreadable now): ImageEncoder.page_views on the file.
PageViews = Callable[[str], NDArray[np.float32] | None]


@dataclass(frozen=True, slots=True)
class CopyPair:
    """Two files the verdict calls copies: `second` was found searching with `first`."""

    first: str
    second: str
    score: float
    margin: float
    box: tuple[float, ...]  # the region of `second` that matched (x0, y0, x1, y1), 0-1
    inliers: int  # keypoints that agreed, where the pair was verified


@dataclass(frozen=True, slots=True)
class CopyGroup:
    paths: tuple[str, ...]  # sorted
    pairs: tuple[CopyPair, ...]  # best score first


@dataclass(frozen=True, slots=True)
class Progress:
    done: int  # images compared so far
    total: int  # images in the index when the run started


def find_copies(
    store: VectorStore,
    ranker: Ranker,
    *,
    neighbours: int = NEIGHBOURS,
    min_inliers: int = 15,
    workers: int,
    nice: int,
    still_wanted: Callable[[], None] = lambda: None,
    page_views: PageViews | None = None,
) -> Iterator[Progress | CopyGroup]:
    """Progress every _PROGRESS_EVERY images, then the groups, largest first.

    An image's candidate pairs are described and checked on `workers` threads running `nice`
    steps below searches (SIFT and the pixel checks release the GIL): the keypoint work is
    most of the run's time, and searches keep the cores first.

    Images are visited depth first along the candidate pairs (an image's candidates next, the
    folder's order only when none is waiting), so the keypoints a pair needs were mostly
    described for the pair before it: each image is described about once, not once per pair
    it is in. Each pair is checked once; seen again from its other side, the stored check is
    judged with that side's descriptor verdict. `still_wanted` is called before each image
    and raises when the caller has gone.

    An image whose own vector finds no copy is looked at again with `page_views` (where the
    searcher has the folder's files): a page with a photo on it is described, as a search
    with it would be, by its photo-like blocks too, which find the photo where the page's
    whole-image vector (mostly text) does not."""
    with (
        DUPLICATE_RUNS.track_inprogress(),
        ThreadPoolExecutor(workers, "duplicates", lower_priority, (nice,)) as pool,
    ):
        yield from _find_copies(
            store, ranker, neighbours, min_inliers, pool, still_wanted, page_views
        )


def _find_copies(
    store: VectorStore,
    ranker: Ranker,
    neighbours: int,
    min_inliers: int,
    pool: Executor,
    still_wanted: Callable[[], None],
    page_views: PageViews | None,
) -> Iterator[Progress | CopyGroup]:
    total = store.count()
    checker = _PairChecker(ranker.verifier, min_inliers, pool)
    pairs: dict[tuple[str, str], CopyPair] = {}
    visited: set[str] = set()
    waiting: list[str] = []  # candidates of visited images, visited next (last in first)
    in_order = (state.path for state in store.indexed_files())
    done = 0
    while (path := _next_unvisited(waiting, in_order, visited)) is not None:
        visited.add(path)
        vector = store.vectors_of([path]).get(path)
        if vector is None:  # deleted since the run began
            continue
        still_wanted()
        query = QueryDescription(np.atleast_2d(vector), None)
        ranking = ranker.rank(query, neighbours, exclude=path)
        look = "vector"
        if page_views is not None and not any(m.match for m in ranking.matches):
            views = pool.submit(page_views, path).result()  # below searches, as the checks
            if views is None:
                look = "decoded"
            else:
                look = "page"
                query = QueryDescription(np.concatenate([query.vectors, views]), None)
                ranking = ranker.rank(query, neighbours, exclude=path)
        DUPLICATE_IMAGES.labels(look).inc()
        candidates = [
            m
            for m in ranking.matches
            if m.match or (checker.checks and m.margin >= ranking.threshold - UNSURE_BELOW)
        ]
        waiting += reversed([m.path for m in candidates if m.path not in visited])
        for match, inliers, box in checker.copies(path, candidates):
            key = (min(path, match.path), max(path, match.path))
            known = pairs.get(key)
            if known is None or match.score > known.score:
                pairs[key] = CopyPair(path, match.path, match.score, match.margin, box, inliers)
        done += 1
        if done % _PROGRESS_EVERY == 0:
            yield Progress(done, max(total, done))
    yield Progress(done, max(total, done))
    yield from groups_of(pairs.values())


def _next_unvisited(waiting: list[str], in_order: Iterator[str], visited: set[str]) -> str | None:
    while waiting:
        path = waiting.pop()
        if path not in visited:
            return path
    return next((path for path in in_order if path not in visited), None)


class _PairChecker:
    """The keypoint checks of candidate pairs, each pair compared once: its result is kept
    (a few numbers per pair) for the other side's verdict, and the keypoints of the last
    few hundred images are kept for the pairs that follow."""

    def __init__(self, verifier: Verifier | None, min_inliers: int, pool: Executor) -> None:
        self._verifier = verifier
        self._min_inliers = min_inliers
        self._pool = pool
        self._compared: dict[tuple[str, str], Verification] = {}
        self._keypoints: OrderedDict[str, tuple[Keypoints, Keypoints] | None] = OrderedDict()

    @property
    def checks(self) -> bool:
        """Whether pairs are checked geometrically (the searcher has the folder's files)."""
        return self._verifier is not None

    def copies(
        self, path: str, candidates: list[RankedMatch]
    ) -> Iterator[tuple[RankedMatch, int, tuple[float, ...]]]:
        """The candidates that are copies of `path`, with the inliers and region that say so."""
        self._compare_all(path, [m.path for m in candidates])
        for match in candidates:
            found = self._compare(path, match.path)
            if found is None:  # no check possible: the descriptor's verdict stands
                copy, inliers, box = match.match, match.inliers, match.box
            else:
                copy = _is_copy(match.match, found, self._min_inliers)
                inliers, box = found.inliers, found.box or match.box
            DUPLICATE_PAIRS.labels("copy" if copy else "not_copy").inc()
            if copy:
                yield match, inliers, box

    def _compare_all(self, path: str, others: list[str]) -> None:
        """The pairs of `path` not compared yet, described and compared on the pool."""
        verifier = self._verifier
        fresh = [other for other in others if _pair(path, other) not in self._compared]
        if verifier is None or not fresh:
            return
        needed = [p for p in dict.fromkeys([path, *fresh]) if p not in self._keypoints]
        # Both checks need the finer side's keypoints (Verification.exact).
        described = self._pool.map(lambda p: verifier.describe_file(p, exact=True), needed)
        for needed_path, keypoints in zip(needed, described, strict=True):
            self._keypoints[needed_path] = keypoints
        query = self._described(path)
        pairs = [(other, self._described(other)) for other in fresh]
        checkable = [(other, found) for other, found in pairs if found is not None]
        if query is None or not checkable:
            return
        results = self._pool.map(lambda pair: verifier.compare(query, pair[1][0]), checkable)
        for (other, _), found in zip(checkable, results, strict=True):
            self._compared[_pair(path, other)] = found
        while len(self._keypoints) > _KEYPOINTS_KEPT:
            self._keypoints.popitem(last=False)

    def _compare(self, path: str, other: str) -> Verification | None:
        """The stored check of a pair (None: no verifier, or one of the two could not be
        described)."""
        return self._compared.get(_pair(path, other))

    def _described(self, path: str) -> tuple[Keypoints, Keypoints] | None:
        self._keypoints.move_to_end(path)
        return self._keypoints[path]


def _pair(path: str, other: str) -> tuple[str, str]:
    return (path, other) if path <= other else (other, path)


def _is_copy(descriptor_says: bool, found: Verification, min_inliers: int) -> bool:
    """The verdict on a candidate pair from the descriptor and the keypoint and pixel checks."""
    if found.agreement is not None and found.agreement < MIN_AGREEMENT:
        return False
    no_fit = found.box is None  # compared frame to frame
    if no_fit and found.agreement is not None and found.agreement < WHOLE_FRAME_AGREEMENT:
        return False
    if min(found.unshared) >= UNSHARED_EACH:
        return False
    if found.bent:  # another frame of the scene
        return False
    inliers, exact = found.inliers, found.exact
    if not descriptor_says:
        # Unsure: the homography must confirm it and its inliers fit one similarity.
        return inliers >= min_inliers and exact >= COPY_EXACT_SHARE * inliers
    if inliers >= CONCLUSIVE:
        return exact >= MIN_EXACT and exact >= NOT_COPY_EXACT_SHARE * inliers
    fewer, more = sorted(found.keypoints)
    poorer = fewer < POORER_SHARE * more
    if inliers >= SOME_INLIERS:
        share = BLURRED_EXACT_SHARE if poorer else COPY_EXACT_SHARE
        return exact >= share * inliers
    return poorer or fewer < FEW_KEYPOINTS


def groups_of(pairs: Iterable[CopyPair]) -> Iterator[CopyGroup]:
    """Connected files (union-find over the pairs), largest group first, then by path."""
    listed = list(pairs)
    parent: dict[str, str] = {}

    def root(path: str) -> str:
        parent.setdefault(path, path)
        while parent[path] != path:
            parent[path] = parent[parent[path]]
            path = parent[path]
        return path

    for pair in listed:
        parent[root(pair.first)] = root(pair.second)
    members: dict[str, list[str]] = {}
    for path in parent:
        members.setdefault(root(path), []).append(path)
    by_root: dict[str, list[CopyPair]] = {}
    for pair in listed:
        by_root.setdefault(root(pair.first), []).append(pair)
    groups = [
        CopyGroup(tuple(sorted(paths)), tuple(sorted(by_root[key], key=lambda p: -p.score)))
        for key, paths in members.items()
    ]
    yield from sorted(groups, key=lambda g: (-len(g.paths), g.paths))
