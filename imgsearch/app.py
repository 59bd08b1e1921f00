"""Wires settings into running services: model, store, indexer, watcher, gRPC and metrics."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from pydantic import SecretStr

from imgsearch import __version__
from imgsearch.embedder.failures import failure_log_for
from imgsearch.embedder.folder import prepare_folder
from imgsearch.embedder.indexer import Indexer, IndexStatus
from imgsearch.embedder.service import EmbedderService
from imgsearch.embedder.watcher import FolderWatcher
from imgsearch.errors import ModelError, StoreUnavailableError
from imgsearch.http.api import HttpBackend
from imgsearch.http.server import HTTP_FLAG, HttpServer
from imgsearch.listen import ensure_available
from imgsearch.metrics import BUILD_INFO, METRICS_FLAG, serve_metrics
from imgsearch.model import ImageEncoder
from imgsearch.rpc.security import AccessPolicy, TlsFiles
from imgsearch.rpc.server import (
    LISTEN_FLAG,
    Admission,
    RunningServer,
    ServiceRegistration,
    raise_descriptor_limit,
    start_server,
)
from imgsearch.searcher.service import SearcherService, response_of
from imgsearch.searcher.verdict import Ranker
from imgsearch.searcher.verify import Verifier
from imgsearch.searcher.whitening import FolderWhitening
from imgsearch.settings import Settings, StoreEngine, Verdict
from imgsearch.store import StoreLocation, VectorStore, collection_for, open_store
from imgsearch.store.edge import EdgeStore
from imgsearch.store.graph import LiveGraph
from imgsearch.v1 import searcher_pb2

log = logging.getLogger(__name__)


def encoder_for(settings: Settings) -> ImageEncoder:
    """The query encoder the settings name (raises ModelError for a model that cannot serve
    them), with the choice logged."""
    encoder = ImageEncoder(settings.encoder)
    if settings.index.regions and not encoder.has_regions:
        raise ModelError(
            f"regions=true needs a feature-map backbone (efficientnet-lite0), and model "
            f"{encoder.name!r} gives one vector per image: unset IMGSEARCH_REGIONS or choose "
            "--model efficientnet-lite0"
        )
    log.info(
        "model serving name=%s key=%s dimensions=%d why=%s",
        encoder.name,
        encoder.key,
        encoder.dimensions,
        encoder.info.reason,
    )
    return encoder


def open_settings_store(settings: Settings, encoder: ImageEncoder) -> VectorStore:
    """The store the settings name, for this encoder's vectors: in an embedded index, the
    collection of this model (another model's vectors are kept beside it, never mixed)."""
    store = settings.store
    location = (
        StoreLocation(url=store.qdrant_url, api_key=store.qdrant_api_key)
        if store.qdrant_url
        else StoreLocation(path=store.engine_store_path, engine=store.engine)
    )
    collection = collection_for(store, encoder.key)
    if location.path is not None and store.engine is StoreEngine.EDGE:
        _note_other_collections(location.path, collection)
    opened = open_store(
        location,
        collection=collection,
        dimensions=encoder.dimensions,
        model=encoder.key,
        grouped=settings.index.regions,
    )
    try:
        opened.check_model()
    except BaseException:
        opened.close()
        raise
    return opened


def _note_other_collections(path: Path, mine: str) -> None:
    """Say which other indexes (of other models, or of a version that kept one index for
    every model) stay on disk unused, and how to free their space."""
    others = sorted(p.name for p in path.glob("*") if p.is_dir() and p.name != mine)
    if others:
        log.info(
            "other indexes kept, unused, beside %s: %s (a model switch leaves the old one: "
            "delete it from %s to free its space; serving that model again uses it)",
            mine,
            ", ".join(others),
            path,
        )


def _access_policy(settings: Settings) -> AccessPolicy:
    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    return AccessPolicy(
        token=secret(settings.security.auth_token),
        admin_token=secret(settings.security.admin_token),
        write_rpcs=settings.security.write_rpcs,
    )


def _tls_files(settings: Settings) -> TlsFiles | None:
    if settings.security.tls_cert is None or settings.security.tls_key is None:
        return None
    return TlsFiles(
        settings.security.tls_cert, settings.security.tls_key, settings.security.tls_client_ca
    )


def indexing_encoder(settings: Settings) -> ImageEncoder:
    """The encoder the indexing workers share (one inference thread each by default), never
    the query encoder: an indexing batch holding that one's cores (CoreSlots) would make
    queries wait for it."""
    threads = max(1, settings.encoder.inference_threads // settings.index.embed_workers)
    return ImageEncoder(settings.encoder, threads=threads)


def indexer_for(settings: Settings, store: VectorStore, folder: Path) -> Indexer:
    """The indexer of `folder`, with the failure list and the disk check the settings say."""
    return Indexer(
        folder,
        indexing_encoder(settings),
        store,
        settings.index,
        failure_log_for(settings, store.collection),
        disk=None if settings.store.qdrant_url else settings.store.engine_store_path,
    )


def ranker_for(
    settings: Settings, encoder: ImageEncoder, store: VectorStore, folder: Path | None
) -> tuple[Ranker, FolderWhitening | None]:
    """The verdict with the verifier (when the folder is known) and the folder's whitening."""
    verdict = settings.verdict.for_model(encoder.tuning)
    verifier = (
        Verifier(folder, limits=encoder.limits, max_file_bytes=settings.index.max_file_bytes)
        if folder is not None and verdict.verify_top > 0
        else None
    )
    whitening = (
        FolderWhitening(
            store,
            min_images=max(2, verdict.whitening_min_images),
            dimensions=verdict.whitening_dims,
            sample=verdict.whitening_sample,
        )
        if verdict.whitening_min_images > 0
        else None
    )
    _warn_unpaired_threshold(verdict)
    ranker = Ranker(store, verdict, verifier, whitening, threads=settings.encoder.inference_threads)
    return ranker, whitening


def _warn_unpaired_threshold(verdict: Verdict) -> None:
    """match_threshold judges raw scores only: say so when it is set and the whitened one is
    not, so that a folder growing past whitening_min_images does not drop it silently."""
    chosen = verdict.chosen
    if (
        "match_threshold" in chosen
        and "whitened_match_threshold" not in chosen
        and verdict.whitening_min_images > 0
    ):
        log.warning(
            "match_threshold=%.3f applies below %d images; larger folders are searched with "
            "whitened scores and judged by whitened_match_threshold=%.3f (set that one too)",
            verdict.match_threshold,
            verdict.whitening_min_images,
            verdict.whitened_match_threshold,
        )


def live_graph_for(settings: Settings, store: VectorStore) -> LiveGraph | None:
    """The background graph builder of an embedded qdrant-edge index (a Qdrant server builds
    its own graph; local mode has none), unless disabled."""
    if not isinstance(store, EdgeStore) or not settings.store.graph_min_scanned:
        return None
    return LiveGraph(
        store,
        min_scanned=settings.store.graph_min_scanned,
        check_seconds=settings.store.graph_check_seconds,
        min_free_disk_bytes=settings.index.min_free_disk_bytes,
    )


class Application:
    """One process: the embedder, the searcher, or both on one port and one store."""

    def __init__(
        self,
        settings: Settings,
        *,
        with_embedder: bool = True,
        with_searcher: bool = True,
        store: VectorStore | None = None,
    ) -> None:
        """`store` replaces the one the settings describe (tests inject faults through it)."""
        if not (with_embedder or with_searcher):
            raise ValueError("nothing to run")
        self.settings = settings
        self.encoder = encoder_for(settings)
        self.store = store or open_settings_store(settings, self.encoder)
        try:
            self._build(with_embedder=with_embedder, with_searcher=with_searcher)
        except BaseException:
            self.store.close()
            raise

    def _build(self, *, with_embedder: bool, with_searcher: bool) -> None:
        settings = self.settings
        self.folder: Path | None = None
        self.indexer: Indexer | None = None
        self._watcher: FolderWatcher | None = None
        self.whitening: FolderWhitening | None = None
        services: list[ServiceRegistration] = []
        self.graph = live_graph_for(settings, self.store)
        if with_embedder:
            self.folder = prepare_folder(settings, self.store)
            self.indexer = indexer_for(settings, self.store, self.folder)
            self._watcher = FolderWatcher(
                self.folder, self.indexer, settings.index.watch_mode, settings.index.poll_interval
            )
            services.append(EmbedderService(self.encoder, self.indexer, self._watcher, self.graph))
        elif settings.index.folder is not None:
            self.folder = settings.watched_folder
        self._ranker: Ranker | None = None
        if with_searcher:
            self._ranker, self.whitening = ranker_for(
                settings, self.encoder, self.store, self.folder
            )
            services.append(
                SearcherService(
                    self.encoder,
                    self.store,
                    self._ranker,
                    settings.verdict.for_model(self.encoder.tuning),
                    self.folder,
                    max_file_bytes=settings.index.max_file_bytes,
                    background_threads=settings.encoder.inference_threads,
                    background_nice=settings.index.nice,
                )
            )
        self._services = services
        self._server: RunningServer | None = None
        self._http: HttpServer | None = None
        self._admission = Admission(settings.serve.max_concurrent_rpcs)
        self._metrics: WSGIServer | None = None
        self._stopping = threading.Event()
        self._health = threading.Thread(target=self._watch_store, name="health", daemon=True)

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.port

    @property
    def http_port(self) -> int | None:
        return None if self._http is None else self._http.port

    @property
    def metrics_port(self) -> int | None:
        return None if self._metrics is None else int(self._metrics.server_port)

    def start(self) -> None:
        # Both addresses first, and only here: a taken one must stop us before anything starts
        # working (the servers then bind with SO_REUSEPORT off, so a race still fails).
        ensure_available(self.settings.serve.listen, what="gRPC", flag=LISTEN_FLAG)
        if self.settings.serve.metrics_listen:
            ensure_available(self.settings.serve.metrics_listen, what="metrics", flag=METRICS_FLAG)
        if self.settings.serve.http_listen:
            ensure_available(self.settings.serve.http_listen, what="HTTP", flag=HTTP_FLAG)
        BUILD_INFO.info(
            {
                "version": __version__,
                "model": self.encoder.name,
                "model_key": self.encoder.key,
                "model_reason": self.encoder.info.reason,
            }
        )
        files = raise_descriptor_limit()
        if files < 4 * self.settings.serve.max_connections:
            log.warning(
                "few open files allowed: %d for up to %d connections (raise `ulimit -n`)",
                files,
                self.settings.serve.max_connections,
            )
        if self.settings.serve.metrics_listen:
            self._metrics = serve_metrics(self.settings.serve.metrics_listen)
        if self.indexer is not None and self._watcher is not None:
            # Watch first, then scan: a file landing during the scan is seen by one or the other.
            self._watcher.start()
            self.indexer.start()
        if self.whitening is not None:
            self.whitening.current()  # learns in the background when the folder is big enough
        if self.graph is not None:
            self.graph.start()
        self._server = start_server(
            self.settings.serve.listen,
            self._services,
            max_request_bytes=self.settings.serve.max_request_bytes,
            max_concurrent_rpcs=self.settings.serve.max_concurrent_rpcs,
            max_connections=self.settings.serve.max_connections,
            message_wait=self.settings.serve.message_wait_seconds,
            admission=self._admission,
            access=_access_policy(self.settings),
            tls=_tls_files(self.settings),
        )
        if self.settings.serve.http_listen:
            self._http = HttpServer(
                self.settings.serve.http_listen,
                self._http_backend(),
                tls=_tls_files(self.settings),
                max_connections=self.settings.serve.max_connections,
            )
            self._http.start()
        self._health.start()

    def _http_backend(self) -> HttpBackend:
        return HttpBackend(
            searcher=next((s for s in self._services if isinstance(s, SearcherService)), None),
            embedder=next((s for s in self._services if isinstance(s, EmbedderService)), None),
            folder=self.folder,
            access=_access_policy(self.settings),
            admission=self._admission,
            max_request_bytes=self.settings.serve.max_request_bytes,
            max_file_bytes=self.settings.index.max_file_bytes,
            limits=self.encoder.limits,
        )

    def _watch_store(self) -> None:
        """The services' health follows the store: NOT_SERVING while Qdrant does not answer
        (readiness); the process itself stays SERVING (liveness)."""
        assert self._server is not None
        names = [s.service_name for s in self._services]
        serving = True
        while not self._stopping.wait(self.settings.serve.health_interval):
            try:
                self.store.ping()
                healthy = True
            except StoreUnavailableError as exc:
                healthy = False
                if serving:
                    log.error("store unreachable, health NOT_SERVING error=%s", exc)
            if healthy != serving and not self._stopping.is_set():
                self._server.set_serving(names, serving=healthy, process=False)
                if healthy:
                    log.warning("store reachable again, health SERVING")
                serving = healthy

    def stop(self) -> None:
        """Stop taking requests, let in-flight ones and the batch finish, then close the store."""
        self._stopping.set()
        if self._health.is_alive():
            self._health.join(timeout=10)
        if self._http is not None:
            self._http.stop()
        if self._server is not None:
            self._server.set_serving([s.service_name for s in self._services], serving=False)
            self._server.stop(self.settings.serve.grace_seconds)
        if self._ranker is not None:
            self._ranker.close()
        if self._watcher is not None:
            self._watcher.stop()
        if self.indexer is not None:
            self.indexer.stop()
        if self.graph is not None:
            self.graph.stop()
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics.server_close()
        self.store.close()
        log.info("stopped")


class FolderSearch:
    """The parts of `imgsearch serve` for one folder, in this process, without gRPC or
    watching: index (or bring the index up to date), then search (`imgsearch find`)."""

    def __init__(self, settings: Settings) -> None:
        self.encoder = encoder_for(settings)
        self._settings = settings
        self._ranker: Ranker | None = None
        self._store = open_settings_store(settings, self.encoder)
        try:
            self.folder = prepare_folder(settings, self._store)
            self._indexer = indexer_for(settings, self._store, self.folder)
        except BaseException:
            self._store.close()
            raise

    def start(self) -> None:
        """Scan the folder and index what changed, in the background (`status` follows it)."""
        self._indexer.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._indexer.wait_ready(timeout)

    def status(self) -> IndexStatus:
        return self._indexer.status()

    def search(self, data: bytes, limit: int) -> searcher_pb2.SearchResponse:
        """Stop indexing (its first pass is done), then rank the folder's images for `data`."""
        self._indexer.stop()
        if self._ranker is None:
            self._ranker, whitening = ranker_for(
                self._settings, self.encoder, self._store, self.folder
            )
            if whitening is not None:
                whitening.refresh()  # learned now when the folder is big enough
        limit = limit or self._settings.verdict.default_limit
        ranking = self._ranker.rank(self.encoder.describe_query(data), limit)
        return response_of(ranking, self.encoder.name)

    def close(self) -> None:
        self._indexer.stop()
        if self._ranker is not None:
            self._ranker.close()
        self._store.close()
