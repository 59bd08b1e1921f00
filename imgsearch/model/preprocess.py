"""Pure image decoding and preprocessing: bytes in, bounded RGB pixels out.

Every limit is checked from the header before pixels are decoded, so a hostile file costs
bounded memory and time. The whole image is kept (never centre-cropped): a cropped query
may come from any part of its source, borders included.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import pillow_heif
from numpy.typing import NDArray
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from imgsearch.errors import (
    BusyError,
    ImageTooLargeError,
    InvalidImageError,
    UnrecognisedImageError,
)
from imgsearch.settings import DECODE_MEMORY, MAX_PIXELS, MIN_SIDE, Fit

pillow_heif.register_heif_opener()

_BACKGROUND = (255, 255, 255)
_BUDGET_WAIT = 20.0  # seconds a decode waits for budget before the call is refused
_TRIM_AFTER = 64 * 1024 * 1024  # decodes this large hand their memory back to the system
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None
# Progressive JPEGs have about 10 scans (a few more with an EXIF thumbnail); see _check_scans.
MAX_JPEG_SCANS = 100
# The documented formats (README), and only these: Pillow's other plugins include decoders no
# client should reach (EPS runs Ghostscript on the client's PostScript; PSD, FITS, SPIDER...).
# The JPEG plugin also opens phones' multi-picture JPEGs (MPO).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "HEIF", "AVIF")
# Fitting the shorter side, a panorama's longer side stops at this many times the size.
MAX_ASPECT = 3


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds applied to every decoded image; decodes with the same `memory_bytes` share one
    budget of that many bytes."""

    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE
    memory_bytes: int = DECODE_MEMORY


def quiet_decoder_warnings() -> None:
    """Our own pixel limit replaces Pillow's bomb warning, and a corrupt file ends in one
    precise error rather than a trail of decoder warnings.

    Installed once for the process (at import), never around each decode:
    `warnings.catch_warnings` swaps the process-wide filter list, so threads decoding under
    it lose or leak each other's filters and those of any library doing the same (FastAPI
    builds its routes under one).
    """
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")


quiet_decoder_warnings()


class DecodeBudget:
    """Bytes of decoded pixels that the decodes of this process hold at once.

    Inside the pixel limit one image can still take a gigabyte and more (a flat 8000x8000
    RGBA PNG is half a megabyte of file); eight at once took 10 GB. Each decode reserves its
    estimate before decoding: one that does not fit waits its turn (a little while), one
    larger than the whole budget is refused. After a large decode, freed memory is handed
    back to the system."""

    def __init__(self, total: int, wait: float = _BUDGET_WAIT) -> None:
        self.total = total
        self._wait = wait
        self._used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, need: int) -> Iterator[None]:
        if need > self.total:
            raise ImageTooLargeError(
                f"decoding the image needs about {need // 2**20} MB, more than the "
                f"{self.total // 2**20} MB decode budget"
            )
        with self._cond:
            if not self._cond.wait_for(lambda: self._used + need <= self.total, self._wait):
                raise BusyError("other large images are being decoded: try again shortly")
            self._used += need
        try:
            yield
        finally:
            with self._cond:
                self._used -= need
                self._cond.notify_all()
            if need >= _TRIM_AFTER:
                _give_memory_back()


_BUDGETS: dict[int, DecodeBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def _budget(total: int) -> DecodeBudget:
    with _BUDGETS_LOCK:
        return _BUDGETS.setdefault(total, DecodeBudget(total))


def _give_memory_back() -> None:
    """glibc keeps freed memory for the process; malloc_trim returns it (no-op elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _decode_bytes(image: Image.Image) -> int:
    """A generous estimate of the memory decoding `image` takes: its pixels as decoded, a
    rotated copy and the RGB conversion."""
    mode = ImageMode.getmode(image.mode)
    per_pixel = max(1, len(mode.bands) * np.dtype(mode.typestr).itemsize)
    return image.width * image.height * (2 * per_pixel + 8)


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An upright RGB image resized so that one side (see `Fit`) equals the model input size."""

    pixels: NDArray[np.uint8]  # H x W x 3
    original_width: int
    original_height: int
    format: str


Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) as fractions of width and height


def decode_image(
    data: bytes,
    target_side: int,
    limits: DecodeLimits,
    box: Box | None = None,
    fit: Fit = Fit.LONGER,
) -> DecodedImage:
    """Decode an encoded image file and resize it so that its `fit` side is `target_side`;
    with `box`, only that part of the (upright) image, at the resolution the box deserves.

    Raises:
        InvalidImageError: empty, unrecognised, truncated or degenerate image.
        ImageTooLargeError: more pixels than `limits.max_pixels` (checked from the header).
    """
    if not data:
        raise InvalidImageError("image is empty (0 bytes)")
    _check_scans(data)
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        return _decode_opened(image, target_side, limits, box, fit)
    except UnidentifiedImageError as exc:
        raise UnrecognisedImageError("not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires in open() for headers far beyond any sane size.
        raise ImageTooLargeError(
            f"image has more pixels than the limit of {limits.max_pixels} ({exc})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        # Pillow reports truncated and corrupt data through all of these.
        raise InvalidImageError(f"corrupt or truncated image data: {exc}") from exc


def _check_scans(data: bytes) -> None:
    """Refuse a JPEG with more scans than any camera or encoder writes: each progressive scan
    is a pass over the whole image, and a few hundred kilobytes of empty scans can cost
    minutes of CPU that no deadline interrupts (decoding is one call). Counting the start-of-
    scan markers is exact: entropy-coded data never holds 0xFF 0xDA (0xFF is stuffed)."""
    if data[:2] == b"\xff\xd8":
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise ImageTooLargeError(
                f"JPEG has {scans} scans, more than the limit of {MAX_JPEG_SCANS}"
            )


def _decode_opened(
    image: Image.Image, target_side: int, limits: DecodeLimits, box: Box | None, fit: Fit
) -> DecodedImage:
    width, height = image.size
    image_format = image.format or "unknown"
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, "
            f"more pixels than the limit of {limits.max_pixels}"
        )
    if min(width, height) < limits.min_side:
        raise InvalidImageError(
            f"image is {width}x{height}, smaller than {limits.min_side} pixels on a side"
        )
    x0, y0, x1, y1 = (0.0, 0.0, 1.0, 1.0) if box is None else box
    new_size = _fitted(max(1.0, (x1 - x0) * width), max(1.0, (y1 - y0) * height), target_side, fit)
    scale = new_size[0] / max(1.0, (x1 - x0) * width)
    if image_format == "JPEG" and scale < 1:
        # DCT-domain downscaling: decodes a 12 MP JPEG at 1/8 the cost when the model needs less.
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    with _budget(limits.memory_bytes).hold(_decode_bytes(image)):
        image.load()
        image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
        if box is not None:
            w, h = image.size
            left, top = min(round(box[0] * w), w - 1), min(round(box[1] * h), h - 1)
            image = image.crop(
                (left, top, max(left + 1, round(box[2] * w)), max(top + 1, round(box[3] * h)))
            )
        new_width, new_height = _fitted(image.width, image.height, target_side, fit)
        image = image.resize((new_width, new_height), Image.Resampling.BILINEAR, reducing_gap=3.0)
        pixels = np.asarray(image, dtype=np.uint8)
        del image  # the full-size pixels go before the budget is returned
    return DecodedImage(pixels, width, height, image_format)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white so a pasted logo looks the same in query and index."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _fitted(width: float, height: float, side: int, fit: Fit) -> tuple[int, int]:
    """(width, height) scaled so that the `fit` side is `side` (a panorama's longer side
    stops at MAX_ASPECT times `side`)."""
    if fit is Fit.LONGER:
        scale = side / max(width, height)
    else:
        scale = min(side / min(width, height), MAX_ASPECT * side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def rescaled(image: DecodedImage, side: int, fit: Fit = Fit.LONGER) -> DecodedImage:
    """The same decoded image with its `fit` side resized to `side` (multi-scale queries)."""
    height, width = image.pixels.shape[:2]
    new_width, new_height = _fitted(width, height, side, fit)
    pixels = Image.fromarray(image.pixels).resize(
        (new_width, new_height), Image.Resampling.BILINEAR
    )
    return DecodedImage(
        np.asarray(pixels, dtype=np.uint8),
        image.original_width,
        image.original_height,
        image.format,
    )


def content_box(
    image: DecodedImage, *, flatness: float = 6.0, keep_at_most: float = 0.95
) -> Box | None:
    """The part of a query inside flat borders: padding, a slide or page background, a
    letterbox. Rows and columns of one colour (per-channel spread under `flatness`) are peeled
    off every edge until none is left, so a two-tone canvas goes too. None when there is
    nothing to peel (under 1 - `keep_at_most` of the area) or when almost nothing is left.

    A photo shown small on a screenshot or with wide borders is described mostly by its
    surroundings; describing the box too lets its source win again.
    """
    pixels = image.pixels
    height, width = pixels.shape[:2]

    def flat(line: NDArray[np.uint8]) -> bool:
        return bool(line.astype(np.float32).std(axis=0).max() < flatness)

    # Each edge line is tested as it is reached, within the bounds the round started from
    # (the image is never copied whole: a query without flat borders costs four line
    # tests); a few rounds, since peeling columns can make more rows flat, and back.
    top, bottom, left, right = 0, height, 0, width
    for _ in range(4):
        before = (top, bottom, left, right)
        rows, cols = pixels[:, left:right], pixels[top:bottom]
        while bottom - top > 1 and flat(rows[top]):
            top += 1
        while bottom - top > 1 and flat(rows[bottom - 1]):
            bottom -= 1
        while right - left > 1 and flat(cols[:, left]):
            left += 1
        while right - left > 1 and flat(cols[:, right - 1]):
            right -= 1
        if (top, bottom, left, right) == before:
            break
    share = (bottom - top) * (right - left) / (height * width)
    if share > keep_at_most or min(bottom - top, right - left) < 8:
        return None
    return left / width, top / height, right / width, bottom / height


# A cell is "photo-like" when its colours spread in more than one direction: text, rules and
# bars on a page mix two colours (ink and ground, anti-aliased between them), so their
# colours lie on a line, at any resolution; a colour photograph's do not. (Greyscale photos
# look like text to this test: they are found by the whole-query descriptor or not at all.)
_COLOUR_PLANARITY = 0.01  # second / first eigenvalue of a cell's colour covariance
_FLAT_VARIANCE = 20.0  # a cell whose largest colour variance is below this is flat
_CELL = 8  # pixels per cell side, at the decoded size
# A query looks like a page when at least this share of its cells are two-colour cells in
# horizontal runs of _TEXT_RUN or more (lines of text). bench/accuracy's page queries have
# 26-45%; photos, crops and screenshots of a photo 0-15% (a star field's or a crop's own
# two-colour cells are scattered): their photo-like blocks are only a part of the photo, and
# describing them alone brought in false matches (bench/results/tune).
_PAGE_TEXT = 0.2
_TEXT_RUN = 4


@dataclass(frozen=True, slots=True)
class _Cells:
    """A query cut into _CELL x _CELL cells, each classified once for both box finders."""

    textured: NDArray[np.bool_]  # not flat
    photo: NDArray[np.bool_]  # textured with colours spread in two directions
    luminance: NDArray[np.float32]  # mean grey level


def _cells(image: DecodedImage) -> _Cells | None:
    pixels = image.pixels
    rows, cols = pixels.shape[0] // _CELL, pixels.shape[1] // _CELL
    if rows < 4 or cols < 4:
        return None
    # Channel planes of cells: [3, cells, pixels]. The six products of two centred planes,
    # each summed over a cell, make the covariances: 3x faster than one batched matmul of
    # 3 x 64 matrices per cell, which numpy runs as a loop of tiny products.
    planes = (
        pixels[: rows * _CELL, : cols * _CELL]
        .astype(np.float32)
        .reshape(rows, _CELL, cols, _CELL, 3)
        .transpose(4, 0, 2, 1, 3)
        .reshape(3, rows * cols, _CELL * _CELL)
    )
    means = planes.mean(axis=2, keepdims=True)
    planes -= means
    red, green, blue = planes
    pairs = ((red, red), (green, green), (blue, blue), (red, green), (red, blue), (green, blue))
    covariances = [(x * y).mean(axis=1) for x, y in pairs]
    _, middle, largest = _symmetric_eigenvalues(*covariances)
    textured = (largest >= _FLAT_VARIANCE).reshape(rows, cols)
    photo = textured & (middle > _COLOUR_PLANARITY * largest).reshape(rows, cols)
    return _Cells(textured, photo, means.reshape(3, rows, cols).mean(axis=0))


def _symmetric_eigenvalues(
    xx: NDArray[np.float32],
    yy: NDArray[np.float32],
    zz: NDArray[np.float32],
    xy: NDArray[np.float32],
    xz: NDArray[np.float32],
    yz: NDArray[np.float32],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Eigenvalues (ascending) of many symmetric 3 x 3 matrices given by their six entries,
    in closed form (the trigonometric solution of the characteristic cubic, as in Smith,
    CACM 1961): 10x faster than `np.linalg.eigvalsh`, which calls LAPACK once per matrix."""
    a, b, c, d, e, f = (v.astype(np.float64) for v in (xx, yy, zz, xy, xz, yz))
    mean = (a + b + c) / 3
    spread = np.sqrt(
        ((a - mean) ** 2 + (b - mean) ** 2 + (c - mean) ** 2) / 6 + (d * d + e * e + f * f) / 3
    )
    scale = np.where(spread > 0, spread, 1.0)  # spread 0: a multiple of the identity
    # B = (A - mean I) / spread has eigenvalues 2 cos(angle + 2 pi k / 3), det(B) = 2 cos(3 angle).
    a, b, c, d, e, f = (
        (a - mean) / scale,
        (b - mean) / scale,
        (c - mean) / scale,
        d / scale,
        e / scale,
        f / scale,
    )
    half_determinant = (a * (b * c - f * f) - d * (d * c - f * e) + e * (d * f - b * e)) / 2
    angle = np.arccos(np.clip(half_determinant, -1.0, 1.0)) / 3
    largest = mean + 2 * spread * np.cos(angle)
    smallest = mean + 2 * spread * np.cos(angle + 2 * np.pi / 3)
    return smallest, 3 * mean - largest - smallest, largest


@dataclass(frozen=True, slots=True)
class QueryBoxes:
    """Where in a query a photo may sit, each described as an extra view of the query."""

    page: list[Box]  # photo-like blocks of a page-like query (what verification looks at)
    blocks: list[Box]  # other photo-like blocks set apart by page furniture (views only)


def query_boxes(
    image: DecodedImage,
    *,
    besides: Box | None = None,
    blocks: bool = True,
    max_boxes: int = 2,
    min_share: float = 0.03,
    max_share: float = 0.7,
) -> QueryBoxes:
    """The page's photos (see `photo_boxes`), then, with `blocks` and up to `max_boxes` in
    all, the layout blocks (see `_layout_blocks`) that do not repeat one of them or `besides`
    (the query's framed box, described anyway)."""
    cells = _cells(image)
    if cells is None:
        return QueryBoxes([], [])
    page = _page_photos(cells, max_share=max_share, min_share=min_share)[:max_boxes]
    found: list[Box] = []
    taken = [*page, *([besides] if besides is not None else [])]
    candidates = _layout_blocks(cells, min_share=min_share, max_share=max_share) if blocks else []
    for box in candidates:
        if len(page) + len(found) >= max_boxes:
            break
        if all(_overlap(box, other) < 0.5 for other in taken):
            found.append(box)
            taken.append(box)
    return QueryBoxes(page, found)


def photo_boxes(
    image: DecodedImage, *, max_boxes: int = 2, min_share: float = 0.03, max_share: float = 0.7
) -> list[Box]:
    """The photo-like rectangles of a query that looks like a page: a screenshot of an article
    or a post holds the photo at a third of its width among text, a header and a navigation
    column, and a descriptor of the whole page is mostly text. Photo-like cells (see
    _COLOUR_PLANARITY) are closed into connected blocks; the largest blocks covering
    `min_share` to `max_share` of the image are returned, largest first. A plain photo (photo-
    like cells over `max_share` of it) gives none."""
    cells = _cells(image)
    if cells is None:
        return []
    return _page_photos(cells, min_share=min_share, max_share=max_share)[:max_boxes]


def _page_photos(cells: _Cells, *, min_share: float, max_share: float) -> list[Box]:
    photo, textured = cells.photo, cells.textured
    rows, cols = photo.shape
    if photo.mean() > max_share or _text_runs(textured & ~photo).mean() < _PAGE_TEXT:
        return []
    blocks = []
    for grown_box in _components(_grown(_grown(photo))):
        top, bottom, left, right = _tightened(photo, grown_box)
        area = (bottom - top) * (right - left)
        dense = photo[top:bottom, left:right].mean() >= 0.5
        if dense and min_share <= area / (rows * cols) <= max_share:
            blocks.append((area, (left / cols, top / rows, right / cols, bottom / rows)))
    blocks.sort(key=lambda block: -block[0])
    return [box for _, box in blocks]


# A layout block is photo-like when this share of its cells are (colour photos), or when its
# cells' grey levels spread this far (grey and two-tone photos: a nebula, a night scene);
# text, buttons and panels are even in both.
_BLOCK_PHOTO_SHARE = 0.3
_BLOCK_LUMINANCE_SPREAD = 25.0
# A flat cell whose grey level is this far from the page's ground (the commonest grey level of
# its flat cells) is off the ground: a dark photo's night sky, a letterbox's black bars on a
# light page. Textured cells alone leave only a star field's scattered stars, which the
# opening removes. Blocks of textured and off-ground cells are photo-like when at least
# _OFF_GROUND_SHARE of their cells are off the ground and _OFF_GROUND_TEXTURE textured (a
# flat bar or button has no texture inside). bench/accuracy's screenshot queries whose photo
# was dark or grey (10 of 84 on augly's web template) scored 0.10-0.35 with their source
# from every view; the block around the photo scores 0.57-0.87.
_GROUND_DISTANCE = 40.0
_OFF_GROUND_SHARE = 0.3
_OFF_GROUND_TEXTURE = 0.2
_GREY_BIN = 8


def _layout_blocks(cells: _Cells, *, min_share: float, max_share: float) -> list[Box]:
    """Photo-like blocks of textured cells that page furniture sets apart: a post's photo
    between a row of avatars and a comment bar, a picture in a card's thin frame. Thin lines
    (rules, frames, a lone line of text) are opened away so that they do not join the photo to
    the rest of the page; the page-text test of `_page_photos` is not needed, so it finds
    photos in sparse app and social-network screenshots that have little text. In a plain
    photo it finds parts of the photo: extra views of a crop, harmless but not free
    (bench/accuracy, a614667: screenshot recall@1 85.3 -> 95.6%, page 88.3 -> 96.7%). Blocks
    that take in the flat cells off the page's ground too (a dark photo on a light page) are
    candidates beside them where they do not repeat one, largest first among all."""
    blocks = _photo_blocks(cells, cells.textured, None, min_share=min_share, max_share=max_share)
    off_ground = _off_ground(cells)
    if off_ground.any():
        wider = _photo_blocks(
            cells, cells.textured | off_ground, off_ground, min_share=min_share, max_share=max_share
        )
        # Where the textured cells alone found the photo, their block is the tighter view.
        blocks += [block for block in wider if all(_overlap(block[1], b) < 0.5 for _, b in blocks)]
    blocks.sort(key=lambda block: -block[0])
    return [box for _, box in blocks]


def _off_ground(cells: _Cells) -> NDArray[np.bool_]:
    """Flat cells whose grey level is _GROUND_DISTANCE or more from the commonest one."""
    flat = ~cells.textured
    if not flat.any():
        return flat
    bins = np.clip(cells.luminance[flat] / _GREY_BIN, 0, 255 // _GREY_BIN).astype(np.intp)
    ground = (np.bincount(bins).argmax() + 0.5) * _GREY_BIN
    return flat & (np.abs(cells.luminance - ground) >= _GROUND_DISTANCE)


def _photo_blocks(
    cells: _Cells,
    mask: NDArray[np.bool_],
    off_ground: NDArray[np.bool_] | None,
    *,
    min_share: float,
    max_share: float,
) -> list[tuple[int, Box]]:
    """(area in cells, box) of the photo-like blocks of `mask`, opened (see _layout_blocks);
    with `off_ground`, a block mostly off the ground with texture inside is photo-like too."""
    solid = _grown(_shrunk(mask))
    rows, cols = solid.shape
    blocks = []
    for grown_box in _components(solid):
        top, bottom, left, right = _tightened(solid, grown_box, density=0.5)
        area = (bottom - top) * (right - left)
        if not min_share <= area / (rows * cols) <= max_share:
            continue
        inside = (slice(top, bottom), slice(left, right))
        photo_like = (
            cells.photo[inside].mean() >= _BLOCK_PHOTO_SHARE
            or cells.luminance[inside].std() >= _BLOCK_LUMINANCE_SPREAD
            or (
                off_ground is not None
                and off_ground[inside].mean() >= _OFF_GROUND_SHARE
                and cells.textured[inside].mean() >= _OFF_GROUND_TEXTURE
            )
        )
        if photo_like:
            blocks.append((area, (left / cols, top / rows, right / cols, bottom / rows)))
    return blocks


def _overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _text_runs(two_colour: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The two-colour cells that lie in a horizontal run of at least _TEXT_RUN of them."""
    cols = two_colour.shape[1]
    runs = np.zeros_like(two_colour)
    if cols < _TEXT_RUN:
        return runs
    starts = np.ones_like(two_colour[:, : cols - _TEXT_RUN + 1])
    for k in range(_TEXT_RUN):
        starts &= two_colour[:, k : cols - _TEXT_RUN + 1 + k]
    for k in range(_TEXT_RUN):
        runs[:, k : cols - _TEXT_RUN + 1 + k] |= starts
    return runs


def _tightened(
    photo: NDArray[np.bool_], box: tuple[int, int, int, int], *, density: float = 0.3
) -> tuple[int, int, int, int]:
    """A block of the closed mask peeled back to its photo-like core: edge rows and columns
    with fewer than `density` photo-like cells go (the closing grew the block, and stray
    cells where a navigation column or a bar meets the page can join it)."""
    top, bottom, left, right = box
    while bottom - top > 1 and right - left > 1:
        if photo[top, left:right].mean() < density:
            top += 1
        elif photo[bottom - 1, left:right].mean() < density:
            bottom -= 1
        elif photo[top:bottom, left].mean() < density:
            left += 1
        elif photo[top:bottom, right - 1].mean() < density:
            right -= 1
        else:
            break
    return top, bottom, left, right


def _shrunk(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The mask with every cell next to an unset cell unset too (thin lines vanish)."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def _grown(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The mask with every cell next to a set cell set too (closes gaps of a flat patch)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _components(mask: NDArray[np.bool_]) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of each 4-connected block of a small grid, in the raster
    order of their first cells (OpenCV's labelling: a Python flood fill cost ~5 ms a query)."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=4, ltype=cv2.CV_32S
    )
    return [(int(y), int(y + h), int(x), int(x + w)) for x, y, w, h, _ in stats[1:count].tolist()]
