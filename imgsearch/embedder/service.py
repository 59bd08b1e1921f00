"""Embedder servicer: status of the index and one-off embeddings."""

from __future__ import annotations

import grpc.aio

from imgsearch.embedder.indexer import Indexer
from imgsearch.embedder.watcher import FolderWatcher
from imgsearch.model import ImageEncoder
from imgsearch.rpc.server import CallContext, maps_errors
from imgsearch.store.graph import LiveGraph
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc


class EmbedderService(embedder_pb2_grpc.EmbedderServicer):
    service_name = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name

    def __init__(
        self,
        encoder: ImageEncoder,
        indexer: Indexer,
        watcher: FolderWatcher,
        graph: LiveGraph | None = None,
    ) -> None:
        self._encoder = encoder
        self._indexer = indexer
        self._watcher = watcher
        self._graph = graph

    def add_to_server(self, server: grpc.aio.Server) -> None:
        embedder_pb2_grpc.add_EmbedderServicer_to_server(self, server)

    @maps_errors
    def GetStatus(  # noqa: N802 - name fixed by the proto
        self, request: embedder_pb2.GetStatusRequest, context: CallContext
    ) -> embedder_pb2.GetStatusResponse:
        status = self._indexer.status()
        graph = self._graph.status() if self._graph is not None else None
        return embedder_pb2.GetStatusResponse(
            indexed=status.indexed,
            pending=status.pending,
            failed=status.failed,
            folder=str(self._indexer.root),
            model=self._encoder.name,
            dimensions=self._encoder.dimensions,
            state=status.state,
            failures=[embedder_pb2.FileFailure(path=p, reason=r) for p, r in status.failures],
            index_rate=status.rate,
            eta_seconds=status.eta_seconds,
            held_deletions=status.held_deletions,
            observer=self._watcher.kind,
            model_reason=self._encoder.info.reason,
            model_key=self._encoder.key,
            graph_state=graph.state if graph else "off",
            graph_vectors=graph.graph_vectors if graph else 0,
            scanned_vectors=graph.scanned_vectors if graph else 0,
            last_graph_build=graph.last_build_at if graph else 0.0,
            last_graph_build_seconds=graph.last_build_seconds if graph else 0.0,
            graph_error=graph.last_error if graph else "",
        )

    @maps_errors
    def Rescan(  # noqa: N802 - name fixed by the proto
        self, request: embedder_pb2.RescanRequest, context: CallContext
    ) -> embedder_pb2.RescanResponse:
        self._indexer.request_rescan(
            allow_mass_delete=request.allow_mass_delete, retry_failures=True
        )
        return embedder_pb2.RescanResponse()

    @maps_errors
    def Embed(  # noqa: N802 - name fixed by the proto
        self, request: embedder_pb2.EmbedRequest, context: CallContext
    ) -> embedder_pb2.EmbedResponse:
        vector = self._encoder.describe_file(request.image, regions=False).vectors[0]
        return embedder_pb2.EmbedResponse(vector=vector.tolist(), model=self._encoder.name)
