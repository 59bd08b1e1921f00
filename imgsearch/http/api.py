"""The HTTP/JSON API and the web page, beside gRPC in the same process.

Every route calls the same servicer methods as gRPC (so the answers are the same), under the
same bearer tokens and the same concurrency limit; errors are JSON `{"error": ...}` with the
HTTP status that matches the gRPC code. The page and its files are static and load nothing
from outside this origin.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, NoReturn, Protocol, TypeVar

import grpc
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, ImageOps
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from imgsearch import __version__
from imgsearch.console import message_json, source_found
from imgsearch.errors import ImgsearchError, InvalidImageError, NotFoundError, OutsideFolderError
from imgsearch.files import read_folder_file
from imgsearch.metrics import HTTP_DURATION, HTTP_REQUESTS
from imgsearch.model.preprocess import DecodeLimits, decode_image
from imgsearch.paths import relative_to_root, resolve_inside
from imgsearch.rpc.security import AccessPolicy
from imgsearch.rpc.server import Admission, CallContext, status_for
from imgsearch.v1 import embedder_pb2, searcher_pb2

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# The gRPC method whose access rule each route follows.
_SEARCH = "/imgsearch.v1.Searcher/Search"
_DUPLICATES = "/imgsearch.v1.Searcher/FindDuplicates"
_STATUS = "/imgsearch.v1.Embedder/GetStatus"
THUMBNAIL_SIDE = 320  # the largest thumbnail side served
_THUMBNAILS_CACHED = 512
_PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _HttpCall:
    """The CallContext the servicer methods see for an HTTP request: no deadline; `abort`
    becomes the HTTP error of the same gRPC code."""

    def is_active(self) -> bool:
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise HttpError(_HTTP_STATUS.get(code, 500), details)


class SearcherMethods(Protocol):
    """The Searcher servicer's methods the routes call (the gRPC servicer itself)."""

    def Search(  # noqa: N802 - the proto's names
        self, request: searcher_pb2.SearchRequest, context: CallContext
    ) -> searcher_pb2.SearchResponse: ...

    def FindDuplicates(  # noqa: N802
        self, request: searcher_pb2.FindDuplicatesRequest, context: CallContext
    ) -> Iterator[searcher_pb2.FindDuplicatesEvent]: ...


class EmbedderMethods(Protocol):
    def GetStatus(  # noqa: N802
        self, request: embedder_pb2.GetStatusRequest, context: CallContext
    ) -> embedder_pb2.GetStatusResponse: ...


@dataclass
class HttpBackend:
    """What the routes call: the servicers of this process (either may be absent)."""

    searcher: SearcherMethods | None
    embedder: EmbedderMethods | None
    folder: Path | None
    access: AccessPolicy
    admission: Admission
    max_request_bytes: int
    max_file_bytes: int
    limits: DecodeLimits  # the same bounds as every other decode of the process


def make_app(backend: HttpBackend) -> FastAPI:
    app = FastAPI(
        title="imgsearch",
        version=__version__,
        summary="Find the sources of cropped or degraded images in a watched folder.",
        docs_url=None,  # Swagger UI would load scripts from a CDN
        redoc_url=None,
    )
    app.add_exception_handler(HttpError, _error_response)  # type: ignore[arg-type]

    @app.middleware("http")
    async def measured(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        HTTP_DURATION.labels(name).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(name, str(response.status_code)).inc()
        return response

    @app.post(
        "/v1/search",
        summary="Find the sources of an image",
        description="The body is the image file (any content type), or multipart/form-data "
        "with the file in the field `image`; or no body and `path`, a file of the folder. "
        "The answer has the fields of the gRPC SearchResponse, plus `source_found`.",
    )
    async def search(
        request: Request,
        limit: Annotated[int, Query(ge=0)] = 0,
        min_score: Annotated[float, Query(ge=-1, le=1)] = 0.0,
        subfolder: str = "",
        path: str = "",
    ) -> dict[str, Any]:
        _allowed(backend, request, _SEARCH)
        searcher = _needs(backend.searcher, "the searcher does not run in this process")
        message = searcher_pb2.SearchRequest(limit=limit, min_score=min_score, subfolder=subfolder)
        if path:
            message.path = path
        else:
            message.image = await _image_of(request, backend.max_request_bytes)
        response = await _call(backend, searcher.Search, message)
        return {"source_found": source_found(response), **message_json(response)}

    @app.get("/v1/status", summary="What is indexed, pending and failed, and which model")
    async def status(request: Request) -> dict[str, Any]:
        _allowed(backend, request, _STATUS)
        embedder = _needs(backend.embedder, "the embedder does not run in this process")
        response = await _call(backend, embedder.GetStatus, embedder_pb2.GetStatusRequest())
        return message_json(response)

    @app.get(
        "/v1/duplicates",
        summary="Groups of files in the folder that are copies of each other",
        description="The groups of the FindDuplicates RPC, largest first, and how many images "
        "were compared.",
    )
    async def duplicates(
        request: Request, neighbours: Annotated[int, Query(ge=0)] = 0
    ) -> dict[str, Any]:
        _allowed(backend, request, _DUPLICATES)
        searcher = _needs(backend.searcher, "the searcher does not run in this process")
        message = searcher_pb2.FindDuplicatesRequest(neighbours=neighbours)

        def collect() -> dict[str, Any]:
            groups: list[dict[str, Any]] = []
            images = 0
            for event in searcher.FindDuplicates(message, _HttpCall()):
                if event.WhichOneof("event") == "progress":
                    images = event.progress.total
                else:
                    groups.append(message_json(event.group))
            return {"images": images, "groups": groups}

        return await _call(backend, lambda _m, _c: collect(), message)

    @app.get(
        "/v1/thumbnail",
        summary="A small JPEG of a file of the watched folder",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    async def thumbnail(
        request: Request, path: str, size: Annotated[int, Query(ge=16, le=THUMBNAIL_SIDE)] = 160
    ) -> Response:
        _allowed(backend, request, _SEARCH)
        folder = _needs(backend.folder, "the searcher was started without the folder")
        data, version = await run_in_threadpool(_file_version, folder, path, backend)
        jpeg = await run_in_threadpool(
            _thumbnail, folder, path, size, version, backend.max_file_bytes, backend.limits
        )
        return Response(
            jpeg,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=300", "ETag": f'"{data}-{size}"'},
        )

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_static("index.html"), headers=_page_headers())

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        types = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in types:
            raise HttpError(404, f"no such file: {name}")
        return Response(_static(name), media_type=types[name], headers=_page_headers())

    return app


async def _error_response(_request: Request, exc: HttpError) -> JSONResponse:
    if exc.status >= 500:
        log.error("http error status=%d error=%s", exc.status, exc.message)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def _page_headers() -> dict[str, str]:
    return {"Content-Security-Policy": _PAGE_POLICY, "X-Content-Type-Options": "nosniff"}


@lru_cache(maxsize=8)
def _static(name: str) -> bytes:
    return resources.files("imgsearch.http").joinpath("static", name).read_bytes()


def _allowed(backend: HttpBackend, request: Request, method: str) -> None:
    header = request.headers.get("authorization", "")
    refusal = backend.access.check(method, {"authorization": header})
    if refusal is not None:
        log.warning("refused http path=%s code=%s", request.url.path, refusal[0].name)
        raise HttpError(_HTTP_STATUS[refusal[0]], refusal[1])


def _needs(part: _T | None, why: str) -> _T:
    if part is None:
        raise HttpError(501, why)
    return part


async def _call(
    backend: HttpBackend, method: Callable[[_Req, _HttpCall], _Resp], message: _Req
) -> _Resp:
    """Run a servicer method on a worker thread, within the shared concurrency limit."""
    if not backend.admission.enter():
        raise HttpError(429, "server busy: too many calls in progress; retry with back-off")
    try:
        return await run_in_threadpool(method, message, _HttpCall())
    finally:
        backend.admission.leave()


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body of {int(declared)} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_of(request: Request, limit: int) -> bytes:
    """The query image: the whole body, or the multipart field `image`."""
    body = await _body(request, limit)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):

        async def replay() -> AsyncGenerator[bytes, None]:
            yield body

        try:
            form = await MultiPartParser(Headers(scope=request.scope), replay()).parse()
        except MultiPartException as exc:
            raise HttpError(400, f"bad multipart body: {exc.message}") from exc
        try:
            field = form.get("image")
            if field is None or isinstance(field, str):
                raise HttpError(400, "multipart body has no file field `image`")
            body = await field.read()
        finally:
            await form.close()
    if not body:
        raise HttpError(400, "empty image: send the image file as the body, or `path`")
    return body


def _file_version(folder: Path, path: str, backend: HttpBackend) -> tuple[str, int]:
    """(a short version tag, mtime) of a file of the folder, confined like path queries."""
    try:
        file = resolve_inside(folder, path)
        if relative_to_root(folder.resolve(), file) is None:
            raise OutsideFolderError(f"path is outside the watched folder: {path!r}")
        stat = file.stat()
    except FileNotFoundError as exc:
        raise HttpError(404, f"no such file in the watched folder: {path!r}") from exc
    except ImgsearchError as exc:
        raise HttpError(_HTTP_STATUS.get(status_for(exc), 500), str(exc)) from exc
    except OSError as exc:
        raise HttpError(400, f"cannot read {path!r}: {exc.strerror}") from exc
    if stat.st_size > backend.max_file_bytes:
        raise HttpError(400, f"{path!r} is over the file size limit")
    return f"{stat.st_mtime_ns:x}-{stat.st_size:x}", stat.st_mtime_ns


@lru_cache(maxsize=_THUMBNAILS_CACHED)
def _thumbnail(
    folder: Path, path: str, size: int, _version: int, max_bytes: int, limits: DecodeLimits
) -> bytes:
    """A JPEG at most `size` px on its long side (cached per file version and size)."""
    try:
        data = read_folder_file(resolve_inside(folder, path), max_bytes)
        pixels = decode_image(data, size, limits).pixels
    except FileNotFoundError as exc:
        raise HttpError(404, f"no such file in the watched folder: {path!r}") from exc
    except (InvalidImageError, NotFoundError) as exc:
        raise HttpError(400, str(exc)) from exc
    except OSError as exc:
        raise HttpError(400, f"cannot read {path!r}: {exc.strerror}") from exc
    small = ImageOps.contain(Image.fromarray(pixels), (size, size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=80)
    return out.getvalue()
