"""A small typed client over the generated stubs, used by the CLI and the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import grpc

from imgsearch.errors import ServerUnreachableError
from imgsearch.rpc.security import channel_credentials
from imgsearch.v1 import embedder_pb2, embedder_pb2_grpc, searcher_pb2, searcher_pb2_grpc


class Client:
    """Talks to a server that runs the Searcher, the Embedder, or both."""

    def __init__(
        self,
        target: str,
        timeout: float = 30.0,
        *,
        token: str | None = None,
        tls: bool = False,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if tls or tls_ca or tls_cert:
            credentials = channel_credentials(tls_ca, tls_cert, tls_key)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.target = target
        self._searcher = searcher_pb2_grpc.SearcherStub(self._channel)
        self._embedder = embedder_pb2_grpc.EmbedderStub(self._channel)
        self.timeout = timeout

    def wait_ready(self, timeout: float) -> None:
        """Connect, or raise ServerUnreachableError when nothing answers within `timeout`."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as exc:
            raise ServerUnreachableError(
                f"no server answers at {self.target}: is `imgsearch serve` running there? "
                "(--server HOST:PORT or IMGSEARCH_SERVER)"
            ) from exc

    def search(
        self,
        image: bytes | Path,
        limit: int = 0,
        *,
        min_score: float = 0.0,
        subfolder: str = "",
    ) -> searcher_pb2.SearchResponse:
        data = image.read_bytes() if isinstance(image, Path) else image
        request = searcher_pb2.SearchRequest(
            image=data, limit=limit, min_score=min_score, subfolder=subfolder
        )
        return self._searcher.Search(request, timeout=self.timeout, metadata=self._metadata)

    def search_path(self, path: str, limit: int = 0) -> searcher_pb2.SearchResponse:
        request = searcher_pb2.SearchRequest(path=path, limit=limit)
        return self._searcher.Search(request, timeout=self.timeout, metadata=self._metadata)

    def duplicates(self, neighbours: int = 0) -> Iterator[searcher_pb2.FindDuplicatesEvent]:
        """Progress, then the groups of copies. No deadline: a large folder takes minutes, and
        the server stops working when this call is dropped."""
        request = searcher_pb2.FindDuplicatesRequest(neighbours=neighbours)
        return iter(self._searcher.FindDuplicates(request, metadata=self._metadata))

    def status(self) -> embedder_pb2.GetStatusResponse:
        return self._embedder.GetStatus(
            embedder_pb2.GetStatusRequest(), timeout=self.timeout, metadata=self._metadata
        )

    def rescan(self, *, allow_mass_delete: bool = False) -> None:
        request = embedder_pb2.RescanRequest(allow_mass_delete=allow_mass_delete)
        self._embedder.Rescan(request, timeout=self.timeout, metadata=self._metadata)

    def embed(self, image: bytes) -> embedder_pb2.EmbedResponse:
        return self._embedder.Embed(
            embedder_pb2.EmbedRequest(image=image), timeout=self.timeout, metadata=self._metadata
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
