"""Small helpers shared by the sections: statistics, process memory, load, child processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

CACHE = Path(os.environ.get("IMGSEARCH_BENCH_CACHE", Path.home() / ".cache" / "imgsearch-bench"))
SPEED_CACHE = CACHE / "speed"


def log(message: str) -> None:
    """Progress line on stderr with the wall clock and the machine load."""
    load = os.getloadavg()[0]
    print(f"[speed {time.strftime('%H:%M:%S')} load {load:.1f}] {message}", file=sys.stderr)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def latency_summary(seconds: Sequence[float]) -> JSON:
    """p50 / p99 / mean in milliseconds."""
    return {
        "n": len(seconds),
        "p50_ms": 1e3 * statistics.median(seconds),
        "p99_ms": 1e3 * percentile(seconds, 0.99),
        "mean_ms": 1e3 * statistics.fmean(seconds),
    }


def memory() -> JSON:
    """This process's resident memory in MiB: total, anonymous, file-backed (mmap), peak."""
    fields = {"VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb", "VmHWM": "peak_mb"}
    out: JSON = {}
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                out[fields[key]] = int(value.split()[0]) / 1024
    return out


def machine() -> JSON:
    """What a result was measured on: CPU, cores, Python, and the commit of the code (marked
    when the service code had uncommitted changes)."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "imgsearch"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "commit": commit + ("+uncommitted service changes" if dirty else ""),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class Stopwatch:
    """Accumulates wall time per stage name."""

    totals: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[stage] = self.totals.get(stage, 0.0) + time.perf_counter() - start


def _child(target: Callable[[JSON], JSON], config: JSON, conn: Connection) -> None:
    try:
        conn.send({"ok": True, "result": target(config)})
    except BaseException as exc:  # reported to the parent, which decides
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        conn.close()


def _read_partial(config: JSON) -> JSON:
    partial = config.get("partial")
    if partial and Path(partial).is_file():
        try:
            loaded: JSON = json.loads(Path(partial).read_text())
            return loaded
        except ValueError:  # being written
            return {}
    return {}


def run_isolated(
    target: Callable[[JSON], JSON],
    config: JSON,
    timeout: float,
    stop_when: Callable[[JSON], str | None] | None = None,
) -> JSON:
    """Run `target(config)` in a fresh (spawned) process, so its memory is its own.

    Returns its result, or {"error": ...} when it failed, ran past `timeout` seconds, or
    `stop_when(partial results)` returned a reason (then it is killed). `target` may write
    partial results to config["partial"] (a path): they are returned under "partial" when it
    does not finish.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(target, config, sender), daemon=True)
    process.start()
    sender.close()
    outcome: JSON | None = None
    deadline = time.monotonic() + timeout
    stopped = f"no result within {timeout:.0f} s (stopped)"
    while time.monotonic() < deadline:
        if receiver.poll(1.0):
            try:
                outcome = receiver.recv()
            except EOFError:
                outcome = None
            break
        reason = stop_when(_read_partial(config)) if stop_when else None
        if reason:
            stopped = reason
            break
    if process.is_alive():
        process.join(5.0)
    if process.is_alive():
        process.kill()  # only the child this function started, by its handle
        process.join()
    if outcome is None:
        outcome = {"ok": False, "error": stopped}
    if outcome["ok"]:
        result: JSON = outcome["result"]
        return result
    return {"error": outcome["error"], "partial": _read_partial(config)}


def write_partial(config: JSON, result: JSON) -> None:
    """Save what a child has measured so far (see run_isolated)."""
    partial = config.get("partial")
    if partial:
        Path(partial).write_text(json.dumps(result))


def write_result(out: Path, name: str, result: JSON, text: str) -> None:
    """A benchmark's committed pair, `name`.json (raw) and `name`.md (table), and the table
    on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / f"{name}.md").write_text(text)
    print(text)
