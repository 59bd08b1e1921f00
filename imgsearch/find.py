"""`imgsearch find QUERY... --in FOLDER`: index a folder, search it, print, exit.

For the user who wants a program rather than a service: `app.FolderSearch` runs the parts of
`imgsearch serve` in this one process; this module shows its progress and collects the
answers. The index is kept between calls, each folder in a data directory of its own, so a
second call on the same folder embeds only what changed since.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from prometheus_client import REGISTRY
from tqdm import tqdm

from imgsearch.app import FolderSearch
from imgsearch.errors import ImgsearchError
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
    search = FolderSearch(settings)
    try:
        search.start()
        _show_progress(search, quiet=quiet)
        results: list[tuple[str, Outcome]] = []
        for name, data in queries:
            try:
                results.append((name, search.search(data, limit)))
            except ImgsearchError as exc:
                results.append((name, exc))
        return results
    finally:
        search.close()


def _embedded() -> int:
    """Images embedded by this process so far (the indexer's own counter)."""
    value = REGISTRY.get_sample_value("imgsearch_index_operations_total", {"op": "embedded"})
    return int(value or 0)


def _show_progress(search: FolderSearch, *, quiet: bool) -> None:
    """Wait for the first scan's work to be done, with a progress bar on a terminal."""
    started = time.monotonic()
    embedded_before = _embedded()
    with tqdm(
        desc=f"indexing {search.folder.name}",
        unit="img",
        total=0,
        disable=True if quiet else None,  # None: only on a terminal
        file=sys.stderr,
        leave=False,
    ) as bar:
        while True:
            ready = search.wait_ready(_POLL)
            status = search.status()
            done = status.indexed + status.failed
            bar.total = done + status.pending
            bar.n = done
            bar.refresh()
            if ready and status.pending == 0 and status.state not in _BUSY:
                break
            if not ready or status.pending:
                time.sleep(_POLL)
    if quiet:
        return
    print(
        f"{search.folder}: {status.indexed} images indexed ({_embedded() - embedded_before} "
        f"new), {status.failed} failed ({time.monotonic() - started:.1f} s)",
        file=sys.stderr,
    )
    for path, reason in status.failures[:_SHOWN_FAILURES]:
        print(f"  cannot index {path}: {reason}", file=sys.stderr)
    if status.held_deletions:
        print(
            f"{status.held_deletions} files gone from {search.folder} are still in its index "
            "(the mass-deletion guard): start over with a new --data DIR if they are gone for "
            "good",
            file=sys.stderr,
        )
