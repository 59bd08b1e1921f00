#!/usr/bin/env python3
"""Reproduce the example session of README "Using it": make its query images, serve the sample
photos (without chelsea_cat.jpg, the photo "not in the folder"), run the same commands and
print what they print. `tests/e2e/test_readme_examples.py` checks the README against it.

    .venv/bin/python scripts/readme_examples.py [--out DIR]   # DIR keeps the query images
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from imgsearch.app import Application
from imgsearch.console import search_text, status_text
from imgsearch.rpc.client import Client
from imgsearch.settings import BUNDLED_SAMPLES, Settings

HELD_OUT = "chelsea_cat.jpg"
# (file name, the comment the README shows, limit)
QUERIES = [
    ("query.jpg", "a 45% crop of coffee.jpg, shrunk, JPEG quality 30", 5),
    ("page.png", "rocket_launch.jpg shown small on a web page", 3),
    ("cat.jpg", "a photo that is not in the folder", 3),
]


def make_queries(out: Path) -> None:
    """The three query files of the README, from the bundled samples."""
    coffee = Image.open(BUNDLED_SAMPLES / "coffee.jpg").convert("RGB")
    side = 0.45**0.5  # 45% of the area
    w, h = coffee.size
    box = (round(w * 0.1), round(h * 0.2), round(w * (0.1 + side)), round(h * (0.2 + side)))
    crop = coffee.crop(box)
    crop = crop.resize((crop.width * 6 // 10, crop.height * 6 // 10), Image.Resampling.LANCZOS)
    _save_jpeg(crop, out / "query.jpg", quality=30)

    rocket = Image.open(BUNDLED_SAMPLES / "rocket_launch.jpg").convert("RGB")
    page = Image.new("RGB", (1366, 768), (236, 240, 244))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, 1366, 64), fill=(40, 60, 90))
    draw.text((24, 22), "Launch day: a photo story", fill=(255, 255, 255))
    for line in range(12):  # paragraphs beside the photo
        draw.rectangle((40, 120 + 40 * line, 640, 132 + 40 * line), fill=(170, 176, 186))
    small = rocket.resize((540, round(540 * rocket.height / rocket.width)))
    page.paste(small, (720, 120))
    page.save(out / "page.png")

    shutil.copy2(BUNDLED_SAMPLES / HELD_OUT, out / "cat.jpg")


def _save_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    path.write_bytes(buffer.getvalue())


def session(queries: Path, work: Path) -> str:
    """Serve the samples (all but HELD_OUT) and run the README's commands against them."""
    folder = work / "samples"
    shutil.copytree(BUNDLED_SAMPLES, folder, ignore=shutil.ignore_patterns("NOTICE", HELD_OUT))
    settings = Settings(
        folder=folder,
        data_dir=work / "data",
        listen="127.0.0.1:0",
        metrics_listen=None,
        http_listen=None,
    )
    app = Application(settings)
    app.start()
    lines: list[str] = []
    try:
        with Client(f"127.0.0.1:{app.port}", timeout=60) as client:
            deadline = time.monotonic() + 300
            while client.status().pending or client.status().state != "watching":
                if time.monotonic() > deadline:
                    raise SystemExit("the samples were not indexed within 5 minutes")
                time.sleep(0.2)
            for name, comment, limit in QUERIES:
                command = f"imgsearch search {name} --limit {limit}"
                lines.append(f"$ {command:<45}# {comment}")
                response = client.search((queries / name).read_bytes(), limit)
                lines += [*search_text(response).splitlines(), ""]
            lines.append("$ imgsearch status")
            status = status_text(client.status())
            lines += status.replace(str(folder), "/home/me/.local/share/imgsearch/samples").split(
                "\n"
            )
    finally:
        app.stop()
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the query images here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        queries = args.out or Path(tmp) / "queries"
        queries.mkdir(parents=True, exist_ok=True)
        make_queries(queries)
        print(session(queries, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
