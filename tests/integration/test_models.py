"""The copy-detection backbone in the running service: an index belongs to one model, a page
query finds the photo inside it, and a burst sibling is not called the source.

Real servers on loopback, the real `sscd-mnv4s` model (installed by `make test`) and the
bundled EfficientNet-Lite0, real files and real embedded Qdrant engines.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgsearch.backbones import EFFICIENTNET, SSCD, choose_model
from imgsearch.descriptors import DescriptorSet
from imgsearch.errors import StoreMismatchError
from imgsearch.model.preprocess import Box, DecodeLimits, decode_image, photo_boxes, query_boxes
from imgsearch.settings import Fit
from imgsearch.store import StoreLocation, open_existing_store, open_store
from imgsearch.store.base import FileState
from tests.conftest import Served
from tests.imaging import burst_pair, crop, encode, in_feed, load, on_page

Serve = Callable[..., Served]


def _points_by_model(edge: Path, collection: str) -> tuple[set[str], set[int]]:
    """The `model` payloads and vector sizes of every point of an embedded collection."""
    store = open_existing_store(StoreLocation(path=edge), collection=collection)
    assert store is not None, f"no collection {collection} in {edge}"
    try:
        points = list(store.raw_points())
    finally:
        store.close()
    return {str(p.payload["model"]) for p in points}, {len(p.vector) for p in points}


def test_switching_models_reembeds_beside_the_old_index_and_never_mixes(
    serve: Serve, photo_folder: Path, sample_photos: list[Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    query = encode(crop(load(sample_photos[0]), 0.4))
    keys = {}
    for model in (EFFICIENTNET, SSCD):
        served = serve(photo_folder, data, model=model)
        served.wait_idle(180)
        status = served.client.status()
        assert status.model == model and status.model_key == choose_model(model).key
        assert status.indexed == len(sample_photos) and status.failed == 0
        found = served.client.search(query, limit=3)
        assert found.matches[0].path == sample_photos[0].name
        keys[model] = status.model_key
        served.stop()
    edge = data / "edge"
    for model, key in keys.items():
        models, sizes = _points_by_model(edge, f"images-{key}")
        assert models == {key}, f"{model}'s collection holds vectors of {models}"
        assert sizes == {512 if model == SSCD else 1280}
    # Back to the first model: its collection is still there, complete, and searchable at once.
    served = serve(photo_folder, data, model=EFFICIENTNET)
    assert served.client.status().indexed == len(sample_photos)
    assert served.client.search(query, limit=1).matches[0].path == sample_photos[0].name


def test_a_server_collection_of_another_model_is_refused_and_kept(tmp_path: Path) -> None:
    """A Qdrant server's collection is used as named, so a model switch must not write into
    it: same size or not, another model's collection is refused, and its points stay."""
    where = StoreLocation(path=tmp_path / "qdrant", engine="local")
    vector = np.ones((1, 512), dtype=np.float32) / np.sqrt(512)
    boxes = np.array([[0, 0, 1, 1]], dtype=np.float32)
    store = open_store(where, collection="shared", dimensions=512, model="sscd-mnv4s-aaaa")
    store.upsert([(FileState("a.jpg", 1, 2, "s" * 64), DescriptorSet(vector, boxes))])
    store.close()
    other = open_store(where, collection="shared", dimensions=512, model="my-model-bbbb")
    try:
        with pytest.raises(StoreMismatchError, match="holds vectors of model 'sscd-mnv4s-aaaa'"):
            other.check_model()
    finally:
        other.close()
    with pytest.raises(StoreMismatchError, match="vectors of size 512") as caught:
        open_store(where, collection="shared", dimensions=1280, model="efficientnet-lite0-cccc")
    assert "--collection" in str(caught.value)
    store = open_store(where, collection="shared", dimensions=512, model="sscd-mnv4s-aaaa")
    try:
        assert store.count() == 1
    finally:
        store.close()


COLOUR_PHOTOS = ("chelsea_cat.jpg", "coffee.jpg", "fruits.png", "rocket_launch.jpg")
FEED_PHOTOS = ("chelsea_cat.jpg", "coffee.jpg", "fruits.png", "squirrel.webp")
# Photos on a dark ground (a night sky, a fundus on black): inside the post's black letterbox
# their textured cells are scattered, and only the letterbox, off the page's light ground,
# sets them apart.
DARK_FEED_PHOTOS = ("retina.jpg", "rocket_launch.jpg")
FEED_SLOT = (254 / 1200, 424 / 736, 783 / 1200, 710 / 736)  # tests.imaging.in_feed's letterbox


def _covers(box: Box, truth: Box) -> bool:
    """Mostly the photo, and most of it."""
    x0, y0, x1, y1 = box
    overlap = max(0.0, min(x1, truth[2]) - max(x0, truth[0])) * max(
        0.0, min(y1, truth[3]) - max(y0, truth[1])
    )
    truth_area = (truth[2] - truth[0]) * (truth[3] - truth[1])
    return overlap >= 0.75 * (x1 - x0) * (y1 - y0) and overlap >= 0.8 * truth_area


def test_photo_boxes_find_the_photo_on_a_page_and_nothing_in_a_photo(
    sample_photos: list[Path],
) -> None:
    """Colour photos: a grey photo's colours lie on a line like text's (README "Models")."""
    limits = DecodeLimits()
    photos = [p for p in sample_photos if p.name in COLOUR_PHOTOS]
    assert len(photos) == len(COLOUR_PHOTOS)
    for photo, dark in zip(photos, (False, True, False, True), strict=True):
        image = load(photo)
        page, (left, top, right, bottom) = on_page(image, dark=dark)
        decoded = decode_image(encode(page, quality=85), 288, limits, fit=Fit.SHORTER)
        boxes = photo_boxes(decoded)
        assert boxes, photo.name
        x0, y0, x1, y1 = boxes[0]
        truth = (left / page.width, top / page.height, right / page.width, bottom / page.height)
        overlap = max(0.0, min(x1, truth[2]) - max(x0, truth[0])) * max(
            0.0, min(y1, truth[3]) - max(y0, truth[1])
        )
        # Mostly the photo, and most of it (flat parts of a photo look like page furniture).
        assert overlap >= 0.75 * (x1 - x0) * (y1 - y0), (photo.name, boxes[0], truth)
        assert overlap >= 0.6 * (truth[2] - truth[0]) * (truth[3] - truth[1]), photo.name
        plain = decode_image(encode(image), 288, limits, fit=Fit.SHORTER)
        assert photo_boxes(plain) == [], photo.name
        # The photo small on a dark canvas, no text: a part of a photo, not a page.
        canvas = Image.new("RGB", (1280, 860), (8, 8, 12))
        canvas.paste(image.resize((400, round(400 * image.height / image.width))), (440, 200))
        alone = decode_image(encode(canvas), 288, limits, fit=Fit.SHORTER)
        assert photo_boxes(alone) == [], photo.name


def test_query_boxes_find_the_post_in_a_feed(sample_photos: list[Path]) -> None:
    """A feed screenshot has too little text for the page test; the layout blocks find the
    post's photo among the avatars, the menu and the side card."""
    limits = DecodeLimits()
    photos = [p for p in sample_photos if p.name in FEED_PHOTOS]
    assert len(photos) == len(FEED_PHOTOS)
    only_by_blocks = 0
    for photo in photos:
        feed, (left, top, right, bottom) = in_feed(load(photo))
        decoded = decode_image(encode(feed, quality=85), 288, limits, fit=Fit.SHORTER)
        truth = (left / feed.width, top / feed.height, right / feed.width, bottom / feed.height)
        boxes = query_boxes(decoded)
        assert len(boxes.page) + len(boxes.blocks) <= 2, boxes
        assert any(_covers(box, truth) for box in [*boxes.page, *boxes.blocks]), (photo, boxes)
        without = query_boxes(decoded, blocks=False)
        assert without.blocks == []
        only_by_blocks += not any(_covers(box, truth) for box in without.page)
    assert only_by_blocks >= 2  # the page test alone misses most of them


def test_query_boxes_find_a_dark_post_by_its_letterbox(sample_photos: list[Path]) -> None:
    photos = [p for p in sample_photos if p.name in DARK_FEED_PHOTOS]
    assert len(photos) == len(DARK_FEED_PHOTOS)
    for photo in photos:
        feed, _ = in_feed(load(photo))
        decoded = decode_image(encode(feed, quality=85), 288, DecodeLimits(), fit=Fit.SHORTER)
        boxes = query_boxes(decoded)
        # The letterbox, give or take the card's frame below it (a cell is 1/288 of the side).
        assert any(np.allclose(box, FEED_SLOT, atol=0.04) for box in boxes.blocks), (
            photo.name,
            boxes,
        )


def test_a_photo_inside_a_page_is_found(
    serve: Serve, photo_folder: Path, sample_photos: list[Path]
) -> None:
    served = serve(photo_folder)
    served.wait_idle(120)
    for photo in (p for p in sample_photos if p.name in COLOUR_PHOTOS):
        page, _ = on_page(load(photo), share=0.3)
        found = served.client.search(encode(page, quality=85), limit=3)
        assert found.matches[0].path == photo.name
        assert found.matches[0].match
    for photo in (p for p in sample_photos if p.name in FEED_PHOTOS + DARK_FEED_PHOTOS):
        feed, _ = in_feed(load(photo))
        found = served.client.search(encode(feed, quality=85), limit=3)
        assert found.matches[0].path == photo.name, (photo.name, found.matches)
        assert found.matches[0].match, (photo.name, found.matches)


def test_a_burst_sibling_is_not_called_the_source(
    serve: Serve, photo_folder: Path, sample_photos: list[Path]
) -> None:
    pairs = []
    for photo in sample_photos:
        first, second = burst_pair(load(photo))
        (photo_folder / photo.name).unlink()  # only the frames: no common ancestor indexed
        (photo_folder / f"{photo.stem}-a.jpg").write_bytes(encode(first, quality=92))
        (photo_folder / f"{photo.stem}-b.jpg").write_bytes(encode(second, quality=92))
        pairs.append((photo.stem, first))
    served = serve(photo_folder)
    served.wait_idle(120)
    for stem, first in pairs:
        query = encode(crop(first, 0.5, (0.3, 0.4)), quality=85)
        matches = served.client.search(query, limit=3).matches
        assert matches[0].path == f"{stem}-a.jpg" and matches[0].match, matches
        sibling = [m for m in matches if m.path == f"{stem}-b.jpg"]
        assert sibling and not sibling[0].match, matches


def test_true_duplicates_both_stay_sources(
    serve: Serve, photo_folder: Path, sample_photos: list[Path]
) -> None:
    """The sibling rule must not split real copies: the same photo twice (re-encoded) in the
    folder is two sources of a query made from it."""
    photo = sample_photos[1]
    shutil.copy2(photo, photo_folder / f"copy-of-{photo.name}")
    served = serve(photo_folder)
    served.wait_idle(120)
    query = encode(crop(load(photo), 0.5, (0.6, 0.5)), quality=80)
    matches = served.client.search(query, limit=3).matches
    assert {m.path for m in matches[:2]} == {photo.name, f"copy-of-{photo.name}"}
    assert matches[0].match and matches[1].match
