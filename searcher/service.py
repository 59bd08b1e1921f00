"""Searcher servicer: validate the request, embed the query, ask the store, add the verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from numpy.typing import NDArray

from imgsearch.errors import InvalidRequestError, NotFoundError
from imgsearch.metrics import INFERENCE, SEARCH_STAGE
from imgsearch.model import ImageEncoder
from imgsearch.paths import OutsideFolderError, relative_to_root, resolve_inside
from imgsearch.server import ensure_active, maps_errors
from imgsearch.store import VectorStore
from imgsearch.v1 import searcher_pb2, searcher_pb2_grpc


@dataclass(frozen=True, slots=True)
class SearchPolicy:
    default_limit: int = 10
    max_limit: int = 100
    match_threshold: float = 0.65


class SearcherService(searcher_pb2_grpc.SearcherServicer):
    service_name = searcher_pb2.DESCRIPTOR.services_by_name["Searcher"].full_name

    def __init__(
        self,
        encoder: ImageEncoder,
        store: VectorStore,
        policy: SearchPolicy,
        folder: Path | None = None,
    ) -> None:
        self._encoder = encoder
        self._store = store
        self._policy = policy
        self._folder = folder

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
        vector = self._query_vector(request, context)
        ensure_active(context)
        with SEARCH_STAGE.labels("ann").time():
            hits = self._store.search(
                vector, limit, subfolder=subfolder, min_score=request.min_score or None
            )
        threshold = self._policy.match_threshold
        return searcher_pb2.SearchResponse(
            matches=[
                searcher_pb2.Match(
                    path=h.path,
                    score=h.score,
                    match=h.score >= threshold,
                    region=searcher_pb2.Region(x0=h.box[0], y0=h.box[1], x1=h.box[2], y1=h.box[3]),
                )
                for h in hits
            ],
            match_threshold=threshold,
            model=self._encoder.name,
        )

    def _limit(self, requested: int) -> int:
        if requested > self._policy.max_limit:
            raise InvalidRequestError(
                f"limit {requested} is over the maximum of {self._policy.max_limit}"
            )
        return requested or self._policy.default_limit

    def _query_vector(
        self, request: searcher_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> NDArray[np.float32]:
        which = request.WhichOneof("query")
        if which is None:
            raise InvalidRequestError("set either `image` (encoded bytes) or `path`")
        if which == "path":
            return self._vector_of_path(request.path)
        with SEARCH_STAGE.labels("decode").time():
            image = self._encoder.decode(request.image)
        ensure_active(context)
        with SEARCH_STAGE.labels("embed").time(), INFERENCE.labels("1").time():
            return self._encoder.encode_query(image)

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
        return self._encoder.encode_query(self._encoder.decode(data))
