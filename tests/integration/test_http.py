"""Issue 17: the HTTP/JSON API with a real client against a real server on loopback."""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from imgsearch.console import message_json
from tests.conftest import Served
from tests.imaging import crop, encode, load


def _base(served: Served) -> str:
    return f"http://127.0.0.1:{served.app.http_port}"


@pytest.fixture
def http_served(photo_folder: Path, serve: Callable[..., Served]) -> Served:
    served = serve(photo_folder, http_listen="127.0.0.1:0", max_request_bytes=2 * 1024 * 1024)
    served.wait_idle()
    return served


def test_search_answers_as_grpc_does(http_served: Served, sample_photos: list[Path]) -> None:
    query = encode(crop(load(sample_photos[2]), 0.4), quality=60)
    expected = message_json(http_served.client.search(query, limit=4))
    with httpx.Client(base_url=_base(http_served), timeout=30) as http:
        raw = http.post("/v1/search", params={"limit": 4}, content=query)
        form = http.post(
            "/v1/search", params={"limit": 4}, files={"image": ("q.jpg", query, "image/jpeg")}
        )
        by_path = http.post("/v1/search", params={"path": sample_photos[2].name, "limit": 2})
    for response in (raw, form):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["source_found"] is True
        assert {k: v for k, v in body.items() if k != "source_found"} == expected
        assert body["matches"][0]["path"] == sample_photos[2].name
        assert isinstance(body["matches"][0]["score"], float)
        assert isinstance(body["matches"][1]["match"], bool)  # false is present, not dropped
    assert by_path.json()["matches"][0]["path"] == sample_photos[2].name


def test_status_duplicates_thumbnail_openapi_and_page(
    http_served: Served, sample_photos: list[Path]
) -> None:
    with httpx.Client(base_url=_base(http_served), timeout=30) as http:
        status = http.get("/v1/status").json()
        grpc_status = message_json(http_served.client.status())
        moving = {"index_rate", "eta_seconds"}  # a rate decays with time since the last file
        assert status.keys() == grpc_status.keys()
        assert {k: v for k, v in status.items() if k not in moving} == {
            k: v for k, v in grpc_status.items() if k not in moving
        }
        assert status["indexed"] == len(sample_photos) and isinstance(status["indexed"], int)

        duplicates = http.get("/v1/duplicates").json()
        assert duplicates == {"images": len(sample_photos), "groups": []}

        thumbnail = http.get("/v1/thumbnail", params={"path": sample_photos[0].name, "size": 64})
        assert thumbnail.status_code == 200
        assert thumbnail.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumbnail.content)).size) == 64
        assert "max-age" in thumbnail.headers["cache-control"]

        schema = http.get("/openapi.json").json()
        assert {"/v1/search", "/v1/status", "/v1/duplicates", "/v1/thumbnail"} <= set(
            schema["paths"]
        )
        page = http.get("/")
        assert page.status_code == 200 and "imgsearch" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "http://" not in page.text and "https://" not in page.text  # nothing from outside
        assert http.get("/static/app.js").status_code == 200
        assert http.get("/static/../settings.py").status_code == 404


def test_bad_input_gets_a_precise_status_and_json_error(
    http_served: Served, photo_folder: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(next(photo_folder.iterdir()).read_bytes())
    cases = {
        "empty body": (("POST", "/v1/search"), {"content": b""}, 400),
        "not an image": (("POST", "/v1/search"), {"content": b"hello" * 100}, 400),
        "huge body": (("POST", "/v1/search"), {"content": b"\xff" * (3 * 1024 * 1024)}, 413),
        "form without image": (("POST", "/v1/search"), {"files": {"other": ("a", b"x")}}, 400),
        "bad limit": (("POST", "/v1/search?limit=-1"), {"content": b"x"}, 422),
        "limit over the maximum": (("POST", "/v1/search?limit=100000&path=x.jpg"), {}, 400),
        "missing file": (("POST", "/v1/search?path=nope.jpg"), {}, 404),
        "thumbnail escape": (("GET", "/v1/thumbnail?path=../outside.jpg"), {}, 400),
        "thumbnail absolute": (("GET", f"/v1/thumbnail?path={outside}"), {}, 400),
        "thumbnail missing": (("GET", "/v1/thumbnail?path=nope.jpg"), {}, 404),
        "no route": (("GET", "/v1/nothing"), {}, 404),
    }
    with httpx.Client(base_url=_base(http_served), timeout=30) as http:
        for name, ((method, url), kwargs, expected) in cases.items():
            response = http.request(method, url, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == expected, (name, response.text)
            body = response.json()
            assert body.get("error") or body.get("detail"), (name, body)
        # The service is still there.
        assert http.get("/v1/status").status_code == 200


def test_bearer_token_guards_the_api_not_the_page(
    photo_folder: Path, serve: Callable[..., Served], sample_photos: list[Path]
) -> None:
    served = serve(photo_folder, http_listen="127.0.0.1:0", auth_token="s3cret")
    with httpx.Client(base_url=_base(served), timeout=30) as http:
        image = sample_photos[0].read_bytes()
        assert http.post("/v1/search", content=image).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert http.post("/v1/search", content=image, headers=wrong).status_code == 401
        assert http.get("/v1/status").status_code == 401
        assert http.get(f"/v1/thumbnail?path={sample_photos[0].name}").status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert http.get("/v1/status", headers=right).status_code == 200
        assert http.get("/").status_code == 200
        assert http.get("/openapi.json").status_code == 200


def test_calls_past_the_shared_limit_get_429(
    photo_folder: Path, sample_photos: list[Path], serve: Callable[..., Served]
) -> None:
    """HTTP and gRPC share MAX_CONCURRENT_RPCS: past it, HTTP answers 429 with a JSON error."""
    served = serve(photo_folder, http_listen="127.0.0.1:0", max_concurrent_rpcs=1)
    served.wait_idle()
    big = encode(load(sample_photos[0]).resize((3000, 2000)), quality=95)

    def post(_: int) -> int:
        with httpx.Client(base_url=_base(served), timeout=60) as http:
            return http.post("/v1/search", content=big).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(post, range(16)))
    assert 429 in codes and 200 in codes, codes
    assert set(codes) <= {200, 429}
