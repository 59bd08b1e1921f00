"""The three methods compared, behind one small protocol: index a folder, search with bytes.

- `SiftBovw`: the user's original method — SIFT keypoints, an 800-word k-means vocabulary,
  tf-idf bag-of-visual-words histograms compared by cosine.
- `CentreCropAvgPool`: the textbook CNN global descriptor — the same bundled EfficientNet-Lite0,
  short side 224, centre crop 224, average pooling, exact cosine search.
- `Production`: imgsearch itself — a real `Application` (embedder + searcher, embedded Qdrant)
  serving the corpus folder on 127.0.0.1, queried through `imgsearch.rpc.client.Client`. Whatever
  the production descriptor, search and verdict become, this measures them unchanged.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from PIL import Image
from prometheus_client import REGISTRY

from bench.accuracy.imaging import open_rgb
from bench.accuracy.progress import Progress, log
from imgsearch.app import Application
from imgsearch.rpc.client import Client
from imgsearch.settings import Settings


class Candidate(NamedTuple):
    id: str  # path relative to the indexed folder, '/' separators
    score: float  # what the method's threshold judges (imgsearch: the margin)
    is_match: bool  # the method's own verdict: "this is the source"
    # How the method ranks its answers across queries, where it is not `score` (imgsearch:
    # the served `confidence`, which puts the verdict first).
    confidence: float | None = None

    @property
    def ranked_by(self) -> float:
        return self.score if self.confidence is None else self.confidence


class Method(Protocol):
    """What the benchmark needs from a method."""

    name: str
    label: str

    def index(self, root: Path, files: Sequence[str]) -> None:
        """Index `files` (relative to `root`, which holds exactly these files)."""

    def search(self, query: bytes, k: int) -> list[Candidate]:
        """The `k` best candidates for an encoded query image, best first."""

    def describe(self) -> dict[str, object]:
        """Settings worth reporting (thresholds, sizes, model)."""

    def close(self) -> None: ...


def _top_k(
    scores: NDArray[np.float32], ids: Sequence[str], k: int, threshold: float
) -> list[Candidate]:
    k = min(k, len(ids))
    if k == 0:
        return []
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [Candidate(ids[i], float(scores[i]), bool(scores[i] >= threshold)) for i in best]


# ---- (a) SIFT bag of visual words -----------------------------------------------------------


class SiftBovw:
    name = "sift-bovw"
    label = "SIFT BoVW (original)"

    def __init__(
        self,
        words: int = 800,
        max_side: int = 640,
        keypoints: int = 500,
        vocabulary_sample: int = 150_000,
        match_threshold: float = 0.75,
        seed: int = 4,
    ) -> None:
        self.words = words
        self.max_side = max_side
        self.keypoints = keypoints
        self.vocabulary_sample = vocabulary_sample
        # Hand-set (no calibration came with the original method): just above the best
        # no-source score of a quick-mode run.
        self.match_threshold = match_threshold
        self.seed = seed
        self._sift = cv2.SIFT.create(nfeatures=keypoints)
        self._vocabulary: NDArray[np.float32] = np.zeros((0, 128), np.float32)
        self._vocabulary_norms: NDArray[np.float32] = np.zeros(0, np.float32)
        self._idf: NDArray[np.float32] = np.zeros(0, np.float32)
        self._matrix: NDArray[np.float32] = np.zeros((0, 0), np.float32)
        self._ids: list[str] = []

    def _descriptors(self, data: bytes) -> NDArray[np.float32]:
        grey = np.asarray(open_rgb(data, self.max_side).convert("L"))
        _, descriptors = self._sift.detectAndCompute(grey, None)
        if descriptors is None:
            return np.zeros((0, 128), np.float32)
        return np.asarray(descriptors, dtype=np.float32)

    def index(self, root: Path, files: Sequence[str]) -> None:
        per_image: list[NDArray[np.uint8]] = []
        progress = Progress(f"{self.name}: SIFT on indexed images", len(files))
        for file in files:
            # SIFT values are 0..255 after OpenCV's scaling: uint8 keeps 100k+ images in RAM.
            per_image.append(
                np.clip(self._descriptors((root / file).read_bytes()), 0, 255).astype(np.uint8)
            )
            progress.step()
        progress.close()
        every = np.concatenate([d for d in per_image if len(d)])
        rng = np.random.default_rng(self.seed)
        sample = every[
            rng.choice(len(every), min(len(every), self.vocabulary_sample), replace=False)
        ]
        log(f"{self.name}: k-means, {self.words} words, {len(sample)} of {len(every)} descriptors")
        started = time.monotonic()
        cv2.setRNGSeed(self.seed)
        criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 15, 1e-3)
        labels = np.zeros((len(sample), 1), np.int32)  # ignored with k-means++ seeding
        _, _, centres = cv2.kmeans(
            sample.astype(np.float32), self.words, labels, criteria, 1, cv2.KMEANS_PP_CENTERS
        )
        log(f"{self.name}: k-means took {time.monotonic() - started:.0f}s")
        self._vocabulary = np.asarray(centres, dtype=np.float32)
        self._vocabulary_norms = np.einsum("ij,ij->i", self._vocabulary, self._vocabulary)
        counts = np.stack([self._histogram(d.astype(np.float32)) for d in per_image])
        document_frequency = np.count_nonzero(counts, axis=0)
        self._idf = np.log(len(files) / np.maximum(document_frequency, 1)).astype(np.float32)
        self._matrix = np.stack([self._weigh(c) for c in counts])
        self._ids = list(files)

    def _histogram(self, descriptors: NDArray[np.float32]) -> NDArray[np.float32]:
        if len(descriptors) == 0:
            return np.zeros(self.words, np.float32)
        distances = self._vocabulary_norms[None, :] - 2 * descriptors @ self._vocabulary.T
        words = np.argmin(distances, axis=1)
        return np.bincount(words, minlength=self.words).astype(np.float32)

    def _weigh(self, counts: NDArray[np.float32]) -> NDArray[np.float32]:
        total = counts.sum()
        if total == 0:
            return counts
        vector: NDArray[np.float32] = counts / total * self._idf
        norm = float(np.linalg.norm(vector))
        return vector / np.float32(norm) if norm > 0 else vector

    def search(self, query: bytes, k: int) -> list[Candidate]:
        vector = self._weigh(self._histogram(self._descriptors(query)))
        if not vector.any():
            return []  # no keypoints: nothing to compare
        return _top_k(self._matrix @ vector, self._ids, k, self.match_threshold)

    def describe(self) -> dict[str, object]:
        return {
            "words": self.words,
            "max_side": self.max_side,
            "keypoints": self.keypoints,
            "vocabulary_sample": self.vocabulary_sample,
            "score": "cosine of L2-normalised tf-idf word histograms",
            "match_threshold": self.match_threshold,
        }

    def close(self) -> None:
        self._matrix = np.zeros((0, 0), np.float32)


# ---- (b) centre crop + average pooling ------------------------------------------------------


class CentreCropAvgPool:
    name = "cnn-avg-centre"
    label = "CNN avg-pool, centre crop"

    def __init__(
        self, model: Path, side: int = 224, match_threshold: float = 0.7, threads: int = 2
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.model = model
        self.side = side
        self.match_threshold = match_threshold  # hand-set like the original method's
        self._matrix: NDArray[np.float32] = np.zeros((0, 0), np.float32)
        self._ids: list[str] = []

    def _pixels(self, data: bytes) -> NDArray[np.float32]:
        image = open_rgb(data, max_side=None)
        scale = self.side / min(image.size)
        size = (
            max(self.side, round(image.width * scale)),
            max(self.side, round(image.height * scale)),
        )
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (image.width - self.side) // 2, (image.height - self.side) // 2
        image = image.crop((left, top, left + self.side, top + self.side))
        pixels: NDArray[np.float32] = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
        scaled: NDArray[np.float32] = pixels / np.float32(255)
        return scaled

    def _embed(self, batch: list[NDArray[np.float32]]) -> NDArray[np.float32]:
        (features,) = self._session.run(["features"], {"pixels": np.stack(batch)})
        pooled: NDArray[np.float32] = np.asarray(features, dtype=np.float32).mean(axis=(2, 3))
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-6))
        normalised: NDArray[np.float32] = (pooled / norms).astype(np.float32)
        return normalised

    def index(self, root: Path, files: Sequence[str]) -> None:
        vectors: list[NDArray[np.float32]] = []
        progress = Progress(f"{self.name}: embedding indexed images", len(files))
        for start in range(0, len(files), 16):
            chunk = files[start : start + 16]
            vectors.append(self._embed([self._pixels((root / f).read_bytes()) for f in chunk]))
            progress.step(len(chunk))
        progress.close()
        self._matrix = np.concatenate(vectors)
        self._ids = list(files)

    def search(self, query: bytes, k: int) -> list[Candidate]:
        vector = self._embed([self._pixels(query)])[0]
        return _top_k(self._matrix @ vector, self._ids, k, self.match_threshold)

    def describe(self) -> dict[str, object]:
        return {
            "model": self.model.name,
            "input": f"short side {self.side}, centre crop {self.side}x{self.side}",
            "pooling": "average",
            "score": "cosine",
            "match_threshold": self.match_threshold,
        }

    def close(self) -> None:
        self._matrix = np.zeros((0, 0), np.float32)


# ---- (c) imgsearch, as users get it ---------------------------------------------------------


def _stage_totals() -> dict[str, tuple[float, float]]:
    """(seconds, runs) of each search stage so far, from this process's metrics."""
    out = {}
    for metric in REGISTRY.collect():
        if metric.name != "imgsearch_search_stage_seconds":
            continue
        sums = {s.labels["stage"]: s.value for s in metric.samples if s.name.endswith("_sum")}
        counts = {s.labels["stage"]: s.value for s in metric.samples if s.name.endswith("_count")}
        out = {stage: (sums[stage], counts.get(stage, 0.0)) for stage in sums}
    return out


class Production:
    """A real imgsearch server on 127.0.0.1 over the corpus folder, queried over gRPC; with
    `model`, that backbone instead of the default one."""

    def __init__(self, model: str | None = None, index_timeout: float = 4 * 3600) -> None:
        self.model = model
        self.name = "imgsearch" if model is None else f"imgsearch-{model}"
        self.label = "imgsearch (ours)" if model is None else f"imgsearch, {model}"
        self.index_timeout = index_timeout
        self._data: Path | None = None
        self._app: Application | None = None
        self._client: Client | None = None
        self._described: dict[str, object] = {}
        self._stages_before: dict[str, tuple[float, float]] = {}
        self._queries = 0

    def index(self, root: Path, files: Sequence[str]) -> None:
        self._data = Path(tempfile.mkdtemp(prefix="imgsearch-bench-"))
        # Everything else (model, input size, verdict threshold...) is the product's default,
        # or whatever IMGSEARCH_* variables say, exactly as for `imgsearch serve`.
        settings = Settings(
            folder=root,
            data_dir=self._data,
            listen="127.0.0.1:0",
            metrics_listen=None,
            http_listen=None,
            rescan_interval=0,
            **({} if self.model is None else {"model": self.model}),
        )
        for name in ("imgsearch", "embedder", "searcher"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._app = Application(settings)
        self._app.start()
        self._client = Client(f"127.0.0.1:{self._app.port}", timeout=120)
        progress = Progress(f"{self.name}: server indexing the folder", len(files))
        deadline = time.monotonic() + self.index_timeout
        while True:
            status = self._client.status()
            progress.step(int(status.indexed + status.failed) - progress.done)
            settled = status.state == "watching" and status.pending == 0
            if settled and status.indexed + status.failed >= len(files):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"indexing did not finish in {self.index_timeout}s: {status}")
            time.sleep(0.5)
        progress.close()
        # The searcher learns its whitening in the background once the folder is big enough;
        # learn it now, so that every query is scored the same way.
        whitening = self._app.whitening.refresh() if self._app.whitening is not None else None
        verdict = settings.verdict.for_model(self._app.encoder.tuning)
        self._described = {
            "model": status.model,
            "model_reason": status.model_reason,
            "dimensions": status.dimensions,
            "indexed": status.indexed,
            "failed": status.failed,
            "failures": [f"{f.path}: {f.reason}" for f in status.failures],
            "match_threshold": verdict.whitened_match_threshold
            if whitening is not None
            else verdict.match_threshold,
            "whitened_from": whitening.images if whitening is not None else 0,
            "image_size": self._app.encoder.image_size,
        }
        self._stages_before = _stage_totals()  # the searches start from here
        self._queries = 0

    def search(self, query: bytes, k: int) -> list[Candidate]:
        assert self._client is not None, "index() first"
        self._queries += 1
        response = self._client.search(query, limit=k)
        # The margin is what the product's threshold judges, so it is the score to calibrate
        # by; across queries the product ranks its answers by `confidence` (the verdict,
        # keypoint checks included, then the margin), the number micro-AP pools.
        return [
            Candidate(m.path, float(m.margin), bool(m.match), float(m.confidence))
            for m in response.matches
        ]

    def describe(self) -> dict[str, object]:
        stages = {}
        for name, (total, count) in _stage_totals().items():
            before_total, before_count = self._stages_before.get(name, (0.0, 0.0))
            ran = count - before_count
            if ran > 0 and self._queries:
                stages[name] = {
                    "ms_per_query": 1e3 * (total - before_total) / self._queries,
                    "share": ran / self._queries,
                }
        return {**self._described, "stages": stages}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._app is not None:
            self._app.stop()
        if self._data is not None:
            shutil.rmtree(self._data, ignore_errors=True)
