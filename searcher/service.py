"""Searcher servicer: validate the request, embed the query, ask the store, add the verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from numpy.typing import NDArray

from imgsearch.errors import InvalidRequestError, NotFoundError
from imgsearch.metrics import INFERENCE, SEARCH_STAGE, VERIFICATIONS
from imgsearch.model import DecodedImage, ImageEncoder
from imgsearch.model.encoder import WHOLE_IMAGE_BOX
from imgsearch.model.whitening import Whitening
from imgsearch.paths import OutsideFolderError, relative_to_root, resolve_inside
from imgsearch.server import ensure_active, maps_errors
from imgsearch.store import Hit, VectorStore
from imgsearch.v1 import searcher_pb2, searcher_pb2_grpc
from searcher.verify import Verifier
from searcher.whitening import FolderWhitening


@dataclass(frozen=True, slots=True)
class SearchPolicy:
    default_limit: int = 10
    max_limit: int = 100
    match_threshold: float = 0.55
    # The same verdict on whitened scores (folders of whitening_min_images or more): whitened
    # scores of unrelated images sit near 0.25 instead of 0.7, so the bar is calibrated apart.
    whitened_match_threshold: float = 0.54
    # How many ANN candidates are re-scored with the whitening (the ANN runs on raw vectors;
    # the probe finds the same rank-1 images re-scoring 30 as with an exact whitened search).
    rescore_pool: int = 50
    # The margin of a candidate is its score minus `background_weight` times the mean score
    # of the query's `background_size` nearest images: scores are judged against how much the
    # query resembles everything (bench/accuracy: at the same false-match rate this keeps
    # half again as many true sources as the raw score).
    background_size: int = 10
    background_weight: float = 0.5
    # Geometric verification of the first candidates when the best margin is below the
    # threshold and the score above `verify_floor` (below it nothing looks alike at all).
    verify_top: int = 3
    verify_floor: float = 0.30
    min_inliers: int = 15


@dataclass(frozen=True, slots=True)
class _Query:
    vectors: NDArray[np.float32]
    # What geometric verification looks at: the content inside flat borders when the query
    # has them (a photo small on a screenshot is too few pixels otherwise); None for path
    # queries (no pixels at hand).
    image: DecodedImage | None


@dataclass(frozen=True, slots=True)
class _Ranked:
    hit: Hit
    inliers: int = 0
    outline: tuple[float, ...] | None = None


class SearcherService(searcher_pb2_grpc.SearcherServicer):
    service_name = searcher_pb2.DESCRIPTOR.services_by_name["Searcher"].full_name

    def __init__(
        self,
        encoder: ImageEncoder,
        store: VectorStore,
        policy: SearchPolicy,
        folder: Path | None = None,
        verifier: Verifier | None = None,
        whitening: FolderWhitening | None = None,
    ) -> None:
        self._encoder = encoder
        self._store = store
        self._policy = policy
        self._folder = folder
        self._verifier = verifier
        self._whitening = whitening

    def add_to_server(self, server: grpc.Server) -> None:
        searcher_pb2_grpc.add_SearcherServicer_to_server(self, server)

    @maps_errors
    def Search(  # noqa: N802 - name fixed by the proto
        self, request: searcher_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> searcher_pb2.SearchResponse:
        limit = self._limit(request.limit)
        if math.isnan(request.min_score) or not -1.0 <= request.min_score <= 1.0:
            raise InvalidRequestError(f"min_score must be in [-1, 1], got {request.min_score}")
        subfolder = request.subfolder.strip("/") or None
        if subfolder is not None and (".." in subfolder.split("/") or "\\" in subfolder):
            raise InvalidRequestError(f"subfolder must be a relative folder: {request.subfolder!r}")
        query = self._query(request, context)
        ensure_active(context)
        policy = self._policy
        whitening = self._whitening.current() if self._whitening is not None else None
        pool = max(limit, policy.background_size, policy.rescore_pool if whitening else 0)
        with SEARCH_STAGE.labels("ann").time():
            # The background is measured without min_score, which would hide it.
            hits = self._store.search(query.vectors, pool, subfolder=subfolder)
        best_raw = hits[0].score if hits else 0.0
        if whitening is not None and hits:
            with SEARCH_STAGE.labels("rescore").time():
                hits = self._whitened(hits, query.vectors, whitening)
        background = self._background(hits)
        if request.min_score:
            hits = [h for h in hits if h.score >= request.min_score]
        threshold = policy.whitened_match_threshold if whitening else policy.match_threshold
        ranked = self._verified(hits[:limit], query, background, threshold, best_raw, context)
        return searcher_pb2.SearchResponse(
            matches=[self._match(r, background, threshold) for r in ranked],
            match_threshold=threshold,
            model=self._encoder.name,
            whitened=whitening is not None,
        )

    def _whitened(
        self, hits: list[Hit], queries: NDArray[np.float32], white: Whitening
    ) -> list[Hit]:
        """The candidates re-scored by whitened cosine (best pair of query view and stored
        row, as the store scores raw vectors), best first; files deleted since the search drop
        out. Whole-image vectors come by point id; only a store with regions needs the slower
        lookup of every row of each candidate."""
        paths = [h.path for h in hits]
        if self._store.grouped:
            sets = {p: (d.vectors, d.boxes) for p, d in self._store.descriptors_of(paths).items()}
        else:
            vectors = self._store.vectors_of(paths)
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

    def _background(self, hits: list[Hit]) -> float:
        """What `margin` subtracts: the weighted mean score of the query's nearest images."""
        nearest = [h.score for h in hits[: self._policy.background_size]]
        return self._policy.background_weight * sum(nearest) / len(nearest) if nearest else 0.0

    def _match(self, ranked: _Ranked, background: float, threshold: float) -> searcher_pb2.Match:
        box = ranked.outline or ranked.hit.box
        margin = ranked.hit.score - background
        return searcher_pb2.Match(
            path=ranked.hit.path,
            score=ranked.hit.score,
            margin=margin,
            match=margin >= threshold or ranked.inliers >= self._policy.min_inliers,
            region=searcher_pb2.Region(x0=box[0], y0=box[1], x1=box[2], y1=box[3]),
            inliers=ranked.inliers,
        )

    def _verified(
        self,
        hits: list[Hit],
        query: _Query,
        background: float,
        threshold: float,
        best_raw: float,
        context: grpc.ServicerContext,
    ) -> list[_Ranked]:
        """Verify the first candidates when the descriptor alone is not conclusive; verified
        candidates move to the front (most inliers first), the rest keep their order.
        `best_raw` is the best raw cosine: the floor is on that scale, whitened or not."""
        policy = self._policy
        if (
            self._verifier is None
            or query.image is None
            or not hits
            or best_raw < policy.verify_floor
            or hits[0].score - background >= threshold
        ):
            return [_Ranked(h) for h in hits]
        ensure_active(context)
        with SEARCH_STAGE.labels("verify").time():
            keypoints = self._verifier.describe(query.image)
            checked = []
            for hit in hits[: policy.verify_top]:
                result = self._verifier.verify(keypoints, hit.path)
                checked.append(_Ranked(hit, result.inliers, result.box))
        VERIFICATIONS.labels(
            "confirmed" if any(r.inliers >= policy.min_inliers for r in checked) else "rejected"
        ).inc()
        confirmed = sorted(
            (r for r in checked if r.inliers >= policy.min_inliers), key=lambda r: -r.inliers
        )
        rest = [r for r in checked if r.inliers < policy.min_inliers]
        return confirmed + rest + [_Ranked(h) for h in hits[policy.verify_top :]]

    def _limit(self, requested: int) -> int:
        if requested > self._policy.max_limit:
            raise InvalidRequestError(
                f"limit {requested} is over the maximum of {self._policy.max_limit}"
            )
        return requested or self._policy.default_limit

    def _query(self, request: searcher_pb2.SearchRequest, context: grpc.ServicerContext) -> _Query:
        which = request.WhichOneof("query")
        if which is None:
            raise InvalidRequestError("set either `image` (encoded bytes) or `path`")
        if which == "path":
            return _Query(self._vector_of_path(request.path), None)
        with SEARCH_STAGE.labels("decode").time():
            image = self._encoder.decode(request.image)
            framed = self._encoder.decode_framed(request.image, image)
        ensure_active(context)
        with SEARCH_STAGE.labels("embed").time(), INFERENCE.labels("1").time():
            return _Query(self._encoder.encode_query(image, framed), framed or image)

    def _vector_of_path(self, path: str) -> NDArray[np.float32]:
        if self._folder is None:
            raise InvalidRequestError("path queries need the searcher to know the folder")
        file = resolve_inside(self._folder, path)
        relative = relative_to_root(self._folder.resolve(), file)
        if relative is None:
            raise OutsideFolderError(f"path is outside the watched folder: {path!r}")
        stored = self._store.vector_of(relative)
        if stored is not None:
            return stored
        try:
            data = file.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"no such file in the watched folder: {path!r}") from exc
        except OSError as exc:
            raise InvalidRequestError(f"cannot read {path!r}: {exc.strerror}") from exc
        image = self._encoder.decode(data)
        return self._encoder.encode_query(image, self._encoder.decode_framed(data, image))
