"""The `imgsearch` command: run the services, or query a running server."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from pydantic import ValidationError

from imgsearch.errors import ImgsearchError
from imgsearch.logs import configure_logging
from imgsearch.rpc.client import Client
from imgsearch.settings import ClientSettings, Settings
from imgsearch.v1 import embedder_pb2, searcher_pb2

log = logging.getLogger("imgsearch")

# CLI flag -> Settings field, for the flags every server command shares.
_SERVER_FLAGS: dict[str, str] = {
    "listen": "listen",
    "data": "data_dir",
    "metrics_listen": "metrics_listen",
    "qdrant_url": "qdrant_url",
    "collection": "collection",
    "model": "model_path",
    "watch_mode": "watch_mode",
    "match_threshold": "match_threshold",
    "whitened_match_threshold": "whitened_match_threshold",
    "whitening_min_images": "whitening_min_images",
    "log_level": "log_level",
    "log_format": "log_format",
    "tls_cert": "tls_cert",
    "tls_key": "tls_key",
    "tls_client_ca": "tls_client_ca",
}


def _add_server_flags(parser: argparse.ArgumentParser, *, qdrant_required: bool) -> None:
    group = parser.add_argument_group("server (flags override IMGSEARCH_* variables)")
    group.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (127.0.0.1:50051)")
    group.add_argument("--data", metavar="DIR", help="embedded index folder")
    group.add_argument("--metrics-listen", metavar="HOST:PORT", help="'' to disable /metrics")
    group.add_argument("--qdrant-url", required=qdrant_required, help="Qdrant server URL")
    group.add_argument("--collection", help="Qdrant collection name (images)")
    group.add_argument("--model", metavar="ONNX", help="backbone meeting the model contract")
    group.add_argument("--watch-mode", choices=["auto", "native", "polling"])
    group.add_argument(
        "--match-threshold",
        type=float,
        help="margin that means 'the source' on raw scores (0.55; folders below "
        "--whitening-min-images)",
    )
    group.add_argument(
        "--whitened-match-threshold",
        type=float,
        help="the same on whitened scores (0.54; folders of --whitening-min-images or more)",
    )
    group.add_argument(
        "--whitening-min-images",
        type=int,
        metavar="N",
        help="learn a whitening once the folder has N images (1000); 0 = never",
    )
    group.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    group.add_argument("--log-format", choices=["text", "json"])
    group.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate")
    group.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    group.add_argument("--tls-client-ca", metavar="PEM", help="require client certs (mTLS)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgsearch", description="Find the source of a cropped or degraded image."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="index and watch FOLDER, serve both services")
    serve.add_argument("folder", nargs="?", help="folder of images (default: bundled samples)")
    _add_server_flags(serve, qdrant_required=False)

    embedder = commands.add_parser("embedder", help="run the Embedder alone against Qdrant")
    embedder.add_argument("folder", help="folder of images to index and watch")
    _add_server_flags(embedder, qdrant_required=True)

    searcher = commands.add_parser("searcher", help="run the Searcher alone against Qdrant")
    searcher.add_argument("--folder", help="the watched folder, to allow path queries")
    _add_server_flags(searcher, qdrant_required=True)

    search = commands.add_parser("search", help="find the source of an image")
    search.add_argument("image", type=Path, help="query image file")
    search.add_argument("--limit", type=int, default=0, help="matches to show (server default)")
    search.add_argument("--min-score", type=float, default=0.0)
    search.add_argument("--subfolder", default="", help="only search inside this folder")

    status = commands.add_parser("status", help="what is indexed, pending and failed")
    rescan = commands.add_parser("rescan", help="scan the whole folder now")
    rescan.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="confirm removals the mass-deletion guard held back",
    )
    for sub in (search, status, rescan):
        group = sub.add_argument_group("connection (flags override IMGSEARCH_* variables)")
        group.add_argument("--server", metavar="HOST:PORT", help="(127.0.0.1:50051)")
        group.add_argument("--timeout", type=float, help="seconds (30)")
        group.add_argument("--tls", action="store_true", default=None, help="use TLS")
        group.add_argument("--tls-ca", metavar="PEM", help="CA that signed the server cert")
        group.add_argument("--tls-cert", metavar="PEM", help="client certificate (mTLS)")
        group.add_argument("--tls-key", metavar="PEM", help="client key (mTLS)")
        sub.add_argument("--json", action="store_true", help="print JSON")

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
    optimize.add_argument("--data", metavar="DIR", help="embedded store's data dir")
    optimize.add_argument("--collection", help="collection name (images)")
    for sub in (backup, restore):
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--data", metavar="DIR", help="embedded store's data dir (stopped)")
        where.add_argument("--qdrant-url", help="Qdrant server URL")
        sub.add_argument("--collection", help="Qdrant collection name (images)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        field: getattr(args, flag)
        for flag, field in _SERVER_FLAGS.items()
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
    app.start()
    try:
        wait_for_shutdown_signal()
    finally:
        app.stop()
    return 0


def _run_backup(args: argparse.Namespace) -> int:
    from imgsearch.store import StoreLocation
    from imgsearch.store.backup import backup_to_file, restore_from_file

    settings = _settings(args)
    location = (
        StoreLocation(url=settings.store.qdrant_url, api_key=settings.store.qdrant_api_key)
        if settings.store.qdrant_url and not args.data
        else StoreLocation(path=settings.store.engine_store_path, engine=settings.store.engine)
    )
    collection = settings.store.collection
    if args.command == "backup":
        count = backup_to_file(location, collection, args.file)
        print(f"backed up {count} points of {collection!r} from {location} to {args.file}")
    else:
        count = restore_from_file(location, collection, args.file, merge=args.merge)
        print(f"restored {count} points from {args.file} into {collection!r} in {location}")
    return 0


def _run_optimize(args: argparse.Namespace) -> int:
    from imgsearch.settings import StoreEngine
    from imgsearch.store.edge import EdgeStore

    settings = _settings(args).store
    if settings.engine is not StoreEngine.EDGE:
        raise ImgsearchError(
            f"only the embedded qdrant-edge index has a graph to build, not {settings.engine}"
        )
    store_path = settings.edge_store_path
    store = EdgeStore.open_existing(store_path, collection=settings.collection)
    if store is None:
        raise ImgsearchError(f"no embedded index {settings.collection!r} in {store_path}")
    try:
        print(
            f"building the search graph of {store_path / settings.collection} "
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
    return 0


def _print_search(response: searcher_pb2.SearchResponse) -> None:
    if not response.matches:
        print("no images indexed yet")
        return
    print(f"{'rank':>4}  {'score':>6}  {'margin':>6}  {'verdict':<7}  path")
    for rank, match in enumerate(response.matches, 1):
        verdict = "SOURCE" if match.match else "similar"
        print(f"{rank:>4}  {match.score:6.3f}  {match.margin:6.3f}  {verdict:<7}  {match.path}")
    sources = [m.path for m in response.matches if m.match]
    if sources:
        print(f"\nverdict: source found: {', '.join(sources)}")
    else:
        best = response.matches[0].margin
        print(
            f"\nverdict: no source in the index "
            f"(best margin {best:.3f} < threshold {response.match_threshold:.3f})"
        )
    if response.whitened:
        print("scores are whitened (learned on this folder's images)")


def _print_status(status: embedder_pb2.GetStatusResponse) -> None:
    print(f"folder:   {status.folder}")
    print(f"state:    {status.state}" + (f" ({status.observer} events)" if status.observer else ""))
    print(f"indexed:  {status.indexed}")
    print(f"pending:  {status.pending}")
    if status.pending and status.index_rate:
        print(f"rate:     {status.index_rate:.1f} images/s, eta {status.eta_seconds:.0f} s")
    if status.held_deletions:
        print(
            f"held:     {status.held_deletions} missing files kept in the index "
            "(confirm with `imgsearch rescan --allow-mass-delete`)"
        )
    print(f"failed:   {status.failed}")
    for failure in status.failures:
        print(f"  {failure.path}: {failure.reason}")
    print(f"model:    {status.model} ({status.dimensions} dimensions)")


def _client(args: argparse.Namespace) -> Client:
    """A client from IMGSEARCH_* variables (token: IMGSEARCH_TOKEN) overridden by flags."""
    flags = ("server", "timeout", "tls", "tls_ca", "tls_cert", "tls_key")
    config = ClientSettings(**{f: getattr(args, f) for f in flags if getattr(args, f) is not None})
    return Client(
        config.server,
        timeout=config.timeout,
        token=config.token.get_secret_value() if config.token else None,
        tls=config.tls,
        tls_ca=config.tls_ca,
        tls_cert=config.tls_cert,
        tls_key=config.tls_key,
    )


def _run_client(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.command == "search":
            try:
                data = args.image.read_bytes()
            except OSError as exc:
                print(f"error: cannot read {args.image}: {exc.strerror}", file=sys.stderr)
                return 2
            response = client.search(
                data, args.limit, min_score=args.min_score, subfolder=args.subfolder
            )
            if args.json:
                print(json.dumps(MessageToDict(response), indent=2))
            else:
                _print_search(response)
        elif args.command == "rescan":
            client.rescan(allow_mass_delete=args.allow_mass_delete)
            print("rescan started; follow it with `imgsearch status`")
        else:
            status = client.status()
            if args.json:
                print(json.dumps(MessageToDict(status), indent=2))
            else:
                _print_status(status)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in ("search", "status", "rescan"):
            return _run_client(args)
        if args.command in ("backup", "restore"):
            return _run_backup(args)
        if args.command == "optimize":
            return _run_optimize(args)
        return _run_services(args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"error: invalid setting: {exc}", file=sys.stderr)
        return 2
    except ImgsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
