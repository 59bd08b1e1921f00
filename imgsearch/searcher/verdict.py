"""The ranking and the verdict of one query: search -> re-score -> margin -> verify.

Plain functions and one small class over the store, the whitening and the verifier, with no
gRPC in sight: the servicer calls `Ranker.rank`, benchmarks time the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from imgsearch.descriptors import WHOLE_IMAGE_BOX
from imgsearch.metrics import SEARCH_STAGE, VERIFICATIONS
from imgsearch.model import QueryDescription
from imgsearch.model.preprocess import DecodedImage
from imgsearch.model.whitening import Whitening
from imgsearch.searcher.verify import Keypoints, Verification, Verifier
from imgsearch.searcher.whitening import FolderWhitening
from imgsearch.settings import Verdict
from imgsearch.store import Hit, VectorStore

# How many ANN candidates are re-scored with the whitening (the ANN runs on raw vectors; the
# probe finds the same rank-1 images re-scoring 30 as with an exact whitened search).
RESCORE_POOL = 50
# The margin of a candidate is its score minus the model's background weight
# (Tuning.background_weight) times the mean score of the query's BACKGROUND_SIZE nearest
# images: scores judged against how much the query resembles everything.
BACKGROUND_SIZE = 10
# Below this raw cosine nothing looks alike at all: no geometric verification (no sourced
# query of bench/accuracy's 8,700 scores under it; 269 no-source queries score 0.15-0.20).
VERIFY_FLOOR = 0.20
# Under this one the check looks only at the first `verify_top` candidates in the view the
# model saw: no closer look, no deep check. A fifth of a grass or food photo can score 0.20-
# 0.30 against its source and still keep 100-340 inliers; of bench/accuracy's 475 queries
# scoring 0.20-0.30 (13 with a source), the first look confirmed 9 sources (3 of them not
# first by score) and no no-source candidate passed 6 inliers, at ~0.23 s a query on a slow
# machine (cold candidates); both further looks as well found one more source at 2.7x that.
LOOK_FURTHER_FLOOR = 0.30
# When several candidates pass the verdict (near-identical photos: burst shots, or true
# duplicates), the first SIBLING_CHECK of them are checked for exactness (see
# Verification.exact and spread). Of those with at least MIN_EXACT exact matches and
# CONTENDER_SHARE of the most exact one's, the one whose matches land closest is the
# source: a burst sibling may land as many (more where it is zoomed in), but less closely
# (bench/accuracy's 60 burst queries: 1.2-16x the frame's spread; counting exact matches
# alone called the sibling the source in 4). Others stay "the source" too only where they
# land as many (SAME_IMAGE_SHARE) as closely (SAME_SPREAD, give or take SPREAD_NOISE): true
# duplicates. With fewer than MIN_EXACT exact matches nothing is decided. A candidate the
# query maps onto only under another perspective (Verification.bent) counts no exact
# matches: it is another frame.
SIBLING_CHECK = 4
MIN_EXACT = 12
CONTENDER_SHARE = 0.5
SAME_IMAGE_SHARE = 0.98
SAME_SPREAD = 1.15
SPREAD_NOISE = 0.01
# A candidate whose margin is within SIBLING_GAP of one that passes the verdict is a
# contender too: the frame a query was cut from may score a little below its sibling (the
# burst frames of bench/accuracy: a few hundredths apart), so the better-scoring sibling would
# otherwise be the only "source".
SIBLING_GAP = 0.10


@dataclass(frozen=True, slots=True)
class RankedMatch:
    path: str
    score: float
    margin: float
    match: bool  # the verdict: this is the source
    box: tuple[float, ...]  # region of the image that matched (x0, y0, x1, y1)
    inliers: int

    @property
    def confidence(self) -> float:
        """The answer as one number for ranking many queries' answers together: the verdict
        first (matches in [0.5, 1], the rest in [0, 0.5]), then the margin. The margin alone
        mixes the two: a small crop the keypoint check confirmed scores below a merely
        similar photo (bench/accuracy: micro-AP 92.3% over the margin, 99.0% over this)."""
        within = (1.0 + min(max(self.margin, -1.0), 1.0)) / 4
        return 0.5 + within if self.match else within


@dataclass(frozen=True, slots=True)
class Ranking:
    matches: list[RankedMatch]
    threshold: float  # the margin that meant "the source" for this query
    whitened: bool


@dataclass(frozen=True, slots=True)
class _Checked:
    hit: Hit
    inliers: int = 0
    outline: tuple[float, ...] | None = None


class Ranker:
    """Ranks the indexed images for a described query and gives each its verdict."""

    def __init__(
        self,
        store: VectorStore,
        settings: Verdict,
        verifier: Verifier | None = None,
        whitening: FolderWhitening | None = None,
        *,
        threads: int,
    ) -> None:
        """`threads`: how many candidates the deep check reads and describes at once (the
        cores, INFERENCE_THREADS: SIFT is most of its cost and runs outside the GIL), shared
        by all searches."""
        self._store = store
        self._settings = settings
        self._verifier = verifier
        self._whitening = whitening
        self._ahead = ThreadPoolExecutor(threads, "keypoints")  # threads start when needed

    def close(self) -> None:
        """Stop the deep check's threads (after the searches that use them)."""
        self._ahead.shutdown(cancel_futures=True)

    @property
    def verifier(self) -> Verifier | None:
        """The geometric check, where the searcher has the folder's files at hand."""
        return self._verifier

    def rank(
        self,
        query: QueryDescription,
        limit: int,
        *,
        subfolder: str | None = None,
        min_score: float = 0.0,
        exclude: str | None = None,
        still_wanted: Callable[[], None] = lambda: None,
    ) -> Ranking:
        """The `limit` best images, best first. `still_wanted` is called before each costly
        step and raises when the caller has gone (deadline, cancel). `exclude`: a path left
        out of the candidates and of the background (an indexed image compared with the
        others, which would otherwise find itself)."""
        whitening = self._whitening.current() if self._whitening is not None else None
        pool = max(limit, BACKGROUND_SIZE, RESCORE_POOL if whitening else 0)

        def nearest(vectors: NDArray[np.float32]) -> list[Hit]:
            with SEARCH_STAGE.labels("ann").time():
                # The background is measured without min_score, which would hide it.
                return self._store.search(
                    vectors, pool + (exclude is not None), subfolder=subfolder
                )

        hits = nearest(query.vectors)
        if query.more is not None and (not hits or hits[0].score < self._settings.match_threshold):
            # Not conclusive: the query's further views may hold the photo (a screenshot).
            still_wanted()
            query = query.with_more()
            hits = nearest(query.vectors)
        if exclude is not None:
            hits = [h for h in hits if h.path != exclude][:pool]
        best_raw = hits[0].score if hits else 0.0
        if whitening is not None and hits:
            with SEARCH_STAGE.labels("rescore").time():
                hits = rescore_whitened(self._store, hits, query.vectors, whitening)
        background = background_of(hits, self._settings.background_weight)
        if min_score:
            hits = [h for h in hits if h.score >= min_score]
        threshold = (
            self._settings.whitened_match_threshold if whitening else self._settings.match_threshold
        )
        # Judged over every candidate, then cut: the first answer does not depend on `limit`
        # (a confirmed source 4th by score goes first for limit=1 too).
        checked = self._verified(hits, query, background, threshold, best_raw, still_wanted)
        min_inliers = self._settings.min_inliers
        matches = [
            RankedMatch(
                path=c.hit.path,
                score=c.hit.score,
                margin=c.hit.score - background,
                match=c.hit.score - background >= threshold or c.inliers >= min_inliers,
                box=c.outline or c.hit.box,
                inliers=c.inliers,
            )
            for c in checked
        ]
        return Ranking(
            matches=self._one_source(matches, query, still_wanted)[:limit],
            threshold=threshold,
            whitened=whitening is not None,
        )

    def _one_source(
        self,
        matches: list[RankedMatch],
        query: QueryDescription,
        still_wanted: Callable[[], None],
    ) -> list[RankedMatch]:
        """Several candidates called the source, or scoring close to one that is: the one
        the query maps onto most closely is the source, first in the list (and any that
        match as many as closely: true duplicates); a burst sibling shares most of the
        scene but is a different photo."""
        passing = [m.margin for m in matches if m.match]
        if not passing:
            return matches
        bar = max(passing) - SIBLING_GAP
        sources = [i for i, m in enumerate(matches) if m.match or m.margin >= bar]
        sources = sources[:SIBLING_CHECK]
        if self._verifier is None or query.image is None or len(sources) < 2:
            return matches
        still_wanted()
        with SEARCH_STAGE.labels("siblings").time():
            keypoints = self._verifier.describe(query.image, exact=True)
            found = {i: self._verifier.shape_file(keypoints, matches[i].path) for i in sources}
        exact = {i: 0 if f.bent else f.exact for i, f in found.items()}
        most = max(exact.values())
        if most < MIN_EXACT:
            return matches
        VERIFICATIONS.labels("sibling").inc()
        contenders = [i for i in sources if exact[i] >= max(MIN_EXACT, CONTENDER_SHARE * most)]
        first = min(contenders, key=lambda i: (found[i].spread, -exact[i], i))

        def same_image(i: int) -> bool:
            return exact[i] >= SAME_IMAGE_SHARE * exact[first] and (
                found[i].spread <= SAME_SPREAD * found[first].spread + SPREAD_NOISE
            )

        judged = [
            replace(m, match=i == first or same_image(i)) if i in exact else m
            for i, m in enumerate(matches)
        ]
        return [judged[first], *(m for i, m in enumerate(judged) if i != first)]

    def _verified(
        self,
        hits: list[Hit],
        query: QueryDescription,
        background: float,
        threshold: float,
        best_raw: float,
        still_wanted: Callable[[], None],
    ) -> list[_Checked]:
        """Verify the first candidates, best score first, when the descriptor alone is not
        conclusive, up to the first one the keypoints confirm, which moves to the front; the
        rest keep their order. Checking on past it cost ~10 ms per search (two more
        candidates' matching, and in a large folder their keypoints, not cached) and only
        reordered look-alikes, which the sibling check sorts out where they score close.
        Where neither look confirms one of the first `verify_top`, the first look goes on
        down to the `verify_deep`th: a small crop of a texture (a fifth of a star field)
        resembles look-alikes as much as its source, which ranked 4th-10th in 11 of the 17
        crop20 queries bench/accuracy missed at c757f50; the check confirms 8 of them there.
        Only searches with no answer yet pay for it (most have no source in the folder).
        `best_raw` is the best raw cosine: the floors are on that scale, whitened or not;
        under LOOK_FURTHER_FLOOR only the first look is taken."""
        settings = self._settings
        verify_top, min_inliers = settings.verify_top, settings.min_inliers
        if (
            self._verifier is None
            or query.image is None
            or not hits
            or best_raw < VERIFY_FLOOR
            or hits[0].score - background >= threshold
        ):
            return [_Checked(h) for h in hits]
        still_wanted()
        with SEARCH_STAGE.labels("verify").time():
            first_look = self._verifier.describe(query.image)
            checked = self._checked(first_look, hits[:verify_top])
        further = best_raw >= LOOK_FURTHER_FLOOR
        if further and query.file is not None and all(c.inliers < min_inliers for c in checked):
            still_wanted()
            with SEARCH_STAGE.labels("closer").time():
                checked = self._looked_closer(query.file, query.image, checked)
        deeper = hits[len(checked) : settings.verify_deep]
        if further and deeper and all(c.inliers < min_inliers for c in checked):
            still_wanted()
            VERIFICATIONS.labels("deep").inc()
            with SEARCH_STAGE.labels("deep").time():
                checked += self._checked(first_look, deeper, ahead=still_wanted)
        confirmed = [c for c in checked if c.inliers >= min_inliers]
        VERIFICATIONS.labels("confirmed" if confirmed else "rejected").inc()
        rest = [c for c in checked if c.inliers < min_inliers]
        return confirmed + rest + [_Checked(h) for h in hits[len(checked) :]]

    def _looked_closer(
        self, file: bytes, seen: DecodedImage, checked: list[_Checked]
    ) -> list[_Checked]:
        """`checked` (none confirmed in the view checked) checked again against the whole
        query in finer detail (a photo small on a page, a crop with more detail than the
        model's 288 px); each candidate keeps the better of its two results."""
        assert self._verifier is not None
        closer = self._verifier.describe_closer(file, seen)
        if closer is None:
            return checked
        VERIFICATIONS.labels("closer").inc()
        again = self._checked(closer, [c.hit for c in checked])  # stops at one confirmed
        better = [max(pair, key=lambda c: c.inliers) for pair in zip(checked, again, strict=False)]
        return better + checked[len(again) :]

    def _checked(
        self,
        keypoints: tuple[Keypoints, Keypoints],
        hits: list[Hit],
        *,
        ahead: Callable[[], None] | None = None,
    ) -> list[_Checked]:
        """The hits checked in order, up to the first the keypoints confirm. With `ahead`
        (the search's `still_wanted`, asked before each result), the next ones are read and
        described on the ranker's threads meanwhile (where most will be needed: the deep
        check, which mostly confirms nothing); those not begun when one is confirmed, or
        when the caller has gone, are dropped."""
        verifier = self._verifier
        assert verifier is not None
        futures = (
            []
            if ahead is None
            else [self._ahead.submit(verifier.verify, keypoints, h.path) for h in hits]
        )

        def results() -> Iterator[Verification]:
            if ahead is None:
                yield from (verifier.verify(keypoints, h.path) for h in hits)
                return
            for future in futures:
                ahead()
                yield future.result()

        checked = []
        try:
            for hit, result in zip(hits, results(), strict=False):
                checked.append(_Checked(hit, result.inliers, result.box))
                if result.inliers >= self._settings.min_inliers:
                    break
        finally:
            for future in futures:
                future.cancel()
        return checked


def background_of(hits: list[Hit], weight: float) -> float:
    """What the margin subtracts: the weighted mean score of the query's nearest images."""
    nearest = [h.score for h in hits[:BACKGROUND_SIZE]]
    return weight * sum(nearest) / len(nearest) if nearest else 0.0


def rescore_whitened(
    store: VectorStore, hits: list[Hit], queries: NDArray[np.float32], white: Whitening
) -> list[Hit]:
    """The candidates re-scored by whitened cosine (best pair of query view and stored row, as
    the store scores raw vectors), best first; files deleted since the search drop out.
    Whole-image vectors come by point id; only a store with regions needs the slower lookup
    of every row of each candidate."""
    paths = [h.path for h in hits]
    if store.grouped:
        sets = {p: (d.vectors, d.boxes) for p, d in store.descriptors_of(paths).items()}
    else:
        vectors = store.vectors_of(paths)
        sets = {p: (v[None], WHOLE_IMAGE_BOX) for p, v in vectors.items()}
    found = [p for p in paths if p in sets]
    if not found:
        return []
    rows = np.concatenate([sets[p][0] for p in found])
    boxes = np.concatenate([sets[p][1] for p in found])
    owner = np.repeat(np.arange(len(found)), [len(sets[p][0]) for p in found])
    row_scores = (white.apply(rows) @ white.apply(np.atleast_2d(queries)).T).max(axis=1)
    rescored = []
    for index, path in enumerate(found):
        mine = np.flatnonzero(owner == index)
        best = int(mine[np.argmax(row_scores[mine])])
        box = tuple(float(v) for v in boxes[best])
        rescored.append(Hit(path, float(row_scores[best]), box))
    return sorted(rescored, key=lambda h: -h.score)
