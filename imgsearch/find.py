"""`imgsearch find QUERY... --in FOLDER`: index a folder, search it, print, exit.

For the user who wants a program rather than a service: the parts of `imgsearch serve`
(encoder, store, indexer, verdict) in this one process, without gRPC or watching. The index is
kept between calls, each folder in a data directory of its own, so a second call on the same
folder embeds only what changed since.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from prometheus_client import REGISTRY
from tqdm import tqdm

from imgsearch.app import indexing_encoder, open_settings_store
from imgsearch.embedder.failures import failure_log_for
from imgsearch.embedder.folder import prepare_folder
from imgsearch.embedder.indexer import Indexer
from imgsearch.errors import ImgsearchError
from imgsearch.model import ImageEncoder
from imgsearch.searcher.service import response_of
from imgsearch.searcher.verdict import Ranker
from imgsearch.searcher.verify import Verifier
from imgsearch.searcher.whitening import FolderWhitening
from imgsearch.settings import Settings
from imgsearch.v1 import searcher_pb2

_POLL = 0.2
_BUSY = {"starting", "scanning", "indexing"}
_SHOWN_FAILURES = 5

Outcome = searcher_pb2.SearchResponse | ImgsearchError


def find_data_dir(data_dir: Path, folder: Path) -> Path:
    """The default index folder of `folder`: its own, under DATA_DIR/find."""
    resolved = folder.expanduser().resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return data_dir / "find" / f"{resolved.name or 'root'}-{digest}"


def find_in_folder(
    settings: Settings, queries: list[tuple[str, bytes]], limit: int, *, quiet: bool
) -> list[tuple[str, Outcome]]:
    """Bring the index of `settings`' folder up to date, then rank the folder's images for
    each query; a query that cannot be searched gets its error instead of a response."""
    encoder = ImageEncoder(settings.model)
    store = open_settings_store(settings, encoder)
    try:
        folder = prepare_folder(settings, store)
        indexer = Indexer(
            folder,
            indexing_encoder(settings, encoder),
            store,
            settings.index,
            failure_log_for(settings),
        )
        indexer.start()
        try:
            _index(indexer, folder, quiet=quiet)
        finally:
            indexer.stop()
        whitening = None
        if settings.verdict.whitening_min_images > 0:
            whitening = FolderWhitening(
                store,
                min_images=max(2, settings.verdict.whitening_min_images),
                dimensions=settings.verdict.whitening_dims,
                sample=settings.verdict.whitening_sample,
            )
            whitening.refresh()  # learned now when the folder is big enough
        verifier = (
            Verifier(folder, limits=encoder.limits, max_file_bytes=settings.index.max_file_bytes)
            if settings.verdict.verify_top > 0
            else None
        )
        ranker = Ranker(store, settings.verdict, verifier, whitening)
        results: list[tuple[str, Outcome]] = []
        for name, data in queries:
            try:
                ranking = ranker.rank(
                    encoder.describe_query(data), limit or settings.verdict.default_limit
                )
            except ImgsearchError as exc:
                results.append((name, exc))
            else:
                results.append((name, response_of(ranking, encoder.name)))
        return results
    finally:
        store.close()


def _embedded() -> int:
    """Images embedded by this process so far (the indexer's own counter)."""
    value = REGISTRY.get_sample_value("imgsearch_index_operations_total", {"op": "embedded"})
    return int(value or 0)


def _index(indexer: Indexer, folder: Path, *, quiet: bool) -> None:
    """Wait for the first scan's work to be done, with a progress bar on a terminal."""
    started = time.monotonic()
    embedded_before = _embedded()
    with tqdm(
        desc=f"indexing {folder.name}",
        unit="img",
        total=0,
        disable=True if quiet else None,  # None: only on a terminal
        file=sys.stderr,
        leave=False,
    ) as bar:
        while True:
            ready = indexer.wait_ready(_POLL)
            status = indexer.status()
            done = status.indexed + status.failed
            bar.total = done + status.pending
            bar.n = done
            bar.refresh()
            if ready and status.pending == 0 and status.state not in _BUSY:
                break
            if not ready or status.pending:
                time.sleep(_POLL)
    status = indexer.status()
    if not quiet:
        print(
            f"{folder}: {status.indexed} images indexed ({_embedded() - embedded_before} new), "
            f"{status.failed} failed ({time.monotonic() - started:.1f} s)",
            file=sys.stderr,
        )
        for path, reason in status.failures[:_SHOWN_FAILURES]:
            print(f"  cannot index {path}: {reason}", file=sys.stderr)
    if status.held_deletions:
        print(
            f"{status.held_deletions} files gone from {folder} are still in its index (the "
            "mass-deletion guard): start over with a new --data DIR if they are gone for good",
            file=sys.stderr,
        )
