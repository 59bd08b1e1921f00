"""Serve the HTTP API with uvicorn on its own thread, beside the gRPC server."""

from __future__ import annotations

import logging
import ssl
import threading
import time

import uvicorn

from imgsearch.errors import ListenError
from imgsearch.http.api import HttpBackend, make_app
from imgsearch.rpc.security import TlsFiles

log = logging.getLogger(__name__)

HTTP_FLAG = "--http-listen HOST:PORT (or '' for no HTTP)"
_START_TIMEOUT = 30.0


class HttpServer:
    def __init__(
        self,
        listen: str,
        backend: HttpBackend,
        *,
        tls: TlsFiles | None = None,
        max_connections: int = 512,
    ) -> None:
        host, _, port = listen.rpartition(":")
        tls_options: dict[str, object] = {}
        if tls is not None:
            tls_options = {
                "ssl_certfile": str(tls.cert),
                "ssl_keyfile": str(tls.key),
                "ssl_ca_certs": str(tls.client_ca) if tls.client_ca else None,
                "ssl_cert_reqs": ssl.CERT_REQUIRED if tls.client_ca else ssl.CERT_NONE,
            }
        config = uvicorn.Config(
            make_app(backend),
            host=host.strip("[]"),
            port=int(port),
            lifespan="off",
            access_log=False,
            log_config=None,  # our logging setup, not uvicorn's
            limit_concurrency=max_connections,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
            **tls_options,  # type: ignore[arg-type]
        )
        self._server = uvicorn.Server(config)
        self._listen = listen
        self._tls = tls is not None
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    @property
    def port(self) -> int:
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ListenError(
                    f"cannot listen for HTTP on {self._listen}; choose another with {HTTP_FLAG}"
                )
            time.sleep(0.02)
        scheme = "https" if self._tls else "http"
        host = self._listen.rpartition(":")[0]
        log.info("http listening on %s://%s:%d/ (web page, /v1 API)", scheme, host, self.port)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
