"""Groups of indexed files that are copies of each other (resized, recompressed, cropped,
re-encoded), found from the index: each image is ranked against the others with its stored
vector and the verdict of an ordinary search. Never an all-pairs matrix: memory holds only
the pairs the verdict calls copies, so a folder of 100k images stays in bounded memory.

Where the searcher has the folder's files, every candidate pair, sure or unsure, is checked
geometrically: a copy maps onto its original by one similarity (scale, turn, shift), to a
pixel or two, for nearly all the matches a homography accepts; two frames of a burst, or
two photos of one scene, need perspective, so far fewer of their matches are exact
(bench/duplicates). Where one image has too few keypoints to say anything (tiny, flat,
blurred), the descriptor's verdict stands; where both have many and hardly any agree, the
pair is not a copy however alike they look (sprites of one game, frames of one animation)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from imgsearch.model import QueryDescription
from imgsearch.searcher.verdict import RankedMatch, Ranker
from imgsearch.searcher.verify import Verification, Verifier
from imgsearch.store import VectorStore

NEIGHBOURS = 8  # the nearest images each image is compared with
_PAGE = 256  # stored vectors fetched at once
# Candidates this far below the verdict's threshold are checked geometrically too (a crop to
# a fifth of the area scores well under it; the keypoints decide).
UNSURE_BELOW = 0.35
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
    still_wanted: Callable[[], None] = lambda: None,
) -> Iterator[Progress | CopyGroup]:
    """Progress after each page of images, then the groups, largest first.

    `still_wanted` is called before each image and raises when the caller has gone."""
    total = store.count()
    verifier = ranker.verifier
    pairs: dict[tuple[str, str], CopyPair] = {}
    done = 0
    files = (state.path for state in store.indexed_files())
    while page := list(itertools.islice(files, _PAGE)):
        for path, vector in store.vectors_of(page).items():
            still_wanted()
            query = QueryDescription(np.atleast_2d(vector), None)
            ranking = ranker.rank(query, neighbours, exclude=path)
            candidates = [
                m
                for m in ranking.matches
                if m.match
                or (verifier is not None and m.margin >= ranking.threshold - UNSURE_BELOW)
            ]
            for match, inliers, box in _checked(verifier, path, candidates, min_inliers):
                key = (min(path, match.path), max(path, match.path))
                known = pairs.get(key)
                if known is None or match.score > known.score:
                    pairs[key] = CopyPair(path, match.path, match.score, match.margin, box, inliers)
        done += len(page)
        yield Progress(done, max(total, done))
    yield from groups_of(pairs.values())


def _checked(
    verifier: Verifier | None, path: str, candidates: list[RankedMatch], min_inliers: int
) -> Iterator[tuple[RankedMatch, int, tuple[float, ...]]]:
    """The candidates that are copies of `path`, with the inliers and region that say so."""
    if verifier is None or not candidates:
        yield from ((m, m.inliers, m.box) for m in candidates if m.match)
        return
    keypoints = verifier.describe_file(path, exact=True)  # both checks, at the finer side
    for match in candidates:
        if keypoints is None:
            if match.match:
                yield match, 0, match.box
            continue
        found = verifier.verify(keypoints, match.path)
        exact = verifier.exact_inliers(keypoints, match.path)
        if _is_copy(match.match, found, exact, min_inliers):
            yield match, found.inliers, found.box or match.box


def _is_copy(descriptor_says: bool, found: Verification, exact: int, min_inliers: int) -> bool:
    """The verdict on a candidate pair from the descriptor and the two keypoint checks."""
    inliers = found.inliers
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
