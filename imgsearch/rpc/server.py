"""gRPC plumbing shared by both services: error mapping, metrics, health, reflection, serving."""

from __future__ import annotations

import functools
import logging
import resource
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from imgsearch.errors import (
    BusyError,
    CallEndedError,
    ImgsearchError,
    InvalidImageError,
    InvalidRequestError,
    ListenError,
    ModelError,
    NotFoundError,
    StoreMismatchError,
    StoreUnavailableError,
)
from imgsearch.metrics import RPC_DURATION, RPC_REQUESTS
from imgsearch.rpc.security import AccessInterceptor, AccessPolicy, TlsFiles

log = logging.getLogger(__name__)

LISTEN_FLAG = "--listen HOST:PORT"
_HANDSHAKE_TIMEOUT_MS = 10_000

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
Handler = Callable[[Any, _Request, grpc.ServicerContext], _Response]  # (self, request, context)

_STATUS_FOR: list[tuple[type[Exception], grpc.StatusCode]] = [
    (InvalidImageError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (CallEndedError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (BusyError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (StoreMismatchError, grpc.StatusCode.FAILED_PRECONDITION),
    (ModelError, grpc.StatusCode.INTERNAL),
    (ImgsearchError, grpc.StatusCode.INTERNAL),
]


def ensure_active(context: grpc.ServicerContext) -> None:
    """Between expensive steps: give up once the deadline has passed or the client left."""
    if not context.is_active():
        raise CallEndedError("deadline exceeded or call cancelled")


def status_for(exc: Exception) -> grpc.StatusCode:
    return next(code for kind, code in _STATUS_FOR if isinstance(exc, kind))


def maps_errors(method: Handler[_Request, _Response]) -> Handler[_Request, _Response]:
    """Turn domain exceptions raised by a servicer method into a gRPC status with the message."""

    @functools.wraps(method)
    def wrapper(self: object, request: _Request, context: grpc.ServicerContext) -> _Response:
        try:
            return method(self, request, context)
        except ImgsearchError as exc:
            code = status_for(exc)
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
                log.error("%s failed code=%s error=%s", method.__name__, code.name, exc)
            context.abort(code, str(exc))

    return wrapper


class _MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Counts every unary RPC by final status code and times it."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],  # type: ignore[type-arg]
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:  # type: ignore[type-arg]
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        inner = handler.unary_unary

        def timed(request: object, context: grpc.ServicerContext) -> object:
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = inner(request, context)
            except Exception:
                code = _code_of(context) or grpc.StatusCode.UNKNOWN
                raise
            else:
                code = _code_of(context) or grpc.StatusCode.OK
                return response
            finally:
                RPC_DURATION.labels(service, method).observe(time.perf_counter() - started)
                RPC_REQUESTS.labels(service, method, code.name).inc()

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code_of(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    code: grpc.StatusCode | None = context.code()  # type: ignore[attr-defined]  # stubs lag grpcio
    return code


class ServiceRegistration(Protocol):
    """What a service contributes to a server: its full name and how to add its servicer."""

    @property
    def service_name(self) -> str: ...

    def add_to_server(self, server: grpc.Server) -> None: ...


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    workers: futures.ThreadPoolExecutor

    def stop(self, grace: float) -> None:
        """Refuse new calls, let running ones finish within `grace` seconds, then end the
        worker threads (grpc leaves its executor running)."""
        self.server.stop(grace).wait()
        self.workers.shutdown(wait=True, cancel_futures=True)

    def set_serving(self, names: Sequence[str], serving: bool, *, process: bool = True) -> None:
        """Set the named services' health; `process` also sets the overall ("") status, which
        only start-up and shutdown change, so a store outage never fails a liveness probe."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *names] if process else names:
            self.health.set(name, status)


def start_server(
    listen: str,
    services: Sequence[ServiceRegistration],
    *,
    max_request_bytes: int,
    max_concurrent_rpcs: int = 64,
    max_connections: int = 512,
    workers: int = 16,
    access: AccessPolicy | None = None,
    tls: TlsFiles | None = None,
) -> RunningServer:
    """Start a gRPC server with the services, health checking and reflection on HOST:PORT.

    Calls beyond `max_concurrent_rpcs` are refused with RESOURCE_EXHAUSTED instead of
    queueing without bound. At most `max_connections` connections are accepted, and one that
    opens a socket but never completes its handshake is closed after 10 s: idle connections
    once took every file descriptor, so that the server was unreachable and files landing
    meanwhile could not be read.
    """
    pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc")
    server = grpc.server(
        pool,
        interceptors=[_MetricsInterceptor(), AccessInterceptor(access or AccessPolicy())],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
            # One server per address: with reuse on, a second server would share the port
            # and the kernel would split clients between two indexes.
            ("grpc.so_reuseport", 0),
            ("grpc.max_allowed_incoming_connections", max_connections),
            ("grpc.server_handshake_timeout_ms", _HANDSHAKE_TIMEOUT_MS),
        ],
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.service_name for s in services]
    for service in services:
        service.add_to_server(server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    try:
        port = (
            server.add_insecure_port(listen)
            if tls is None
            else server.add_secure_port(listen, tls.server_credentials())
        )
        if port:
            server.start()
    except BaseException:
        pool.shutdown(wait=False)
        raise
    if port == 0:
        pool.shutdown(wait=False)
        raise ListenError(f"cannot listen for gRPC on {listen}; choose another with {LISTEN_FLAG}")
    running = RunningServer(server, port, health_servicer, pool)
    running.set_serving(names, serving=True)
    log.info(
        "grpc listening address=%s port=%d tls=%s mtls=%s services=%s",
        listen,
        port,
        tls is not None,
        tls is not None and tls.client_ca is not None,
        ",".join(names),
    )
    return running


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (often 1,024 of far
    more): connections, the store's files and the indexer's reads all need descriptors.
    Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit soft=%d error=%s", soft, exc)
    return soft


def wait_for_shutdown_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
