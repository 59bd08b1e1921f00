"""What could not be indexed, kept beside the index so that a restart remembers it.

Without it, every start re-read every corrupt file and warned about each again. A file is
looked at again only when its size or mtime changed (or a Rescan asks for it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from imgsearch.embedder.reconcile import Version
from imgsearch.settings import Settings

log = logging.getLogger(__name__)

_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    size: int
    mtime_ns: int
    # The cause may pass (permission denied, too many open files): tried again with back-off,
    # and again at each start.
    transient: bool = False


class FailureLog:
    """A JSON file of failed and ignored (non-image) files with the version that was tried;
    `None` as the path keeps nothing (then every start tries them again)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    def load(self) -> tuple[dict[str, Failure], dict[str, Version]]:
        if self._path is None:
            return {}, {}
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            if data.get("format") != _FORMAT:
                return {}, {}
            failures = {
                str(path): Failure(str(item[0]), int(item[1]), int(item[2]), bool(item[3:4] == [1]))
                for path, item in data["failures"].items()
            }
            ignored = {
                str(path): (int(size), int(mtime))
                for path, (size, mtime) in data["ignored"].items()
            }
        except FileNotFoundError:
            return {}, {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "failure list unreadable, files will be tried again file=%s error=%s",
                self._path,
                exc,
            )
            return {}, {}
        return failures, ignored

    def save(self, failures: dict[str, Failure], ignored: dict[str, Version]) -> None:
        """Replace the file with these lists (atomically: a crash leaves the old or the new)."""
        if self._path is None:
            return
        data = {
            "format": _FORMAT,
            "failures": {
                p: [f.reason, f.size, f.mtime_ns, int(f.transient)] for p, f in failures.items()
            },
            "ignored": {p: list(version) for p, version in ignored.items()},
        }
        partial = self._path.with_name(self._path.name + ".partial")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # ASCII escapes keep names that are not UTF-8 (surrogates) writable and exact.
            partial.write_text(json.dumps(data), encoding="utf-8")
            partial.replace(self._path)
        except OSError as exc:
            log.warning("cannot save the failure list file=%s error=%s", self._path, exc)


def failure_log_for(settings: Settings, collection: str) -> FailureLog:
    """Beside the embedded index of `collection` (deleting it to start over forgets them
    too), or in the data directory for a Qdrant server's collection."""
    store = settings.store
    folder = store.data_dir if store.qdrant_url else store.engine_store_path
    return FailureLog(folder / f"{collection}.failures.json")
