"""gRPC plumbing shared by both services: error mapping, metrics, health, reflection, serving."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import resource
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent import futures
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
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
from imgsearch.rpc.security import AccessPolicy, TlsFiles

log = logging.getLogger(__name__)

LISTEN_FLAG = "--listen HOST:PORT"
_HANDSHAKE_TIMEOUT_MS = 10_000
# Calls at once on one connection (a client past it waits): bounds what half-open calls cost.
_STREAMS_PER_CONNECTION = 100
_END = object()  # what next() returns at the end of a streamed response

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Result = TypeVar("_Result")
Handler = Callable[[Any, _Request, "CallContext"], _Response]  # (self, request, context)

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


class CallContext(Protocol):
    """What a servicer method, running on a worker thread, sees of its call."""

    def is_active(self) -> bool: ...

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn: ...


def ensure_active(context: CallContext) -> None:
    """Between expensive steps: give up once the deadline has passed or the client left."""
    if not context.is_active():
        raise CallEndedError("deadline exceeded or call cancelled")


def status_for(exc: Exception) -> grpc.StatusCode:
    return next(code for kind, code in _STATUS_FOR if isinstance(exc, kind))


def maps_errors(method: Handler[_Request, _Response]) -> Handler[_Request, _Response]:
    """Turn domain exceptions raised by a servicer method into a gRPC status with the message."""

    def abort(exc: ImgsearchError, context: CallContext) -> NoReturn:
        code = status_for(exc)
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
            log.error("%s failed code=%s error=%s", method.__name__, code.name, exc)
        context.abort(code, str(exc))

    if inspect.isgeneratorfunction(method):  # a server-streaming method: errors come mid-stream

        @functools.wraps(method)
        def streaming(self: object, request: _Request, context: CallContext) -> Any:  # noqa: ANN401
            try:
                yield from method(self, request, context)
            except ImgsearchError as exc:
                abort(exc, context)

        return streaming

    @functools.wraps(method)
    def wrapper(self: object, request: _Request, context: CallContext) -> _Response:
        try:
            return method(self, request, context)
        except ImgsearchError as exc:
            abort(exc, context)

    return wrapper


class _AbortError(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _ThreadContext:
    """The call as a worker thread sees it: ended when the client cancels (the event loop
    says so) or the deadline passes; `abort` ends the method with a status."""

    def __init__(self, time_remaining: float | None) -> None:
        self._deadline = None if time_remaining is None else time.monotonic() + time_remaining
        self._ended = threading.Event()

    def is_active(self) -> bool:
        return not self._ended.is_set() and (
            self._deadline is None or time.monotonic() < self._deadline
        )

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _AbortError(code, details)

    def end(self) -> None:
        self._ended.set()


class Admission:
    """Counts the calls being worked on (their message has arrived), gRPC and HTTP alike;
    refuses past the limit."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self._count >= self._limit:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._count -= 1


class _Dispatcher(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # not generic at run time
    """Every call passes here before its message arrives: refused at once without the right
    token; otherwise our (synchronous) servicer methods are served as calls whose message is
    awaited on the event loop, for at most `message_wait` seconds, and only then handed to a
    worker thread. A call that sends headers but never its message so holds no thread.
    Counts and times every unary call by service, method and final status."""

    def __init__(
        self,
        access: AccessPolicy,
        workers: futures.ThreadPoolExecutor,
        admission: Admission,
        message_wait: float,
    ) -> None:
        self._access = access
        self._workers = workers
        self._admission = admission
        self._message_wait = message_wait

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(details)
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED
            return handler  # type: ignore[return-value]  # stubs say never None; it can be
        service, _, method = details.method.lstrip("/").rpartition("/")
        metadata = {key: str(value) for key, value in details.invocation_metadata or ()}
        refusal = self._access.check(details.method, metadata)
        if refusal is not None:
            log.warning("refused method=%s code=%s", details.method, refusal[0].name)
            RPC_REQUESTS.labels(service, method, refusal[0].name).inc()
            return _refusing(*refusal)
        streaming = handler.unary_stream
        if streaming is not None and not (
            inspect.iscoroutinefunction(streaming) or inspect.isasyncgenfunction(streaming)
        ):  # a synchronous generator of ours (health Watch is asynchronous: left as it is)
            streamed = functools.partial(
                self._serve_stream,
                handler.unary_stream,  # type: ignore[arg-type]  # takes a CallContext
                service,
                method,
            )
            return grpc.stream_stream_rpc_method_handler(
                streamed,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        behaviour = handler.unary_unary
        if behaviour is None:
            return handler  # streams: health Watch and reflection, served on the event loop
        if inspect.iscoroutinefunction(behaviour):
            call = _timed_async(behaviour, service, method)  # type: ignore[arg-type]
            return grpc.unary_unary_rpc_method_handler(
                call,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # The servicer methods take a CallContext, which the stubs cannot know.
        served = functools.partial(self._serve, behaviour, service, method)  # type: ignore[arg-type]
        return grpc.stream_unary_rpc_method_handler(
            served,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def _serve(
        self,
        behaviour: Callable[[object, CallContext], object],
        service: str,
        method: str,
        _requests: AsyncIterator[object],  # unused: the message is read with a time limit
        context: grpc.aio.ServicerContext[object, object],
    ) -> object:
        return await self._answered(service, method, context, self._run(behaviour, context))

    async def _serve_stream(
        self,
        behaviour: Callable[[object, CallContext], Iterator[object]],
        service: str,
        method: str,
        _requests: AsyncIterator[object],  # unused: the message is read with a time limit
        context: grpc.aio.ServicerContext[object, object],
    ) -> None:
        """A server-streaming method: each response is produced on a worker thread and
        written from the loop, so a slow reader holds no thread between responses."""
        await self._answered(service, method, context, self._stream(behaviour, context))

    async def _stream(
        self,
        behaviour: Callable[[object, CallContext], Iterator[object]],
        context: grpc.aio.ServicerContext[object, object],
    ) -> None:
        request, call = await self._admitted(context)
        try:
            responses = behaviour(request, call)
            loop = asyncio.get_running_loop()
            while (
                item := await loop.run_in_executor(self._workers, next, responses, _END)
            ) is not _END:
                await context.write(item)
        except asyncio.CancelledError:
            call.end()
            raise
        finally:
            self._admission.leave()

    async def _answered(
        self,
        service: str,
        method: str,
        context: grpc.aio.ServicerContext[object, object],
        work: Awaitable[_Result],
    ) -> _Result | None:
        """`work`'s result; its abort becomes the call's status. Counted and timed by status."""
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            result = await work
            code = grpc.StatusCode.OK
            return result
        except _AbortError as exc:
            code = exc.code
            await context.abort(exc.code, exc.details)
            return None  # not reached: abort raises
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            RPC_DURATION.labels(service, method).observe(time.perf_counter() - started)
            RPC_REQUESTS.labels(service, method, code.name).inc()

    async def _admitted(
        self, context: grpc.aio.ServicerContext[object, object]
    ) -> tuple[object, _ThreadContext]:
        """The call's request, read within `message_wait`, once the call has a place among
        `max_concurrent_rpcs` (the caller leaves it)."""
        try:
            request = await asyncio.wait_for(context.read(), self._message_wait)
        except TimeoutError:
            raise _AbortError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no request message within {self._message_wait:g} s of the call's start",
            ) from None
        if request is grpc.aio.EOF:  # type: ignore[attr-defined]  # missing from the stubs
            raise _AbortError(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request")
        if not self._admission.enter():
            raise _AbortError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "server busy: too many calls in progress; retry with back-off",
            )
        return request, _ThreadContext(context.time_remaining())

    async def _run(
        self,
        behaviour: Callable[[object, CallContext], object],
        context: grpc.aio.ServicerContext[object, object],
    ) -> object:
        request, call = await self._admitted(context)

        def work() -> object:
            try:
                return behaviour(request, call)
            finally:
                self._admission.leave()

        try:
            return await asyncio.get_running_loop().run_in_executor(self._workers, work)
        except asyncio.CancelledError:
            call.end()  # the client left or the deadline passed: the thread stops at its next check
            raise
        except _AbortError:
            raise
        except Exception:
            log.exception("unexpected error in a call")
            raise


def _timed_async(
    behaviour: Callable[[object, grpc.aio.ServicerContext[object, object]], Awaitable[object]],
    service: str,
    method: str,
) -> Callable[[object, grpc.aio.ServicerContext[object, object]], Awaitable[object]]:
    async def timed(request: object, context: grpc.aio.ServicerContext[object, object]) -> object:
        started = time.perf_counter()
        try:
            return await behaviour(request, context)
        finally:
            code = context.code() or grpc.StatusCode.OK
            RPC_DURATION.labels(service, method).observe(time.perf_counter() - started)
            RPC_REQUESTS.labels(service, method, code.name).inc()

    return timed


def _refusing(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
    """A handler that ends the call with `code` at once, before any message is read (a
    streaming handler runs as soon as the headers arrive; on the wire it answers any call)."""

    async def refuse(
        _requests: AsyncIterator[object], context: grpc.aio.ServicerContext[object, object]
    ) -> None:
        await context.abort(code, message)

    return grpc.stream_stream_rpc_method_handler(refuse)


class ServiceRegistration(Protocol):
    """What a service contributes to a server: its full name and how to add its servicer."""

    @property
    def service_name(self) -> str: ...

    def add_to_server(self, server: grpc.aio.Server) -> None: ...


class RunningServer:
    """An asyncio gRPC server on its own event-loop thread; servicer methods run on `workers`."""

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        health: HealthServicer,
        workers: futures.ThreadPoolExecutor,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
    ) -> None:
        self.port = port
        self._server: grpc.aio.Server | None = server
        self._health = health
        self._workers = workers
        self._loop = loop
        self._thread = thread

    def stop(self, grace: float) -> None:
        """Refuse new calls, let running ones finish within `grace` seconds, then end the
        event loop and the worker threads."""
        if self._server is None:
            return
        self._on_loop(self._health.enter_graceful_shutdown())
        self._on_loop(self._server.stop(grace))
        # grpc's process-wide poller thread ends with the last server object: drop ours (a
        # TLS server sits in a reference cycle, hence the collection), but only once the loop
        # has ended: the poller's descriptor closes then, and a running loop would still poll it.
        _end_loop(self._loop, self._thread)
        self._server = None
        gc.collect()
        self._workers.shutdown(wait=True, cancel_futures=True)

    def set_serving(self, names: Sequence[str], serving: bool, *, process: bool = True) -> None:
        """Set the named services' health; `process` also sets the overall ("") status, which
        only start-up and shutdown change, so a store outage never fails a liveness probe."""
        if self._server is None:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *names] if process else names:
            self._on_loop(self._health.set(name, status))

    def _on_loop(self, work: Coroutine[Any, Any, _Result]) -> _Result:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()


def _end_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    async def finish() -> None:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await loop.shutdown_asyncgens()

    asyncio.run_coroutine_threadsafe(finish(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def start_server(
    listen: str,
    services: Sequence[ServiceRegistration],
    *,
    max_request_bytes: int,
    max_concurrent_rpcs: int = 64,
    max_connections: int = 512,
    message_wait: float = 30.0,
    admission: Admission | None = None,
    workers: int = 16,
    access: AccessPolicy | None = None,
    tls: TlsFiles | None = None,
) -> RunningServer:
    """Start a gRPC server with the services, health checking and reflection on HOST:PORT.

    Calls beyond `max_concurrent_rpcs` are refused with RESOURCE_EXHAUSTED instead of
    queueing without bound. At most `max_connections` connections are accepted, and one that
    opens a socket but never completes its handshake is closed after 10 s: idle connections
    once took every file descriptor, so that the server was unreachable and files landing
    meanwhile could not be read. The server is asyncio-based so that calls waiting for their
    message, and health watchers, hold no thread (16 half-open calls once froze a
    thread-per-call server).
    """
    pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-loop", daemon=True)
    thread.start()
    dispatcher = _Dispatcher(
        access or AccessPolicy(), pool, admission or Admission(max_concurrent_rpcs), message_wait
    )

    async def start() -> tuple[grpc.aio.Server, int, HealthServicer]:
        server = grpc.aio.server(
            interceptors=[dispatcher],
            options=[
                ("grpc.max_receive_message_length", max_request_bytes),
                ("grpc.max_send_message_length", 16 * 1024 * 1024),
                # One server per address: with reuse on, a second server would share the port
                # and the kernel would split clients between two indexes.
                ("grpc.so_reuseport", 0),
                ("grpc.max_allowed_incoming_connections", max_connections),
                ("grpc.server_handshake_timeout_ms", _HANDSHAKE_TIMEOUT_MS),
                ("grpc.max_concurrent_streams", _STREAMS_PER_CONNECTION),
            ],
        )
        health_servicer = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for service in services:
            service.add_to_server(server)
        reflection.enable_server_reflection(
            [
                *[s.service_name for s in services],
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
        except RuntimeError:
            port = 0
        if port:
            await server.start()
        return server, port, health_servicer

    try:
        server, port, health_servicer = asyncio.run_coroutine_threadsafe(start(), loop).result()
    except BaseException:
        _end_loop(loop, thread)
        pool.shutdown(wait=False)
        raise
    if port == 0:
        _end_loop(loop, thread)
        pool.shutdown(wait=False)
        raise ListenError(f"cannot listen for gRPC on {listen}; choose another with {LISTEN_FLAG}")
    running = RunningServer(server, port, health_servicer, pool, loop, thread)
    names = [s.service_name for s in services]
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
