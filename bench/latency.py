"""How long from a file landing in the folder to it being searchable (issue 3).

Runs the real service in-process (both services, embedded Qdrant, default settings) on a
temporary folder, copies photos in one at a time, and for each one measures the time from
the end of the copy to the moment its point is in the store that Search reads. The same run
measures the native and the polling observer side by side, and a burst of files at once.

    python -m bench.latency [--files 60] [--burst 100] [--out bench/results/latency]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from imgsearch.app import Application
from imgsearch.settings import BUNDLED_SAMPLES, Settings
from tests.imaging import variants

_POLL = 0.005


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _wait_present(app: Application, names: list[str], timeout: float = 120.0) -> dict[str, float]:
    """Monotonic time at which each name's point first appears in the store Search reads."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(names) and time.monotonic() < deadline:
        found = app.store.indexed_among([n for n in names if n not in seen])
        now = time.monotonic()
        seen.update(dict.fromkeys(found, now))
        time.sleep(_POLL)
    return seen


def _run(mode: str, files: list[bytes], burst: list[bytes]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder, staged = Path(tmp) / "photos", Path(tmp) / "staged"
        folder.mkdir()
        staged.mkdir()
        settings = Settings(
            folder=folder,
            data_dir=Path(tmp) / "data",
            listen="127.0.0.1:0",
            metrics_listen=None,
            http_listen=None,
            watch_mode=mode,
            rescan_interval=0,
        )
        app = Application(settings)
        app.start()
        try:
            assert app.indexer is not None
            app.indexer.wait_ready(30)
            latencies = []
            for i, data in enumerate(files):
                name = f"single_{i:03d}.jpg"
                (staged / name).write_bytes(data)
                shutil.copy(staged / name, folder / name)
                landed = time.monotonic()
                appeared = _wait_present(app, [name])[name]
                latencies.append(appeared - landed)
            names = [f"burst_{i:03d}.jpg" for i in range(len(burst))]
            for name, data in zip(names, burst, strict=True):
                (staged / name).write_bytes(data)
            landed_at: dict[str, float] = {}
            collector: dict[str, float] = {}
            thread = threading.Thread(target=lambda: collector.update(_wait_present(app, names)))
            thread.start()
            for name in names:
                shutil.copy(staged / name, folder / name)
                landed_at[name] = time.monotonic()
            thread.join()
            burst_latencies = [collector[n] - landed_at[n] for n in names]
        finally:
            app.stop()
    return {
        "observer": mode,
        "single_p50_s": statistics.median(latencies),
        "single_p95_s": _percentile(latencies, 0.95),
        "single_max_s": max(latencies),
        "burst_files": len(burst),
        "burst_p50_s": statistics.median(burst_latencies),
        "burst_p95_s": _percentile(burst_latencies, 0.95),
        "burst_all_s": max(burst_latencies),
        "single": latencies,
        "burst": burst_latencies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench/results/latency"))
    args = parser.parse_args()
    photos = sorted(p for p in BUNDLED_SAMPLES.iterdir() if p.suffix in {".jpg", ".png", ".webp"})
    images = variants(photos, args.files + args.burst, side=800)
    single, burst = images[: args.files], images[args.files :]
    results = [_run(mode, single, burst) for mode in ("native", "polling")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# Time from a file landing to it being searchable",
        "",
        f"{args.files} JPEGs (crops of the sample photos, up to 800 px) copied one at a time, "
        f"then a burst of {args.burst} copied at once; default settings (settle 0.5 s, "
        "polling every 1 s), embedded Qdrant, both observers in the same run. "
        "Target: p95 < 2 s.",
        "",
        "| observer | single p50 | single p95 | single max | burst p50 | burst p95 | whole burst |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['observer']} | {r['single_p50_s']:.2f} s | {r['single_p95_s']:.2f} s | "
        f"{r['single_max_s']:.2f} s | {r['burst_p50_s']:.2f} s | {r['burst_p95_s']:.2f} s | "
        f"{r['burst_all_s']:.2f} s |"
        for r in results
    ]
    (args.out / "latency.md").write_text("\n".join(lines) + "\n")
    _plot(results, args.out / "latency.png")
    print("\n".join(lines))


def _plot(results: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for result in results:
        for ax, key in zip(axes, ("single", "burst"), strict=True):
            values = sorted(result[key])  # type: ignore[call-overload]
            ax.plot(
                values,
                [i / len(values) for i in range(1, len(values) + 1)],
                label=str(result["observer"]),
            )
    for ax, title in zip(axes, ("one file at a time", "burst"), strict=True):
        ax.axvline(2.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"landing → searchable, {title}")
        ax.set_xlabel("seconds")
        ax.set_ylabel("fraction of files")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
