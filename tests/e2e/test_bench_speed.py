"""The speed benchmark's smoke run produces its tables with sane numbers (no timing limits:
the speed goals live in the benchmark, bench/results/speed/, not in timed tests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.speed import live
from bench.speed.indexing import decode_with_draft
from bench.speed.vectors import DescriptorModel, ExactTopK
from imgsearch.model.preprocess import DecodeLimits, decode_image
from imgsearch.settings import BUNDLED_SAMPLES
from imgsearch.store.base import HNSW_EF

ROOT = Path(__file__).resolve().parents[2]


def quick_run(module: str, out: Path, timeout: float) -> dict[str, Any]:
    """Run `python -m bench.speed.<module> --quick` into `out`; its JSON result."""
    run = subprocess.run(
        [sys.executable, "-m", f"bench.speed.{module}", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, Any] = json.loads((out / f"{module}.json").read_text())
    return result


def test_exact_top_k_fed_in_chunks_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1000, 32)).astype(np.float32)
    queries = rng.standard_normal((7, 32)).astype(np.float32)
    top = ExactTopK(queries, 5)
    for start in range(0, 1000, 128):
        top.add(vectors[start : start + 128], start)
    ids, scores = top.result()
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    assert (ids == expected).all()
    assert (np.diff(scores, axis=1) <= 0).all()


def test_synthetic_descriptors_are_unit_non_negative_and_reproducible() -> None:
    rng = np.random.default_rng(1)
    real = np.abs(rng.standard_normal((60, 64))).astype(np.float32) + 0.5
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    model = DescriptorModel.fit(real, rank=16)
    sample = model.sample(200, seed=3)
    assert sample.shape == (200, 64)
    assert (sample >= 0).all()
    assert np.allclose(np.linalg.norm(sample, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(sample, model.sample(200, seed=3))
    assert not np.array_equal(sample, model.sample(200, seed=4))


def test_draft_replica_matches_the_production_decode() -> None:
    data = (BUNDLED_SAMPLES / "coffee.jpg").read_bytes()
    for side in (384, 224):
        production = decode_image(data, side, DecodeLimits()).pixels
        assert np.array_equal(decode_with_draft(data, side, 1.0), production)


@pytest.mark.timeout(900)
def test_quick_run_writes_a_sane_table(tmp_path: Path) -> None:
    out = tmp_path / "speed"
    run = subprocess.run(
        [sys.executable, "-m", "bench.speed", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    assert "## Targets" in table
    assert "| Indexing, production path" in table
    assert (out / "indexing.png").stat().st_size > 0
    assert (out / "serving.png").stat().st_size > 0

    indexing = results["indexing"]
    production = indexing["production"]
    # "production" is what the service runs by default: qdrant-edge, 2 embedding workers,
    # one whole-image vector per file.
    assert production["config"]["engine"] == "edge"
    assert production["config"]["embed_workers"] == 2
    assert production["config"]["regions"] is False
    assert indexing["indexer_e2e"]["settings"]["engine"] == "edge"
    assert production["rate"] > 0
    assert production["images"] == indexing["images"] > 0
    assert set(production["stages_ms"]) >= {"decode", "model", "preprocess", "upsert"}
    assert all(v >= 0 for v in production["stages_ms"].values())
    assert indexing["indexer_e2e"]["images"] == indexing["images"]
    assert indexing["indexer_e2e"]["rate"] > 0
    assert indexing["limit"]["rate"] > 0
    assert indexing["limit_sequential"]["rate"] > 0
    assert indexing["limit"]["production_fraction"] > 0
    for pipeline in indexing["pipelines"]:
        assert pipeline["rate"] > 0, pipeline
        assert pipeline["ratio_vs_production"] > 0
    for decode in indexing["decode_candidates"]:
        assert decode["replica_matches_production"]
        assert decode["decode_ms"] > 0
        assert -1 <= decode["cosine_vs_full_min"] <= decode["cosine_vs_full_mean"] <= 1 + 1e-5
    for model in indexing["model_candidates"]:
        assert 0 < model["model_ms"] <= model["encode_ms"] * 1.01

    for variant in results["accuracy"]["variants"]:
        assert 0 <= variant["rank1"] <= 1
        assert 0 <= variant["top1_agreement_with_production"] <= 1
    production_variant = results["accuracy"]["variants"][0]
    assert production_variant["top1_agreement_with_production"] == 1.0
    assert production_variant["regions"] is False
    assert any(v["regions"] for v in results["accuracy"]["variants"])

    engines = {run["engine"] for run in results["serving"]}
    assert engines == {"local", "edge"}
    for served in results["serving"]:
        assert "error" not in served, served.get("error")
        for phase in ("grpc_1_client", "grpc_4_clients"):
            latency = served[phase]
            assert 0 < latency["p50_ms"] <= latency["p99_ms"], latency
            assert latency["throughput_qps"] > 0
            assert 0 <= latency["rank1_source"] <= 1
        ann = served["ann"]
        assert 0 < ann["p50_ms"] <= ann["p99_ms"]
        assert served["memory_served"]["rss_mb"] > 0
        assert served["restart"]["open_s"] >= 0
        assert served["points"] == served["images"]  # production: one point per image
        if served["engine"] == "edge":
            assert 0 <= ann["recall_at_10"] <= 1
            assert ann["recall_at_10"] >= 0.9  # int8 scan with rescoring: close to exact
            hnsw = served["hnsw"]  # the offline-built graph, the compared alternative
            assert hnsw["build_s"] >= 0
            assert hnsw["indexed_vectors"] > 0
            after = served["after_graph"]  # a restarted service on the optimized store
            assert after["graph_vectors"] == hnsw["indexed_vectors"]
            assert 0 < after["grpc_1_client"]["p50_ms"] <= after["grpc_1_client"]["p99_ms"]
            assert after["ann"]["recall_at_10"] >= 0.9
            assert after["memory_served"]["rss_mb"] > 0
            assert served["whitening"]["images"] == 0  # 150 images: below whitening_min_images
            assert 0 <= hnsw["ann"]["recall_at_10"] <= 1
            assert 0 < hnsw["ann"]["p50_ms"] <= hnsw["ann"]["p99_ms"]
    assert not math.isnan(results["environment"]["wall_s"])


def test_synthetic_descriptors_of_a_signed_embedding_stay_signed() -> None:
    rng = np.random.default_rng(2)
    real = rng.standard_normal((60, 64)).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    sample = DescriptorModel.fit(real, rank=16).sample(200, seed=3)
    assert (sample < 0).mean() > 0.3  # not clipped at zero like GeM features
    assert np.allclose(np.linalg.norm(sample, axis=1), 1.0, atol=1e-5)


@pytest.mark.timeout(600)
def test_live_graph_quick_run_builds_while_serving(tmp_path: Path) -> None:
    """The smoke run of the live-graph benchmark: the graph is built under traffic, every
    write is there, and the numbers it reports are the ones it measured."""
    out = tmp_path / "live"
    result = quick_run("live", out, timeout=580)
    build, after = result["build"], result["after"]
    assert build["error"] == "" and build["state_after"] == "idle"
    assert build["graph_vectors"] >= result["vectors"]
    assert build["searches_during_build"]["n"] > 10  # searches were served during the build
    assert after["vectors"] == result["vectors"] + result["added"] + build["writes_during_build"]
    assert after["graph_vectors"] == build["graph_vectors"]
    swap = build["swap"]  # where the pause went: its parts fit in the pause measured outside
    parts = swap["close"] + swap["open"] + swap["replay"] + swap["commit"]
    assert 0 < parts <= build["swap_seconds"]
    batches = build["writes_during_build"] // 16  # the indexer's
    assert build["handed_to_builder"][0] > 0  # most applied by the builder, before the swap
    assert swap["replayed"] + sum(build["handed_to_builder"]) <= batches
    assert after["recall_at_10"] >= 0.95
    assert result["restart"]["recall_at_10"] == after["recall_at_10"]
    assert after["recall_at_1"] >= 0.95 and result["restart"]["vectors"] == after["vectors"]
    table = (out / "live.md").read_text()
    assert f"| recall@10 against exact search | {after['recall_at_10']:.3f} |" in table
    by_ef = result["restart"]["hnsw_ef"]  # the restarted graph with each candidate list
    assert set(by_ef) == {str(ef) for ef in {*live.EF_COMPARED, HNSW_EF}}
    assert [ef for ef, row in by_ef.items() if row["production"]] == [str(HNSW_EF)]
    assert by_ef[str(HNSW_EF)]["recall_at_10"] == after["recall_at_10"]
    for ef, row in by_ef.items():
        assert row["search"]["n"] == 200 and row["recall_at_10"] >= 0.95
        label = f"{ef} (production)" if row["production"] else ef
        assert f"| {label} | {row['search']['p50_ms']:.1f} / " in table
    assert (out / "live.png").stat().st_size > 10_000


@pytest.mark.timeout(300)
def test_service_quick_run_compares_query_pass_policies(tmp_path: Path) -> None:
    """The smoke run of the gRPC service benchmark: both ways of sharing the cores, and the
    verifier with no keypoints cached, served every search, and the table shows what the
    JSON measured."""
    out = tmp_path / "service"
    result = quick_run("service", out, timeout=280)
    assert result["fill"]["photos"] + result["fill"]["synthetic"] == result["images"]
    table = (out / "service.md").read_text()
    for policy in ("core slots", "all threads"):
        for clients in ("1", "4"):
            best = result["best"][policy][clients]
            assert best["n"] == (16 if clients == "4" else 8)
            assert 0 <= best["share_with_stage"]["verify"] <= 1
            assert 0 < best["p50_ms"] <= best["p99_ms"]
            assert best["source_first"] > 0.5  # crops and recompressions of indexed photos
            assert best["stage_ms_per_search"]["embed"] > 0
            assert f"| {policy} | {clients} | {best['throughput_qps']:.1f} |" in table
    cold = result["best_cold"]  # one client, no keypoints cached
    assert cold["n"] == 8 and cold["source_first"] > 0.5
    assert f"| core slots, cold keypoints | 1 | {cold['throughput_qps']:.1f} |" in table
    assert result["memory_served"]["anon_mb"] > 0


def test_indexer_quick_run_indexes_both_folders(tmp_path: Path) -> None:
    """The smoke run of the indexing benchmark: the service at its defaults indexed every
    image of both folders, and the table shows what the JSON measured."""
    out = tmp_path / "indexer"
    result = quick_run("indexer", out, timeout=200)
    table = (out / "indexer.md").read_text()
    searching = "1-4 MP JPEGs, a client searching"
    assert set(result["best"]) == {"1-4 MP JPEGs", "JPEGs of <= 1280 px", searching}
    for name, run in result["best"].items():
        assert (run["images"], run["failed"]) == (12, 0)
        assert run["rate"] > 0 and run["cpu_ms_per_image"] > 0
        assert f"| {name} | 12 | {run['rate']:.1f} |" in table


@pytest.mark.timeout(300)
def test_hnsw_quick_run_measures_every_search_setting(tmp_path: Path) -> None:
    out = tmp_path / "hnsw"
    result = quick_run("hnsw", out, timeout=280)
    assert result["graph_vectors"] == result["vectors"]
    table = (out / "hnsw.md").read_text()
    labels = [row["setting"] for row in result["settings"]]
    assert labels[0] == "production" and len(set(labels)) == len(labels) >= 6
    for row in result["settings"]:
        assert row["recall_at_10"] >= 0.95  # 3,000 vectors: every setting is near exact
        assert 0 < row["search"]["p50_ms"] <= row["search"]["p99_ms"]
        assert f"| {row['setting']} | {row['hnsw_ef']} |" in table


def test_live_queries_are_copies_of_stored_vectors() -> None:
    """The recall queries of bench.speed.live are noisy copies of vectors the corpus stores,
    also when more are added after the first fill (the corpus' total sets its series)."""
    rng = np.random.default_rng(4)
    real = rng.standard_normal((60, 64)).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    model = DescriptorModel.fit(real, rank=16)
    stored, added = 2048, 300
    queries = live.make_queries(model, stored + added, 20, among=stored)
    corpus = live.Corpus(model, stored + added, queries)
    while corpus.written < stored:
        corpus.chunk(256)
    _, scores = corpus.exact.result()
    assert (scores[:, 0] > 0.9).all()  # each query's source is there


@pytest.mark.timeout(300)
def test_memory_quick_run_restarts_each_variant(tmp_path: Path) -> None:
    out = tmp_path / "memory"
    result = quick_run("memory", out, timeout=280)
    table = (out / "memory.md").read_text()
    assert [row["on_disk"] for row in result["variants"]] == [False, True]
    for row in result["variants"]:
        assert row["points"] == row["graph_vectors"] == result["vectors"]
        assert 0 < row["memory"]["anon_mb"] < row["memory"]["rss_mb"]
        assert row["calls"]["sha256 lookup"]["n"] == 100  # every lookup found its vector
        assert f"| {row['variant']} | {row['memory']['rss_mb']:.0f} |" in table
