"""The keypoint check's further looks: where the view it checked confirms no candidate, the
whole query file is checked again in finer detail (the closer look) and the check goes on
down the ranking (the deep check); under LOOK_FURTHER_FLOOR only the first look is taken.
Real photos, a real qdrant-edge store, the real verifier; the closer look's query a
rendered page whose photo block the layout finder missed, so the view checked is the whole
page at the model's size (the photo ~85 px wide in it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from imgsearch.backbones import Contract
from imgsearch.descriptors import WHOLE_IMAGE_BOX, DescriptorSet
from imgsearch.model import QueryDescription
from imgsearch.model.preprocess import DecodeLimits, decode_image
from imgsearch.searcher.verdict import LOOK_FURTHER_FLOOR, VERIFY_FLOOR, Ranker
from imgsearch.searcher.verify import Verifier
from imgsearch.settings import TUNING, Fit, Verdict, VerdictSettings
from imgsearch.store import FileState, StoreLocation, VectorStore, open_store
from tests.imaging import crop, encode, load, on_page, shuffled_tiles
from tests.registry import candidates_described, verifications

DIM = 16


def _photo_store(path: Path, photos: list[Path], vectors: NDArray[np.float32]) -> VectorStore:
    """A store holding vectors[i] as photos[i]'s descriptor."""
    store = open_store(StoreLocation(path=path), collection="t", dimensions=DIM, model="m")
    store.upsert(
        [
            (
                FileState(photo.name, 100, 1_000, f"sha{i}"),
                DescriptorSet(vectors[i : i + 1], WHOLE_IMAGE_BOX),
            )
            for i, photo in enumerate(photos)
        ]
    )
    return store


@pytest.fixture
def store(tmp_path: Path, sample_photos: list[Path]) -> Iterator[VectorStore]:
    """One random vector per photo: the descriptor's part is not under test."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(len(sample_photos), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = _photo_store(tmp_path / "q", sample_photos, vectors)
    yield store
    store.close()


@pytest.fixture
def apart(
    tmp_path: Path, photo_folder: Path, sample_photos: list[Path]
) -> Iterator[tuple[Ranker, Verdict]]:
    """A ranker over a store with one axis per photo: a query's cosine with each photo is
    whatever the test makes it (`_scoring`); the model's default verdict settings."""
    store = _photo_store(tmp_path / "apart", sample_photos, np.eye(DIM, dtype=np.float32))
    settings = VerdictSettings().for_model(TUNING[Contract.EMBEDDING])
    ranker = Ranker(store, settings, Verifier(photo_folder, max_file_bytes=1 << 26), threads=1)
    yield ranker, settings
    ranker.close()
    store.close()


def _scoring(scores: dict[int, float]) -> NDArray[np.float32]:
    """A query vector of `apart` whose cosine with photo i is scores[i], 0 with the rest."""
    vector = np.zeros(DIM, dtype=np.float32)
    for i, score in scores.items():
        vector[i] = score
    vector[-1] = np.sqrt(1.0 - np.sum(vector**2))  # an axis no photo has
    return vector[None]


def test_a_photo_small_on_a_page_is_confirmed_by_the_closer_look(
    photo_folder: Path, store: VectorStore, sample_photos: list[Path]
) -> None:
    # Every search is checked: no margin reaches the threshold.
    settings = VerdictSettings(match_threshold=1.5).for_model(TUNING[Contract.EMBEDDING])
    ranker = Ranker(store, settings, Verifier(photo_folder, max_file_bytes=1 << 26), threads=1)
    confirmed, unconfirmed_without, closer = 0, 0, 0.0  # closer: a metric delta
    for photo in sample_photos:
        page, _ = on_page(load(photo), share=0.2)
        data = encode(page, quality=85)
        whole_page = decode_image(data, 288, DecodeLimits(), fit=Fit.SHORTER)
        target = store.vector_of(photo.name)
        assert target is not None
        looks = verifications("closer")
        first_look_only = ranker.rank(QueryDescription(target, whole_page), 3).matches[0]
        assert verifications("closer") == looks  # no file: no closer look
        top = ranker.rank(QueryDescription(target, whole_page, file=data), 3).matches[0]
        assert top.path == photo.name
        confirmed += top.match and top.inliers >= settings.min_inliers
        unconfirmed_without += not first_look_only.match
        closer += verifications("closer") - looks
        if top.match:
            # The region is the photo's outline in the source: most of it.
            x0, y0, x1, y1 = top.box
            assert (x1 - x0) * (y1 - y0) > 0.6, photo.name
    # At the model's size the page's photo kept too few keypoints for 6 of the 9 photos; the
    # whole page at 720 px confirms all but the rocket launch (its smooth sky and smoke).
    assert unconfirmed_without >= 5
    assert closer >= unconfirmed_without
    assert confirmed >= len(sample_photos) - 1


class _CallerGoneError(Exception):
    pass


def test_the_deep_check_stops_when_the_caller_has_gone(
    photo_folder: Path, store: VectorStore, sample_photos: list[Path]
) -> None:
    """Neither look confirms a query made of a photo's shuffled tiles, so the check goes on
    down the ranking, reading candidates ahead on the ranker's thread; when the caller goes
    (deadline, cancel) the candidates not begun are dropped, not read and described."""
    settings = VerdictSettings(match_threshold=1.5).for_model(TUNING[Contract.EMBEDDING])
    ranker = Ranker(store, settings, Verifier(photo_folder, max_file_bytes=1 << 26), threads=1)
    deeper = min(settings.verify_deep, len(sample_photos)) - settings.verify_top
    assert deeper >= 3
    tiles = encode(shuffled_tiles(load(sample_photos[5]), 10))
    seen = decode_image(tiles, 288, DecodeLimits(), fit=Fit.SHORTER)
    vector = store.vector_of(sample_photos[5].name)
    assert vector is not None
    deep_before, described_before = verifications("deep"), candidates_described()

    def still_wanted() -> None:
        if verifications("deep") > deep_before:  # the deep check has begun: the caller goes
            raise _CallerGoneError

    with pytest.raises(_CallerGoneError):
        ranker.rank(QueryDescription(vector, seen), 3, still_wanted=still_wanted)
    ranker.close()  # waits for the one candidate begun
    assert verifications("deep") - deep_before == 1
    assert candidates_described() - described_before <= settings.verify_top + 1


def test_a_crop_scoring_under_the_further_looks_floor_is_confirmed_by_the_first_look(
    apart: tuple[Ranker, Verdict], sample_photos: list[Path]
) -> None:
    """A fifth of a photo whose descriptor barely resembles its source (bench/accuracy: a
    fifth of a grass or food photo, 0.20-0.30) and resembles another photo a little more is
    still checked, and its source confirmed and first."""
    ranker, settings = apart
    source, look_alike = 2, 4
    data = encode(crop(load(sample_photos[source]), 0.2, (0.3, 0.6)), quality=80)
    seen = decode_image(data, 288, DecodeLimits(), fit=Fit.SHORTER)
    vector = _scoring({look_alike: 0.25, source: 0.23})
    matches = ranker.rank(QueryDescription(vector, seen, file=data), 3).matches
    assert [m.path for m in matches[:2]] == [
        sample_photos[source].name,
        sample_photos[look_alike].name,
    ]
    assert matches[0].match and matches[0].inliers >= settings.min_inliers
    assert not matches[1].match


def test_under_the_further_looks_floor_only_the_first_look_is_taken(
    apart: tuple[Ranker, Verdict], sample_photos: list[Path]
) -> None:
    """A query no look confirms (a photo's shuffled tiles): scoring under VERIFY_FLOOR it is
    not checked; between the floors only its first `verify_top` candidates are, in the view
    the model saw; above LOOK_FURTHER_FLOOR the closer look and the deep check follow. A
    no-source query scoring 0.20-0.30 thus pays for one look, not three."""
    ranker, _ = apart
    data = encode(shuffled_tiles(load(sample_photos[5]), 10))
    seen = decode_image(data, 288, DecodeLimits(), fit=Fit.SHORTER)
    outcomes = ("confirmed", "rejected", "closer", "deep")

    def looks(score: float) -> dict[str, float]:
        before = {o: verifications(o) for o in outcomes}
        ranker.rank(QueryDescription(_scoring({5: score}), seen, file=data), 3)
        return {o: verifications(o) - before[o] for o in outcomes}

    assert VERIFY_FLOOR <= 0.20 < LOOK_FURTHER_FLOOR
    none = dict.fromkeys(outcomes, 0.0)
    assert looks(VERIFY_FLOOR - 0.05) == none
    assert looks((VERIFY_FLOOR + LOOK_FURTHER_FLOOR) / 2) == {**none, "rejected": 1}
    assert looks(LOOK_FURTHER_FLOOR + 0.05) == {**none, "rejected": 1, "closer": 1, "deep": 1}
