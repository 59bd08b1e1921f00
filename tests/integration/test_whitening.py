"""Whitening learned on the folder's own descriptors: the maths, the learning lifecycle in the
searcher, and whitened searches over gRPC."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from imgsearch.backbones import EFFICIENTNET, Contract
from imgsearch.descriptors import DescriptorSet
from imgsearch.model.whitening import learn_whitening
from imgsearch.searcher.whitening import FolderWhitening
from imgsearch.settings import TUNING, StoreEngine
from imgsearch.store import FileState, StoreLocation, VectorStore, open_store
from tests.conftest import Served, wait_until
from tests.imaging import crop, encode, load

DIM = 48


def _shared_look(count: int, seed: int = 0) -> np.ndarray:
    """Unit vectors that all share one strong direction (as CNN descriptors of photos do)
    plus an individual part: unrelated rows still have a raw cosine around 0.8."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=DIM)
    rows = 2.0 * common + 0.5 * rng.normal(size=(count, DIM)) * np.linspace(2, 0.2, DIM)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


def test_whitening_decorrelates_and_sharpens() -> None:
    vectors = _shared_look(400)
    white = learn_whitening(vectors, dimensions=16)
    assert white.dimensions == 16 and white.images == 400
    projected = (vectors - white.mean) @ white.projection
    covariance = projected.T @ projected / len(vectors)
    # Unit variance in every kept direction (a little less: the shrinkage), no correlation.
    assert np.allclose(np.diag(covariance), 1.0, atol=0.02)
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 1e-3
    whitened = white.apply(vectors)
    assert whitened.shape == (400, 16)
    assert np.allclose(np.linalg.norm(whitened, axis=1), 1.0, atol=1e-5)
    unrelated_raw = float(np.mean(vectors[:200] * vectors[200:]) * DIM)
    unrelated_white = float(np.mean(np.sum(whitened[:200] * whitened[200:], axis=1)))
    assert unrelated_raw > 0.6
    assert abs(unrelated_white) < 0.1
    # A slightly changed copy of a row stays its closest row.
    copy = vectors[7] + 0.05 * np.random.default_rng(1).normal(size=DIM).astype(np.float32)
    assert int(np.argmax(whitened @ white.apply(copy))) == 7


def test_whitening_keeps_at_most_the_input_dimensions_and_needs_two_rows() -> None:
    vectors = _shared_look(10)
    assert learn_whitening(vectors, dimensions=4096).dimensions == DIM
    assert np.isfinite(learn_whitening(vectors, dimensions=DIM).projection).all()  # 10 < 48
    with pytest.raises(ValueError, match="at least 2"):
        learn_whitening(vectors[:1])


@pytest.fixture(params=[StoreEngine.EDGE, StoreEngine.LOCAL], ids=str)
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[VectorStore]:
    """Both store classes: EdgeStore, and QdrantStore (local mode: the server's code path)."""
    store = open_store(
        StoreLocation(path=tmp_path / "q", engine=request.param),
        collection="t",
        dimensions=DIM,
        model="m",
    )
    yield store
    store.close()


def _fill(store: VectorStore, vectors: np.ndarray, start: int = 0) -> None:
    box = np.array([[0, 0, 1, 1]], dtype=np.float32)
    store.upsert(
        [
            (FileState(f"{start + i}.jpg", 1, 1, f"sha{start + i}"), DescriptorSet(v[None], box))
            for i, v in enumerate(vectors)
        ]
    )


def _gauge() -> float | None:
    return REGISTRY.get_sample_value("imgsearch_whitening_images")


def test_folder_whitening_learns_at_the_threshold_and_relearns_on_growth(
    store: VectorStore,
) -> None:
    vectors = _shared_look(200)
    now = [0.0]
    folder = FolderWhitening(
        store, min_images=100, dimensions=8, sample=150, check_interval=10, clock=lambda: now[0]
    )
    _fill(store, vectors[:60])
    assert folder.refresh() is None  # 60 < 100: raw scores
    assert _gauge() == 0
    _fill(store, vectors[60:120], start=60)
    learned = folder.refresh()
    assert learned is not None and learned.images == 120 and learned.dimensions == 8
    assert _gauge() == 120
    _fill(store, vectors[120:140], start=120)  # +17%: keep it
    assert folder.refresh() is learned
    _fill(store, vectors[140:200], start=140)  # +67%: learn again, from at most 150
    relearned = folder.refresh()
    assert relearned is not learned and relearned is not None and relearned.images == 150
    assert np.allclose(store.sample_vectors(150), store.sample_vectors(150))  # a stable sample
    store.delete_paths([f"{i}.jpg" for i in range(150)])  # down to 50 images: off again
    assert folder.refresh() is None
    assert _gauge() == 0


def test_folder_whitening_learns_in_the_background_and_survives_a_store_outage(
    store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(store, _shared_look(30))
    now = [0.0]
    folder = FolderWhitening(
        store, min_images=20, dimensions=8, sample=100, check_interval=5, clock=lambda: now[0]
    )
    store_answers = threading.Event()
    count = store.count
    monkeypatch.setattr(store, "count", lambda: store_answers.wait(30) and count())
    assert folder.current() is None  # a slow store holds up the learning, not the search
    store_answers.set()
    wait_until(lambda: folder.current() is not None, timeout=30)
    store.close()  # the store goes away: searches keep the last whitening, nothing raises
    now[0] = 100.0
    kept = folder.current()
    assert kept is not None
    assert folder.refresh() is kept


@pytest.mark.parametrize("regions", [False, True], ids=["global", "regions"])
def test_whitened_search_over_grpc(
    tmp_path: Path, sample_photos: list[Path], serve: Callable[..., Served], regions: bool
) -> None:
    """A folder at whitening_min_images is searched with whitened scores: the source of a
    crop is still first and called the source (here by the geometric check: a whitening of
    9 photos fits them so closely that even the crop's score drops, which is why small
    folders keep raw scores by default), unrelated photos score near 0 instead of near the
    raw cosine, and the response says which threshold applies."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sample_photos:
        shutil.copy2(photo, folder / photo.name)
    query = encode(crop(load(sample_photos[0]), 0.6, (0.0, 0.0)))

    # Whitening serves the feature-map backbone (the copy-detection model keeps raw scores).
    raw = serve(
        folder,
        data_dir=tmp_path / "raw",
        whitening_min_images=0,
        regions=regions,
        model=EFFICIENTNET,
    )
    raw.wait_idle()
    plain = raw.client.search(query, limit=len(sample_photos))
    raw.stop()
    assert not plain.whitened
    assert plain.match_threshold == pytest.approx(TUNING[Contract.FEATURE_MAP].match_threshold)

    served = serve(
        folder,
        data_dir=tmp_path / "white",
        whitening_min_images=len(sample_photos),
        model=EFFICIENTNET,
    )
    served.wait_idle()
    assert served.app.whitening is not None
    wait_until(lambda: served.app.whitening.refresh() is not None, timeout=30)
    white = served.client.search(query, limit=len(sample_photos))
    assert white.whitened
    assert white.match_threshold == pytest.approx(
        TUNING[Contract.FEATURE_MAP].whitened_match_threshold
    )
    assert (
        Path(white.matches[0].path).name
        == sample_photos[0].name
        == Path(plain.matches[0].path).name
    )
    assert white.matches[0].match
    assert white.matches[0].margin == pytest.approx(
        white.matches[0].score - 0.5 * np.mean([m.score for m in white.matches]), abs=1e-4
    )
    others_raw = np.mean([m.score for m in plain.matches[1:]])
    others_white = np.mean([m.score for m in white.matches[1:]])
    assert others_raw > 0.3
    assert abs(others_white) < 0.1  # 9 photos: the whitening fits them closely
    assert white.matches[0].score > others_white + 0.1
    assert sorted(m.path for m in white.matches) == sorted(m.path for m in plain.matches)
