"""Shared fixtures: the real bundled model, real sample photos, real servers on loopback."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imgsearch.app import Application
from imgsearch.model import ImageEncoder
from imgsearch.model.preprocess import quiet_decoder_warnings
from imgsearch.rpc.client import Client
from imgsearch.settings import BUNDLED_SAMPLES, ModelSettings, Settings

# Servers the tests start (in process or as `imgsearch serve` children) open no HTTP port
# unless a test asks for one: the default, 8080, is a fixed port that parallel or leftover
# servers would share.
os.environ.setdefault("IMGSEARCH_HTTP_LISTEN", "")

SAMPLE_SUFFIXES = {".jpg", ".png", ".webp"}
# How long a test's threads get to finish after its teardown before they count as leaked.
_THREAD_GRACE = 10.0


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running: every part that starts threads must stop
    them (as watchdog's own suite checks)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + _THREAD_GRACE
    leaked: list[threading.Thread] = []
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads left running: {sorted(t.name for t in leaked)}")


@pytest.fixture(autouse=True)
def _no_warnings(recwarn: pytest.WarningsRecorder) -> Iterator[None]:
    """Fail a test during which anything warned: a warning is a bug report nobody reads.

    `recwarn` shows every warning; the decoder's deliberate silence is put back above it.
    """
    quiet_decoder_warnings()
    yield
    if recwarn.list:
        shown = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in recwarn]
        pytest.fail("warnings:\n" + "\n".join(shown))


def wait_until(
    predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Poll until `predicate()` is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {predicate}")


@pytest.fixture(scope="session")
def sample_photos() -> list[Path]:
    photos = sorted(p for p in BUNDLED_SAMPLES.iterdir() if p.suffix in SAMPLE_SUFFIXES)
    assert len(photos) >= 8, "the bundled sample folder should hold real photos"
    return photos


@pytest.fixture(scope="session")
def encoder() -> ImageEncoder:
    return ImageEncoder(ModelSettings(model="efficientnet-lite0"))


@pytest.fixture
def photo_folder(tmp_path: Path, sample_photos: list[Path]) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sample_photos:
        shutil.copy2(photo, folder / photo.name)
    return folder


def make_settings(folder: Path, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "folder": folder,
        "data_dir": data_dir,
        "listen": "127.0.0.1:0",
        "metrics_listen": None,
        "http_listen": None,
        "settle_seconds": 0.2,
        "poll_interval": 0.2,
        "rescan_interval": 0,
    }
    values.update(overrides)
    return Settings(**values)


class Served:
    """A running Application and a client connected to it."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.client = Client(f"127.0.0.1:{app.port}", timeout=30)
        self._stopped = False

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until the indexer has scanned and has nothing pending."""
        assert self.app.indexer is not None
        assert self.app.indexer.wait_ready(timeout)
        wait_until(lambda: self.client.status().pending == 0, timeout)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.client.close()
            self.app.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start real servers (both services, embedded Qdrant) on 127.0.0.1; stopped at teardown."""
    started: list[Served] = []

    def start(
        folder: Path, data_dir: Path | None = None, store: Any = None, **overrides: Any
    ) -> Served:
        settings = make_settings(folder, data_dir or tmp_path / "data", **overrides)
        app = Application(settings, store=store)
        app.start()
        served = Served(app)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
