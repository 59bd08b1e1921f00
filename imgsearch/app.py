"""Wires settings into running services: model, store, indexer, watcher, gRPC and metrics."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from pydantic import SecretStr

from embedder.indexer import Indexer
from embedder.service import EmbedderService
from embedder.watcher import FolderWatcher
from imgsearch import __version__
from imgsearch.errors import StoreUnavailableError
from imgsearch.metrics import BUILD_INFO, serve_metrics
from imgsearch.model import ImageEncoder
from imgsearch.model.preprocess import DecodeLimits
from imgsearch.security import AccessPolicy, TlsFiles
from imgsearch.server import RunningServer, ServiceRegistration, start_server
from imgsearch.settings import BUNDLED_SAMPLES, Settings
from imgsearch.store import VectorStore
from searcher.service import SearcherService, SearchPolicy
from searcher.verify import Verifier
from searcher.whitening import FolderWhitening

log = logging.getLogger(__name__)


def open_encoder(settings: Settings, threads: int | None = None) -> ImageEncoder:
    return ImageEncoder(
        settings.model_path,
        image_size=settings.image_size,
        threads=threads or settings.inference_threads,
        limits=DecodeLimits(max_pixels=settings.max_pixels, min_side=settings.min_side),
        max_batch=settings.batch_size,
        query_sizes=settings.query_sizes,
    )


def open_store(settings: Settings, encoder: ImageEncoder) -> VectorStore:
    if settings.qdrant_url:
        return VectorStore.open(
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            collection=settings.collection,
            dimensions=encoder.dimensions,
            model=encoder.name,
            grouped=settings.regions,
        )
    return VectorStore.open(
        grouped=settings.regions,
        path=settings.engine_store_path,
        engine=settings.engine,
        collection=settings.collection,
        dimensions=encoder.dimensions,
        model=encoder.name,
    )


def prepare_folder(settings: Settings) -> Path:
    """The folder to watch; with none configured, a writable copy of the bundled samples."""
    folder = settings.watched_folder
    if settings.folder is None and not folder.exists():
        shutil.copytree(BUNDLED_SAMPLES, folder, ignore=shutil.ignore_patterns("NOTICE"))
        log.info("no folder given: serving a copy of the bundled samples folder=%s", folder)
    return folder


def _access_policy(settings: Settings) -> AccessPolicy:
    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    return AccessPolicy(
        token=secret(settings.auth_token),
        admin_token=secret(settings.admin_token),
        write_rpcs=settings.write_rpcs,
    )


def _tls_files(settings: Settings) -> TlsFiles | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)


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
        self.encoder = open_encoder(settings)
        self.store = store or open_store(settings, self.encoder)
        self.folder: Path | None = None
        self.indexer: Indexer | None = None
        self._watcher: FolderWatcher | None = None
        self.whitening: FolderWhitening | None = None
        services: list[ServiceRegistration] = []
        if with_embedder:
            self.folder = prepare_folder(settings)
            # The indexing workers share the inference threads (one each by default); the
            # query encoder keeps them all for latency.
            index_threads = max(1, settings.inference_threads // settings.embed_workers)
            self.indexer = Indexer(
                self.folder,
                self.encoder
                if index_threads == settings.inference_threads
                else open_encoder(settings, threads=index_threads),
                self.store,
                batch_size=settings.batch_size,
                settle_seconds=settings.settle_seconds,
                rescan_interval=settings.rescan_interval,
                max_file_bytes=settings.max_file_bytes,
                mass_delete_fraction=settings.mass_delete_fraction,
                regions=settings.regions,
                embed_workers=settings.embed_workers,
            )
            self._watcher = FolderWatcher(
                self.folder, self.indexer, settings.watch_mode, settings.poll_interval
            )
            services.append(EmbedderService(self.encoder, self.indexer, self._watcher))
        elif settings.folder is not None:
            self.folder = settings.watched_folder
        if with_searcher:
            policy = SearchPolicy(
                default_limit=settings.default_limit,
                max_limit=settings.max_limit,
                match_threshold=settings.match_threshold,
                whitened_match_threshold=settings.whitened_match_threshold,
                verify_top=settings.verify_top,
                min_inliers=settings.min_inliers,
            )
            verifier = (
                Verifier(self.folder, limits=self.encoder.limits)
                if self.folder is not None and settings.verify_top > 0
                else None
            )
            if settings.whitening_min_images > 0:
                self.whitening = FolderWhitening(
                    self.store,
                    min_images=max(2, settings.whitening_min_images),
                    dimensions=settings.whitening_dims,
                    sample=settings.whitening_sample,
                )
            services.append(
                SearcherService(
                    self.encoder, self.store, policy, self.folder, verifier, self.whitening
                )
            )
        self._services = services
        self._server: RunningServer | None = None
        self._metrics: WSGIServer | None = None
        self._stopping = threading.Event()
        self._health = threading.Thread(target=self._watch_store, name="health", daemon=True)

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.port

    @property
    def metrics_port(self) -> int | None:
        return None if self._metrics is None else int(self._metrics.server_port)

    def start(self) -> None:
        BUILD_INFO.info({"version": __version__, "model": self.encoder.name})
        if self.settings.metrics_listen:
            self._metrics = serve_metrics(self.settings.metrics_listen)
        if self.indexer is not None and self._watcher is not None:
            # Watch first, then scan: a file landing during the scan is seen by one or the other.
            self._watcher.start()
            self.indexer.start()
        if self.whitening is not None:
            self.whitening.current()  # learns in the background when the folder is big enough
        self._server = start_server(
            self.settings.listen,
            self._services,
            max_request_bytes=self.settings.max_request_bytes,
            max_concurrent_rpcs=self.settings.max_concurrent_rpcs,
            access=_access_policy(self.settings),
            tls=_tls_files(self.settings),
        )
        self._health.start()

    def _watch_store(self) -> None:
        """The services' health follows the store: NOT_SERVING while Qdrant does not answer
        (readiness); the process itself stays SERVING (liveness)."""
        assert self._server is not None
        names = [s.service_name for s in self._services]
        serving = True
        while not self._stopping.wait(self.settings.health_interval):
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
        if self._server is not None:
            self._server.set_serving([s.service_name for s in self._services], serving=False)
            self._server.server.stop(self.settings.grace_seconds).wait()
        if self._watcher is not None:
            self._watcher.stop()
        if self.indexer is not None:
            self.indexer.stop()
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics.server_close()
        self.store.close()
        log.info("stopped")
