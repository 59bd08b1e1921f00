"""Searcher servicer: validate the request, describe the query, rank, reply."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import grpc.aio
import numpy as np
from numpy.typing import NDArray

from imgsearch.errors import (
    InvalidImageError,
    InvalidRequestError,
    NotFoundError,
    OutsideFolderError,
    UnreadableFileError,
)
from imgsearch.files import read_folder_file
from imgsearch.metrics import INFERENCE, SEARCH_STAGE
from imgsearch.model import ImageEncoder, QueryDescription
from imgsearch.model.encoder import Stage
from imgsearch.paths import relative_to_root, resolve_inside
from imgsearch.rpc.server import CallContext, ensure_active, maps_errors
from imgsearch.searcher.duplicates import NEIGHBOURS, CopyGroup, Progress, find_copies
from imgsearch.searcher.verdict import Ranker, Ranking
from imgsearch.settings import Verdict
from imgsearch.store import VectorStore
from imgsearch.v1 import searcher_pb2, searcher_pb2_grpc

log = logging.getLogger(__name__)


class SearcherService(searcher_pb2_grpc.SearcherServicer):
    service_name = searcher_pb2.DESCRIPTOR.services_by_name["Searcher"].full_name

    def __init__(
        self,
        encoder: ImageEncoder,
        store: VectorStore,
        ranker: Ranker,
        settings: Verdict,
        folder: Path | None = None,
        *,
        max_file_bytes: int,
        background_threads: int,
        background_nice: int,
    ) -> None:
        """`max_file_bytes`: the largest file a path query reads (the folder's own limit);
        the duplicate finder checks pairs on `background_threads` threads, `background_nice`
        steps below searches."""
        self._encoder = encoder
        self._max_file_bytes = max_file_bytes
        self._background_threads = background_threads
        self._background_nice = background_nice
        self._store = store
        self._ranker = ranker
        self._settings = settings
        self._folder = folder

    def add_to_server(self, server: grpc.aio.Server) -> None:
        searcher_pb2_grpc.add_SearcherServicer_to_server(self, server)

    @maps_errors
    def Search(  # noqa: N802 - name fixed by the proto
        self, request: searcher_pb2.SearchRequest, context: CallContext
    ) -> searcher_pb2.SearchResponse:
        limit = self._limit(request.limit)
        if math.isnan(request.min_score) or not -1.0 <= request.min_score <= 1.0:
            raise InvalidRequestError(f"min_score must be in [-1, 1], got {request.min_score}")
        subfolder = request.subfolder.strip("/") or None
        if subfolder is not None and (".." in subfolder.split("/") or "\\" in subfolder):
            raise InvalidRequestError(f"subfolder must be a relative folder: {request.subfolder!r}")
        query = self._query(request, context)
        ensure_active(context)
        ranking = self._ranker.rank(
            query,
            limit,
            subfolder=subfolder,
            min_score=request.min_score,
            still_wanted=lambda: ensure_active(context),
        )
        return response_of(ranking, self._encoder.name)

    @maps_errors
    def FindDuplicates(  # noqa: N802 - name fixed by the proto
        self, request: searcher_pb2.FindDuplicatesRequest, context: CallContext
    ) -> Iterator[searcher_pb2.FindDuplicatesEvent]:
        neighbours = request.neighbours or NEIGHBOURS
        if neighbours > self._settings.max_limit:
            raise InvalidRequestError(
                f"neighbours {neighbours} is over the maximum of {self._settings.max_limit}"
            )
        for event in find_copies(
            self._store,
            self._ranker,
            neighbours=neighbours,
            min_inliers=self._settings.min_inliers,
            workers=self._background_threads,
            nice=self._background_nice,
            still_wanted=lambda: ensure_active(context),
            page_views=None if self._folder is None else self._page_views,
        ):
            if isinstance(event, Progress):
                yield searcher_pb2.FindDuplicatesEvent(
                    progress=searcher_pb2.DuplicatesProgress(done=event.done, total=event.total)
                )
            else:
                yield searcher_pb2.FindDuplicatesEvent(group=group_message(event))

    def _page_views(self, path: str) -> NDArray[np.float32] | None:
        """The photo-like blocks of an indexed file, where it is page-like (duplicates)."""
        assert self._folder is not None
        try:
            data = read_folder_file(self._folder / path, self._max_file_bytes)
            return self._encoder.page_views(data)
        except (OSError, InvalidImageError, UnreadableFileError) as exc:
            log.debug("no page views of path=%s error=%s", path, exc)
            return None

    def _limit(self, requested: int) -> int:
        if requested > self._settings.max_limit:
            raise InvalidRequestError(
                f"limit {requested} is over the maximum of {self._settings.max_limit}"
            )
        return requested or self._settings.default_limit

    def _query(self, request: searcher_pb2.SearchRequest, context: CallContext) -> QueryDescription:
        which = request.WhichOneof("query")
        if which is None:
            raise InvalidRequestError("set either `image` (encoded bytes) or `path`")
        if which == "path":
            return self._path_query(request.path)
        return self._encoder.describe_query(request.image, _stages(context))

    def _path_query(self, path: str) -> QueryDescription:
        """A file of the folder as the query: its stored vector, or the file described now."""
        if self._folder is None:
            raise InvalidRequestError("path queries need the searcher to know the folder")
        file = resolve_inside(self._folder, path)
        relative = relative_to_root(self._folder.resolve(), file)
        if relative is None:
            raise OutsideFolderError(f"path is outside the watched folder: {path!r}")
        stored = self._store.vector_of(relative)
        if stored is not None:
            return QueryDescription(stored, None)
        try:
            data = read_folder_file(file, self._max_file_bytes)
        except FileNotFoundError as exc:
            raise NotFoundError(f"no such file in the watched folder: {path!r}") from exc
        except OSError as exc:
            raise InvalidRequestError(f"cannot read {path!r}: {exc.strerror}") from exc
        described = self._encoder.describe_query(data)
        return QueryDescription(described.vectors, None, described.more)


def _stages(context: CallContext) -> Stage:
    """Times each step of describing a query, after checking the client still waits."""

    def stage(name: str) -> AbstractContextManager[object]:
        ensure_active(context)
        timers = ExitStack()
        timers.enter_context(SEARCH_STAGE.labels(name).time())
        if name == "embed":
            timers.enter_context(INFERENCE.labels("1").time())
        return timers

    return stage


def region_of(box: tuple[float, ...]) -> searcher_pb2.Region:
    return searcher_pb2.Region(x0=box[0], y0=box[1], x1=box[2], y1=box[3])


def group_message(group: CopyGroup) -> searcher_pb2.DuplicateGroup:
    return searcher_pb2.DuplicateGroup(
        paths=group.paths,
        pairs=[
            searcher_pb2.DuplicatePair(
                first=p.first,
                second=p.second,
                score=p.score,
                margin=p.margin,
                region=region_of(p.box),
                inliers=p.inliers,
            )
            for p in group.pairs
        ],
    )


def response_of(ranking: Ranking, model: str) -> searcher_pb2.SearchResponse:
    """The gRPC reply for a ranking."""
    return searcher_pb2.SearchResponse(
        matches=[
            searcher_pb2.Match(
                path=m.path,
                score=m.score,
                margin=m.margin,
                match=m.match,
                confidence=m.confidence,
                region=region_of(m.box),
                inliers=m.inliers,
            )
            for m in ranking.matches
        ],
        match_threshold=ranking.threshold,
        model=model,
        whitened=ranking.whitened,
    )
