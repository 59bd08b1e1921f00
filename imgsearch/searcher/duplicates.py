"""Groups of indexed files that are copies of each other (resized, recompressed, cropped,
re-encoded), found from the index: each image is ranked against the others with its stored
vector and the verdict of an ordinary search. Never an all-pairs matrix: memory holds only
the pairs the verdict calls copies, so a folder of 100k images stays in bounded memory."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from imgsearch.model import QueryDescription
from imgsearch.searcher.verdict import Ranker
from imgsearch.store import VectorStore

NEIGHBOURS = 8  # the nearest images each image is compared with
_PAGE = 256  # stored vectors fetched at once


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
    still_wanted: Callable[[], None] = lambda: None,
) -> Iterator[Progress | CopyGroup]:
    """Progress after each page of images, then the groups, largest first.

    `still_wanted` is called before each image and raises when the caller has gone."""
    total = store.count()
    pairs: dict[tuple[str, str], CopyPair] = {}
    done = 0
    files = (state.path for state in store.indexed_files())
    while page := list(itertools.islice(files, _PAGE)):
        for path, vector in store.vectors_of(page).items():
            still_wanted()
            query = QueryDescription(np.atleast_2d(vector), None)
            for match in ranker.rank(query, neighbours, exclude=path).matches:
                if not match.match:
                    continue
                key = (min(path, match.path), max(path, match.path))
                known = pairs.get(key)
                if known is None or match.score > known.score:
                    pairs[key] = CopyPair(
                        path, match.path, match.score, match.margin, match.box, match.inliers
                    )
        done += len(page)
        yield Progress(done, max(total, done))
    yield from groups_of(pairs.values())


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
