"""Retrieval and verdict metrics over ranked candidates; pure functions, no I/O.

- recall@k: share of queries that have a source whose source is among the first k candidates.
- micro-AP (as in the DISC21 copy-detection challenge): every (query, candidate, confidence) of
  every query, no-source ones included, pooled and ranked by the method's confidence (its
  score, where it has no other); AP over that pool, where a positive is a correct source pair
  and the number of positives is the number of queries that have a source (a source never
  returned counts as missed). micro_ap_score: the same ranked by the score alone.
- verdict: the method's own "this is the source" on its first candidate. Precision = right
  verdicts / all "source" verdicts (a wrong image, or any image for a no-source query, is
  wrong); recall = right verdicts / queries that have a source.
- calibration: the lowest threshold on the first candidate's score that lets through at most
  1 in 1,000 no-source queries, and the share of sourced queries found at it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bench.accuracy.methods import Candidate

FALSE_MATCH_BUDGET = 1 / 1000


@dataclass(frozen=True, slots=True)
class Outcome:
    """One query's answer from one method."""

    query: str
    family: str
    origin: str
    source: str | None
    candidates: Sequence[Candidate]
    seconds: float

    @property
    def rank(self) -> int | None:
        """1-based rank of the source among the candidates, if it was returned."""
        for position, candidate in enumerate(self.candidates, start=1):
            if candidate.id == self.source:
                return position
        return None

    @property
    def top_score(self) -> float:
        return self.candidates[0].score if self.candidates else -math.inf

    @property
    def top_correct(self) -> bool:
        return bool(self.candidates) and self.candidates[0].id == self.source


@dataclass(frozen=True, slots=True)
class Scores:
    queries: int
    with_source: int
    without_source: int
    recall_at_1: float | None
    recall_at_10: float | None
    micro_ap: float | None  # ranked by the method's confidence
    micro_ap_score: float | None  # ranked by its score alone
    verdict_precision: float | None  # None when the method never said "source"
    verdict_recall: float | None
    false_match_rate: float | None  # no-source queries given a "source" verdict
    wrong_source_rate: float | None  # sourced queries given a "source" verdict on another image


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def score(outcomes: Sequence[Outcome]) -> Scores:
    sourced = [o for o in outcomes if o.source is not None]
    unsourced = [o for o in outcomes if o.source is None]
    ranks = [o.rank for o in sourced]
    claimed = [o for o in outcomes if o.candidates and o.candidates[0].is_match]
    right = sum(1 for o in claimed if o.top_correct)
    return Scores(
        queries=len(outcomes),
        with_source=len(sourced),
        without_source=len(unsourced),
        recall_at_1=_share(sum(1 for r in ranks if r == 1), len(sourced)),
        recall_at_10=_share(sum(1 for r in ranks if r is not None and r <= 10), len(sourced)),
        micro_ap=micro_average_precision(outcomes)[0] if sourced else None,
        micro_ap_score=micro_average_precision(outcomes, by_score=True)[0] if sourced else None,
        verdict_precision=_share(right, len(claimed)),
        verdict_recall=_share(right, len(sourced)),
        false_match_rate=_share(sum(1 for o in claimed if o.source is None), len(unsourced)),
        wrong_source_rate=_share(
            sum(1 for o in claimed if o.source is not None and not o.top_correct), len(sourced)
        ),
    )


def micro_average_precision(
    outcomes: Sequence[Outcome], *, by_score: bool = False
) -> tuple[float, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Micro-AP over pooled predictions, with the PR curve: (ap, recall, precision, thresholds).
    Ranked by each candidate's confidence, or by its score alone with `by_score`."""
    scores: list[float] = []
    positive: list[bool] = []
    for o in outcomes:
        for c in o.candidates:
            scores.append(c.score if by_score else c.ranked_by)
            positive.append(o.source is not None and c.id == o.source)
    total = sum(1 for o in outcomes if o.source is not None)
    if not scores or total == 0:
        empty = np.zeros(0)
        return 0.0, empty, empty, empty
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(positive)[order]
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, len(hits) + 1)
    recall = true_positives / total
    ap = float(precision[hits].sum() / total)
    return ap, recall, precision, np.asarray(scores)[order]


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: float  # a first candidate scoring at least this is called "the source"
    false_matches_allowed: int
    no_source_queries: int
    recall: float | None  # sourced queries whose first candidate is right and >= threshold
    recall_by_family: dict[str, float | None]
    wrong_source_rate: float | None  # sourced queries whose wrong first candidate passes


def calibrate(outcomes: Sequence[Outcome], budget: float = FALSE_MATCH_BUDGET) -> Calibration:
    """The threshold giving at most `budget` false matches per no-source query."""
    negatives = sorted((o.top_score for o in outcomes if o.source is None), reverse=True)
    allowed = math.floor(len(negatives) * budget)
    if len(negatives) > allowed:
        # Just above the (allowed+1)-th best no-source score: that one and all below fail.
        threshold = float(np.nextafter(negatives[allowed], math.inf))
    else:
        threshold = -math.inf
    sourced = [o for o in outcomes if o.source is not None]

    def found(group: Sequence[Outcome]) -> float | None:
        return _share(
            sum(1 for o in group if o.top_correct and o.top_score >= threshold), len(group)
        )

    families = sorted({o.family for o in sourced})
    return Calibration(
        threshold=threshold,
        false_matches_allowed=allowed,
        no_source_queries=len(negatives),
        recall=found(sourced),
        recall_by_family={f: found([o for o in sourced if o.family == f]) for f in families},
        wrong_source_rate=_share(
            sum(1 for o in sourced if not o.top_correct and o.top_score >= threshold), len(sourced)
        ),
    )
