"""A real Prometheus scrapes a real `imgsearch serve` process on loopback.

Every PromQL expression of the Grafana dashboard must parse and return data, and the alert
rules of deploy/prometheus must load and evaluate cleanly. The same process, run with
`--log-format json`, must log only JSON lines and stop cleanly on SIGTERM.

`IMGSEARCH_DASHBOARD_PNG=docs/dashboard.png pytest tests/e2e/test_prometheus.py` also renders the
dashboard from this run (scripts/render_dashboard.py, needs matplotlib), after
IMGSEARCH_DASHBOARD_SECONDS (default 180) more seconds of varied traffic.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from imgsearch.rpc.client import Client
from imgsearch.rpc.healthcheck import check
from imgsearch.settings import BUNDLED_SAMPLES
from tests.conftest import SAMPLE_SUFFIXES, wait_until
from tests.imaging import crop, encode, load, variants
from tests.processes import free_port

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "imgsearch.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval becomes here (1 s scrapes)


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run scripts/install_test_tools.sh (make test does)")
    return path


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, as Prometheus will see it."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (f"{p['title']} [{t['refId']}]", t["expr"].replace("$__rate_interval", RATE_INTERVAL))
        for p in panels
        for t in p["targets"]
    ]


class Prometheus:
    """A prometheus server on a free loopback port with a temporary config and database."""

    def __init__(self, workdir: Path, metrics_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.time()
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ALERTS)],
                    "scrape_configs": [
                        {
                            "job_name": "imgsearch",
                            "static_configs": [
                                {
                                    "targets": [f"127.0.0.1:{metrics_port}"],
                                    "labels": {"component": "serve"},
                                }
                            ],
                        }
                    ],
                }
            )
        )
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                require("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout=30, interval=0.2)

    def _ready(self) -> bool:
        assert self.process.poll() is None, "prometheus exited; see prometheus.log"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400 for a bad query, with the reason
            body = json.load(exc)
        assert body["status"] == "success", f"{path} {params}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return list(data["result"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    address: str
    metrics_port: int
    folder: Path
    log: Path
    http_port: int


class Traffic:
    """Searches (a few bad), and files landing in and leaving the folder, from a thread."""

    def __init__(self, served: ServeProcess, photos: list[Path]) -> None:
        self._served = served
        self._queries = [encode(crop(load(p), 0.5), quality=50) for p in photos[:4]]
        self._new_files = variants(photos, 12)
        self._stop = threading.Event()
        self.searches = 0
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()

    def _run(self) -> None:
        started = time.monotonic()
        rescans = 0
        with Client(self._served.address, timeout=10) as client:
            for tick in range(10_000):  # bounded: at most ~45 min at 4 ticks a second
                if self._stop.is_set():
                    return
                # Varying load, so that the rendered dashboard shows more than flat lines.
                elapsed = time.monotonic() - started
                burst = 1 + int(2 * (1 + math.sin(elapsed / 20)))
                for i in range(burst):
                    client.search(self._queries[(tick + i) % len(self._queries)], limit=5)
                    self.searches += 1
                if tick % 5 == 2:  # the same search over HTTP, and the index panel's poll
                    web = f"http://127.0.0.1:{self._served.http_port}"
                    query = self._queries[tick % len(self._queries)]
                    assert httpx.post(f"{web}/v1/search", content=query, timeout=10).is_success
                    assert httpx.get(f"{web}/v1/status", timeout=10).is_success
                if tick % 7 == 3:
                    try:
                        client.search(b"\xff\xd8\xff\xe0 not an image")
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                if tick % 6 == 1:  # a new image lands, an older one leaves
                    n = tick // 6
                    (self._served.folder / f"landed-{n}.jpg").write_bytes(
                        self._new_files[n % len(self._new_files)]
                    )
                    (self._served.folder / f"landed-{n - 3}.jpg").unlink(missing_ok=True)
                if elapsed > 60 * rescans + 30:  # a full scan now and then (rescan_interval)
                    client.rescan()
                    rescans += 1
                self._stop.wait(0.25)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    workdir = tmp_path_factory.mktemp("serve")
    folder = workdir / "photos"
    folder.mkdir()
    for photo in sorted(BUNDLED_SAMPLES.iterdir()):
        if photo.suffix in SAMPLE_SUFFIXES:
            shutil.copy2(photo, folder / photo.name)
    address = f"127.0.0.1:{free_port()}"
    metrics_port = free_port()
    http_port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "imgsearch.cli", "serve", str(folder)),
                *("--data", str(workdir / "data"), "--listen", address),
                *("--metrics-listen", f"127.0.0.1:{metrics_port}", "--log-format", "json"),
                *("--http-listen", f"127.0.0.1:{http_port}"),
                # The sample folder is small: learn the whitening anyway, so that its panel
                # has data (and the JSON log check sees the learner's log line).
                *("--whitening-min-images", "5"),
            ],
            stderr=stderr,
            env={**os.environ, "IMGSEARCH_SETTLE_SECONDS": "0.2"},
        )
    try:
        wait_until(lambda: check(address, timeout=1) == "SERVING", timeout=60, interval=0.2)
        with Client(address, timeout=10) as client:
            wait_until(lambda: client.status().state == "watching", timeout=60, interval=0.2)
        yield ServeProcess(process, address, metrics_port, folder, log, http_port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_every_dashboard_query_returns_data(served: ServeProcess, tmp_path: Path) -> None:
    photos = sorted(p for p in BUNDLED_SAMPLES.iterdir() if p.suffix in SAMPLE_SUFFIXES)
    targets = dashboard_targets()
    assert len(targets) >= 15
    prometheus = Prometheus(tmp_path, served.metrics_port)
    try:
        wait_until(
            lambda: [r["value"][1] for r in prometheus.query('up{job="imgsearch"}')] == ["1"],
            timeout=30,
            interval=0.2,
        )
        for _, expr in targets:  # each parses (a bad expression is a 400 with the reason)
            prometheus.query(expr)
        with Traffic(served, photos) as traffic:
            missing = dict(targets)

            def all_answered() -> bool:
                for title, expr in list(missing.items()):
                    values = [float(r["value"][1]) for r in prometheus.query(expr)]
                    if any(math.isfinite(v) for v in values):
                        del missing[title]
                return not missing

            try:
                wait_until(all_answered, timeout=40, interval=0.5)
            except AssertionError:
                pytest.fail(f"no data from these dashboard queries: {missing}")
            assert traffic.searches > 0

            # The alert rules loaded and evaluate without error; none fires on a healthy run.
            groups = prometheus.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            assert len(rules) >= 8
            assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"]]
            assert not [r["name"] for r in rules if r["state"] == "firing"]

            if out := os.environ.get("IMGSEARCH_DASHBOARD_PNG"):
                _render(prometheus, Path(out), traffic)
    finally:
        prometheus.stop()


def _render(prometheus: Prometheus, out: Path, traffic: Traffic) -> None:
    time.sleep(float(os.environ.get("IMGSEARCH_DASHBOARD_SECONDS", "180")))
    subprocess.run(
        [
            *(sys.executable, str(ROOT / "scripts" / "render_dashboard.py")),
            *("--prometheus", prometheus.url, "--dashboard", str(DASHBOARD), "--out", str(out)),
            *("--start", str(prometheus.started), "--end", str(time.time())),
            *("--rate-interval", RATE_INTERVAL),
        ],
        check=True,
        timeout=120,
    )
    assert traffic.searches > 0


def test_health_check_command(served: ServeProcess) -> None:
    """What the container HEALTHCHECK runs: exit 0 when serving, 1 when nothing answers."""
    ok = subprocess.run(
        [sys.executable, "-m", "imgsearch.rpc.healthcheck", served.address],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, f"{served.address}: SERVING")
    by_env = subprocess.run(
        [sys.executable, "-m", "imgsearch.rpc.healthcheck", "--service", "imgsearch.v1.Searcher"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "IMGSEARCH_LISTEN": f"0.0.0.0:{served.address.rpartition(':')[2]}"},
    )
    assert by_env.returncode == 0, by_env.stdout
    nobody = f"127.0.0.1:{free_port()}"
    down = subprocess.run(
        [sys.executable, "-m", "imgsearch.rpc.healthcheck", nobody, "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (down.returncode, down.stdout.strip()) == (1, f"{nobody}: UNAVAILABLE")


def test_json_logs_and_clean_stop(served: ServeProcess) -> None:
    """Runs last in this module: it stops the shared process."""
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    lines = served.log.read_text().splitlines()
    assert len(lines) >= 3
    records = []
    for line in lines:
        record = json.loads(line)  # every line, not just most: a stray print would break it
        assert isinstance(record, dict), line
        assert {"levelname", "name", "message", "timestamp"} <= record.keys(), line
        records.append(record)
    messages = [r["message"] for r in records]
    assert any(m.startswith("grpc listening") for m in messages)
    assert messages[-1] == "stopped"
    assert not any("Traceback" in line for line in lines)
