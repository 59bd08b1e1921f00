"""Issue 17: the web page in a real browser (Debian's headless Chromium, driven by Playwright)
against a real server: upload a crop of an indexed photo, see its source first with the
matched region drawn, the index panel filled, and the duplicates view.

IMGSEARCH_SCREENSHOT=docs/web-page.png makes the test save the screenshot the README shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import Served
from tests.imaging import crop, encode, load

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As Debian's chromium wants it in a container: no sandbox, no GPU, and none of the
# background connections a machine without internet refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:  # a new empty profile each time
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def _open(browser: Browser, served: Served) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 820})
    outside: list[str] = []
    page.on(
        "request",
        lambda request: (
            outside.append(request.url)
            if not request.url.startswith(("http://127.0.0.1", "blob:", "data:"))
            else None
        ),
    )
    page.goto(f"http://127.0.0.1:{served.app.http_port}/")
    page.outside_requests = outside  # type: ignore[attr-defined]
    return page


def test_a_dropped_crop_shows_its_source_first_with_the_region(
    photo_folder: Path,
    sample_photos: list[Path],
    serve: Callable[..., Served],
    browser: Browser,
    tmp_path: Path,
) -> None:
    served = serve(photo_folder, http_listen="127.0.0.1:0")
    served.wait_idle()
    source = next(p for p in sample_photos if p.name == "rocket_launch.jpg")
    query = tmp_path / "crop.jpg"
    query.write_bytes(encode(crop(load(source), 0.3, anchor=(0.4, 0.5)), quality=60))

    page = _open(browser, served)
    expect(page.locator("#indexed")).to_have_text(str(len(sample_photos)))
    expect(page.locator("#model")).to_contain_text(served.app.encoder.name)
    page.set_input_files("#file", str(query))

    first = page.locator("#results .result").first
    expect(first.locator(".path")).to_have_text(source.name)
    expect(first.locator(".badge")).to_have_text("SOURCE")
    expect(page.locator("#verdict")).to_have_text(f"Source found: {source.name}")
    region = first.locator(".region")
    expect(region).to_be_visible()
    thumb = first.locator(".thumb img")
    expect(thumb).to_have_js_property("complete", True)
    box, image = region.bounding_box(), thumb.bounding_box()
    assert box is not None and image is not None
    # The crop covers 30% of the area: the box is inside the thumbnail and clearly smaller.
    assert image["x"] - 2 <= box["x"] and box["x"] + box["width"] <= image["x"] + image["width"] + 2
    assert box["width"] * box["height"] < 0.8 * image["width"] * image["height"]
    expect(page.locator("#query")).to_be_visible()
    if target := os.environ.get("IMGSEARCH_SCREENSHOT"):
        page.screenshot(path=target)

    page.click("#tab-duplicates")
    page.click("#find-duplicates")
    expect(page.locator("#duplicates-message")).to_have_text(
        f"No copies among {len(sample_photos)} images"
    )
    assert page.outside_requests == []  # type: ignore[attr-defined]
