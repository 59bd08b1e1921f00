"""The `imgsearch` command: run the services, query a running server, or find sources in one go.

Exit codes (README "Using it"), for scripts:
  0  done; `search` and `find`: every query found its source
  1  `search` and `find`: at least one query has no source in the index
  2  usage or input error: a flag, a setting, a query file or image, an address, the folder
  3  no server answered (or not within --timeout)
  4  the operation failed: store busy or unreachable, backup refused, server error
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
from pydantic import ValidationError

from imgsearch import __version__
from imgsearch.console import (
    CSV_HEADER,
    duplicates_summary,
    group_csv_rows,
    group_json,
    group_text,
    search_json,
    search_text,
    source_found,
    status_json,
    status_text,
)
from imgsearch.errors import (
    FolderError,
    ImgsearchError,
    InvalidImageError,
    InvalidRequestError,
    ListenError,
    ModelError,
    NotFoundError,
    ServerUnreachableError,
    StoreBusyError,
)
from imgsearch.logs import configure_logging
from imgsearch.rpc.client import Client
from imgsearch.settings import ClientSettings, Settings, StoreSettings, field_help, setting_help
from imgsearch.v1 import searcher_pb2

log = logging.getLogger("imgsearch")

EXIT_OK = 0
EXIT_NO_SOURCE = 1
EXIT_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_FAILED = 4

_EXIT_FOR: list[tuple[type[ImgsearchError], int]] = [
    (ServerUnreachableError, EXIT_UNREACHABLE),
    (InvalidImageError, EXIT_INPUT),
    (InvalidRequestError, EXIT_INPUT),
    (NotFoundError, EXIT_INPUT),
    (ListenError, EXIT_INPUT),
    (FolderError, EXIT_INPUT),
    (ModelError, EXIT_INPUT),
    (ImgsearchError, EXIT_FAILED),
]
_HINT_FOR: list[tuple[type[ImgsearchError], str]] = [
    (StoreBusyError, "stop the other imgsearch process, or give this one --data DIR"),
]
_RPC_EXIT = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_INPUT,
    grpc.StatusCode.NOT_FOUND: EXIT_INPUT,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_INPUT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_INPUT,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_INPUT,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_INPUT,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNREACHABLE,
}
_RPC_HINT = {
    grpc.StatusCode.UNAUTHENTICATED: "set IMGSEARCH_TOKEN to the server's token",
    grpc.StatusCode.PERMISSION_DENIED: "this call needs IMGSEARCH_TOKEN set to the admin token",
    grpc.StatusCode.DEADLINE_EXCEEDED: "allow more time with --timeout SECONDS",
}
_STDIN = "-"  # the query file name that means standard input

# CLI flag -> setting, for the flags every server command shares (help and defaults come from
# the setting's own field).
_SERVER_FLAGS: dict[str, tuple[str, str | None]] = {
    "listen": ("listen", "HOST:PORT"),
    "data": ("data_dir", "DIR"),
    "metrics_listen": ("metrics_listen", "HOST:PORT"),
    "http_listen": ("http_listen", "HOST:PORT"),
    "collection": ("collection", None),
    "model": ("model", "NAME|ONNX"),
    "watch_mode": ("watch_mode", None),
    "match_threshold": ("match_threshold", None),
    "whitened_match_threshold": ("whitened_match_threshold", None),
    "whitening_min_images": ("whitening_min_images", "N"),
    "log_level": ("log_level", None),
    "log_format": ("log_format", None),
    "tls_cert": ("tls_cert", "PEM"),
    "tls_key": ("tls_key", "PEM"),
    "tls_client_ca": ("tls_client_ca", "PEM"),
}
_CLIENT_FLAGS: dict[str, str | None] = {
    "server": "HOST:PORT",
    "timeout": "SECONDS",
    "tls_ca": "PEM",
    "tls_cert": "PEM",
    "tls_key": "PEM",
}


class _Parser(argparse.ArgumentParser):
    """argparse, with a hint to --help under the one-line usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"error: {message}\nhint: {self.prog} --help\n")


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _score(text: str) -> float:
    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [-1, 1], got {value}")
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_server_flags(parser: argparse.ArgumentParser, *, qdrant_required: bool) -> None:
    group = parser.add_argument_group("server (flags override IMGSEARCH_* variables)")
    for flag, (setting, metavar) in _SERVER_FLAGS.items():
        group.add_argument(_flag(flag), metavar=metavar, help=setting_help(setting))
    group.add_argument("--qdrant-url", required=qdrant_required, help=setting_help("qdrant_url"))


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (flags override IMGSEARCH_* variables)")
    for flag, metavar in _CLIENT_FLAGS.items():
        group.add_argument(_flag(flag), metavar=metavar, help=field_help(ClientSettings, flag))
    group.add_argument(
        "--tls", action="store_true", default=None, help=field_help(ClientSettings, "tls")
    )


def _add_query_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=_non_negative,
        default=0,
        help="matches to show per query (default: 0 = the server's default_limit)",
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per query, a line each"
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="imgsearch",
        description="Find the source of a cropped or degraded image.",
        epilog="exit codes: 0 done (a source found), 1 no source found, 2 usage or input "
        "error, 3 no server answered, 4 the operation failed",
    )
    parser.add_argument("--version", action="version", version=f"imgsearch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="index and watch FOLDER, serve both services")
    serve.add_argument("folder", nargs="?", help="folder of images (default: bundled samples)")
    _add_server_flags(serve, qdrant_required=False)

    embedder = commands.add_parser("embedder", help="run the Embedder alone against Qdrant")
    embedder.add_argument("folder", help="folder of images to index and watch")
    _add_server_flags(embedder, qdrant_required=True)

    searcher = commands.add_parser("searcher", help="run the Searcher alone against Qdrant")
    searcher.add_argument("--folder", help="the watched folder, to allow path queries")
    _add_server_flags(searcher, qdrant_required=True)

    search = commands.add_parser("search", help="find the sources of images (a running server)")
    search.add_argument("images", nargs="+", metavar="IMAGE", help="query image files; - = stdin")
    _add_query_flags(search)
    search.add_argument(
        "--min-score", type=_score, default=0.0, help="hide matches scoring less (default: 0)"
    )
    search.add_argument(
        "--subfolder", default="", help="only search inside this folder (default: everywhere)"
    )
    _add_client_flags(search)

    find = commands.add_parser(
        "find", help="index FOLDER (or bring its index up to date), search, print, exit"
    )
    find.add_argument("images", nargs="+", metavar="IMAGE", help="query image files; - = stdin")
    find.add_argument(
        "--in",
        dest="folder",
        required=True,
        metavar="FOLDER",
        help="the folder of images (required)",
    )
    find.add_argument(
        "--data",
        metavar="DIR",
        help="where FOLDER's index is kept (default: a folder of its own under "
        "IMGSEARCH_DATA_DIR/find)",
    )
    _add_query_flags(find)
    find.add_argument("--quiet", action="store_true", help="no progress bar")

    status = commands.add_parser("status", help="what is indexed, pending and failed")
    status.add_argument("--json", action="store_true", help="print JSON")
    _add_client_flags(status)
    duplicates = commands.add_parser(
        "duplicates", help="groups of files in the folder that are copies of each other"
    )
    output = duplicates.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per group")
    output.add_argument("--csv", action="store_true", help="one CSV row per pair, with a header")
    duplicates.add_argument(
        "--neighbours",
        type=int,
        default=0,
        metavar="N",
        help="nearest images each image is compared with (default: the server's, 8)",
    )
    duplicates.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_client_flags(duplicates)
    rescan = commands.add_parser("rescan", help="scan the whole folder now")
    rescan.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="confirm removals the mass-deletion guard held back",
    )
    _add_client_flags(rescan)

    backup = commands.add_parser("backup", help="copy the whole index (vectors too) to one file")
    backup.add_argument("file", type=Path, metavar="OUT_FILE", help="'.gz' name: compressed")
    restore = commands.add_parser("restore", help="load a backup file into the index")
    restore.add_argument("file", type=Path, metavar="IN_FILE")
    restore.add_argument(
        "--merge", action="store_true", help="upsert into a collection that is not empty"
    )
    optimize = commands.add_parser(
        "optimize",
        help="build the search graph of the embedded index (service stopped; large folders)",
    )
    optimize.add_argument("--data", metavar="DIR", help=setting_help("data_dir"))
    optimize.add_argument("--collection", help=setting_help("collection"))
    for sub in (backup, restore):
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--data", metavar="DIR", help=setting_help("data_dir"))
        where.add_argument("--qdrant-url", help=setting_help("qdrant_url"))
        sub.add_argument("--collection", help=setting_help("collection"))
    for sub in (backup, restore, optimize):
        # An embedded index keeps one collection per model: this picks which.
        sub.add_argument("--model", metavar="NAME|ONNX", help=setting_help("model"))
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {flag: setting for flag, (setting, _) in _SERVER_FLAGS.items()}
    flags["qdrant_url"] = "qdrant_url"
    overrides: dict[str, Any] = {
        setting: getattr(args, flag)
        for flag, setting in flags.items()
        if getattr(args, flag, None) is not None
    }
    if getattr(args, "folder", None):
        overrides["folder"] = Path(args.folder)
    return Settings(**overrides)


def _run_services(args: argparse.Namespace) -> int:
    # Imported here so that `imgsearch search` starts fast and needs no model.
    from imgsearch.app import Application
    from imgsearch.rpc.server import wait_for_shutdown_signal

    settings = _settings(args)
    configure_logging(settings.log.log_level, settings.log.log_format)
    app = Application(
        settings,
        with_embedder=args.command in ("serve", "embedder"),
        with_searcher=args.command in ("serve", "searcher"),
    )
    try:
        app.start()
        wait_for_shutdown_signal()
    finally:
        app.stop()
    return EXIT_OK


def _run_find(args: argparse.Namespace) -> int:
    from imgsearch.find import find_data_dir, find_in_folder

    queries = [(name, _read_query(name)) for name in args.images]
    readable = [(name, data) for name, data in queries if data is not None]
    folder = Path(args.folder)
    data_dir = Path(args.data) if args.data else find_data_dir(StoreSettings().data_dir, folder)
    settings = Settings(folder=folder, data_dir=data_dir, metrics_listen=None, http_listen=None)
    configure_logging("WARNING", settings.log.log_format)
    results = find_in_folder(settings, readable, args.limit, quiet=args.quiet)
    worst = EXIT_INPUT if len(readable) < len(queries) else EXIT_OK
    for name, outcome in results:
        if isinstance(outcome, ImgsearchError):
            _error(f"{outcome} ({name})")
            worst = max(worst, _exit_for(outcome))
        else:
            worst = max(worst, _print_search(name, outcome, args, several=len(queries) > 1))
    return worst


def _collection(settings: Settings, *, server: bool) -> str:
    """The collection the settings' model serves from (embedded indexes: one per model)."""
    from imgsearch.backbones import choose_model
    from imgsearch.store import collection_for

    store = settings.store.model_copy(
        update={"qdrant_url": settings.store.qdrant_url if server else None}
    )
    if server or store.collection:
        return collection_for(store, "")
    return collection_for(store, choose_model(settings.encoder.model).key)


def _run_backup(args: argparse.Namespace) -> int:
    from imgsearch.store import StoreLocation
    from imgsearch.store.backup import backup_to_file, restore_from_file

    full = _settings(args)
    settings = full.store
    location = (
        StoreLocation(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
        if settings.qdrant_url and not args.data
        else StoreLocation(path=settings.engine_store_path, engine=settings.engine)
    )
    collection = _collection(full, server=location.url is not None)
    if args.command == "backup":
        count = backup_to_file(location, collection, args.file)
        print(f"backed up {count} points of {collection!r} from {location} to {args.file}")
    else:
        count = restore_from_file(location, collection, args.file, merge=args.merge)
        print(f"restored {count} points from {args.file} into {collection!r} in {location}")
    return EXIT_OK


def _run_optimize(args: argparse.Namespace) -> int:
    from imgsearch.settings import StoreEngine
    from imgsearch.store.edge import EdgeStore

    full = _settings(args)
    settings = full.store
    if settings.engine is not StoreEngine.EDGE:
        raise ImgsearchError(
            f"only the embedded qdrant-edge index has a graph to build, not {settings.engine}"
        )
    store_path = settings.edge_store_path
    collection = _collection(full, server=False)
    store = EdgeStore.open_existing(store_path, collection=collection)
    if store is None:
        raise ImgsearchError(f"no embedded index {collection!r} in {store_path}")
    try:
        print(
            f"building the search graph of {store_path / collection} "
            "(about 13 minutes per million vectors on 2 cores)...",
            flush=True,
        )
        started = time.monotonic()
        indexed = store.build_graph()
        print(
            f"done in {time.monotonic() - started:.1f} s: {indexed} of {store.point_count()} "
            "vectors are in the graph"
        )
    finally:
        store.close()
    return EXIT_OK


def _client(args: argparse.Namespace) -> Client:
    """A client from IMGSEARCH_* variables (token: IMGSEARCH_TOKEN) overridden by flags."""
    flags = (*_CLIENT_FLAGS, "tls")
    config = ClientSettings(**{f: getattr(args, f) for f in flags if getattr(args, f) is not None})
    client = Client(
        config.server,
        timeout=config.timeout,
        token=config.token.get_secret_value() if config.token else None,
        tls=config.tls,
        tls_ca=config.tls_ca,
        tls_cert=config.tls_cert,
        tls_key=config.tls_key,
    )
    try:
        client.wait_ready(timeout=min(config.timeout, 3.0))
    except ServerUnreachableError:
        client.close()
        raise
    return client


def _read_query(name: str) -> bytes | None:
    """The bytes of a query file (`-`: standard input), or None after saying why not."""
    try:
        return sys.stdin.buffer.read() if name == _STDIN else Path(name).read_bytes()
    except OSError as exc:
        _error(f"cannot read {name}: {exc.strerror or exc}", "check the path")
        return None


def _print_search(
    name: str, response: searcher_pb2.SearchResponse, args: argparse.Namespace, *, several: bool
) -> int:
    if args.json:
        print(search_json(name, response), flush=True)
    else:
        if several:
            print(f"\n== {name}")
        print(search_text(response), flush=True)
    return EXIT_OK if source_found(response) else EXIT_NO_SOURCE


def _run_search(args: argparse.Namespace, client: Client) -> int:
    worst = EXIT_OK
    several = len(args.images) > 1
    for name in args.images:
        data = _read_query(name)
        if data is None:
            worst = max(worst, EXIT_INPUT)
            continue
        try:
            response = client.search(
                data, args.limit, min_score=args.min_score, subfolder=args.subfolder
            )
        except grpc.RpcError as exc:
            code = _RPC_EXIT.get(exc.code(), EXIT_FAILED)
            if code != EXIT_INPUT or exc.code() in _RPC_HINT:
                raise  # the server or the connection, not this query: stop here
            _error(f"{exc.code().name}: {exc.details()} ({name})")
            worst = max(worst, code)
            continue
        worst = max(worst, _print_search(name, response, args, several=several))
    return worst


def _run_duplicates(args: argparse.Namespace, client: Client) -> int:
    """Progress on standard error (a terminal), the groups on standard output as they come."""
    from tqdm import tqdm

    bar: tqdm[Any] | None = None
    groups: list[searcher_pb2.DuplicateGroup] = []
    images = 0
    if args.csv:
        print(",".join(CSV_HEADER), flush=True)
    try:
        for event in client.duplicates(args.neighbours):
            if event.WhichOneof("event") == "progress":
                images = event.progress.total
                if bar is None and not args.quiet and sys.stderr.isatty():
                    bar = tqdm(total=images, unit="img", desc="comparing", file=sys.stderr)
                if bar is not None:
                    bar.update(event.progress.done - bar.n)
                continue
            if bar is not None:
                bar.close()
                bar = None
            groups.append(event.group)
            number = len(groups)
            if args.json:
                print(group_json(event.group), flush=True)
            elif args.csv:
                print(group_csv_rows(number, event.group), flush=True)
            else:
                print(("\n" if number > 1 else "") + group_text(number, event.group), flush=True)
    finally:
        if bar is not None:
            bar.close()
    if not (args.json or args.csv):
        print(("\n" if groups else "") + duplicates_summary(groups, images), flush=True)
    return EXIT_OK


def _run_client(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.command == "search":
            return _run_search(args, client)
        if args.command == "duplicates":
            return _run_duplicates(args, client)
        if args.command == "rescan":
            client.rescan(allow_mass_delete=args.allow_mass_delete)
            print("rescan started; follow it with `imgsearch status`")
            return EXIT_OK
        status = client.status()
        print(status_json(status) if args.json else status_text(status), flush=True)
    return EXIT_OK


def _error(message: str, hint: str | None = None) -> None:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def _exit_for(exc: ImgsearchError) -> int:
    return next(code for kind, code in _EXIT_FOR if isinstance(exc, kind))


def _validation_message(exc: ValidationError) -> str:
    """Pydantic's errors on one line: `field: reason; field: reason`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
        for error in exc.errors()
    )


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "search": _run_client,
    "status": _run_client,
    "duplicates": _run_client,
    "rescan": _run_client,
    "find": _run_find,
    "backup": _run_backup,
    "restore": _run_backup,
    "optimize": _run_optimize,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS.get(args.command, _run_services)(args)
    except BrokenPipeError:
        # The reader went away (`imgsearch status | head -1`): nothing more to say to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except grpc.RpcError as exc:
        _error(f"{exc.code().name}: {exc.details()}", _RPC_HINT.get(exc.code()))
        return _RPC_EXIT.get(exc.code(), EXIT_FAILED)
    except ValidationError as exc:
        _error(f"invalid setting: {_validation_message(exc)}", "imgsearch --help")
        return EXIT_INPUT
    except ImgsearchError as exc:
        hint = next((h for kind, h in _HINT_FOR if isinstance(exc, kind)), None)
        _error(str(exc), hint)
        return _exit_for(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
