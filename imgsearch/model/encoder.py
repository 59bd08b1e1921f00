"""Turns decoded images into L2-normalised descriptors with the ONNX backbone.

An embedding backbone (a copy-detection descriptor) gives one vector per image and pass.
With a feature-map backbone, an indexed image gets a descriptor *set* from one forward pass:
the whole image plus overlapping regions at two scales (2x2 windows of 2/3 of each side,
3x3 windows of half of each side). A cropped query's whole-image vector lies close to the
region of its source it was cut from, so small crops are found; a query itself is described
by its whole image only (matching query regions against database regions brings in false
matches).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from imgsearch.backbones import Contract, choose_model
from imgsearch.descriptors import WHOLE_IMAGE_BOX, DescriptorSet
from imgsearch.errors import ModelError
from imgsearch.model.preprocess import (
    Box,
    DecodedImage,
    DecodeLimits,
    content_box,
    decode_image,
    query_boxes,
    rescaled,
)
from imgsearch.model.session import ModelInfo, OnnxBackbone
from imgsearch.settings import TUNING, ModelSettings, Tuning

GEM_POWER = 3.0
# Most images in one forward pass (more only add memory on a CPU).
MAX_FORWARD_BATCH = 16
_EPS = 1e-6
# (windows per side, window size as a fraction of the side) for each region scale.
REGION_SCALES: tuple[tuple[int, float], ...] = ((2, 2 / 3), (3, 1 / 2))
REGIONS_PER_IMAGE = 1 + sum(n * n for n, _ in REGION_SCALES)


Stage = Callable[[str], AbstractContextManager[object]]


def _no_stage(_: str) -> AbstractContextManager[object]:
    return nullcontext()


# A view more elongated than this is a sliver, not a photo (`_sliver`).
SLIVER_ASPECT = 6


def _sliver(image: DecodedImage) -> bool:
    """A strip that flat-border peeling or the page-block finder cut from a photo on a plain
    ground (food on white, its smooth rows taken for flat ones): checked instead of the
    whole query, such views found 0 inliers with the source in 6 of bench/accuracy's sourced
    queries (6-36x as wide as tall) where the whole query finds 18-147. Wide photo blocks
    of a page (3-5.3x) are the better view: the whole page lost 5 confirmations."""
    height, width = image.pixels.shape[:2]
    return bool(max(width, height) > SLIVER_ASPECT * min(width, height))


@dataclass(frozen=True, slots=True)
class QueryDescription:
    """What a query is searched with."""

    vectors: NDArray[np.float32]  # [V, C]: the query at each scale, and framed if it has borders
    # What geometric verification looks at: a page's photo-like block, or the content inside
    # flat borders when the query has them (a photo small on a screenshot is too few pixels
    # otherwise); None for queries described from stored vectors (no pixels at hand).
    image: DecodedImage | None
    # More views, worth their cost only when `vectors` find nothing conclusive: the layout
    # blocks of a screenshot, which in a plain photo are only parts of it (see query_boxes).
    more: Callable[[], NDArray[np.float32]] | None = None
    # The query file itself: where `image` confirms no candidate, the check looks again at
    # the whole query in finer detail (`Verifier.describe_closer`).
    file: bytes | None = None

    def with_more(self) -> QueryDescription:
        """This query with its further views described and added (itself when it has none)."""
        if self.more is None:
            return self
        extra = self.more()
        return QueryDescription(np.concatenate([self.vectors, extra]), self.image, file=self.file)


class ImageEncoder:
    """Decode + embed. One instance is shared by the embedder and the searcher.

    Two verbs serve the services: `describe_file` (what is indexed) and `describe_query`
    (what is searched with); `decode`, `encode` and `describe` are their parts.
    """

    def __init__(
        self, settings: ModelSettings | None = None, *, threads: int | None = None
    ) -> None:
        """`threads`: onnxruntime threads, when not the settings' `inference_threads`."""
        settings = settings or ModelSettings()
        self._backbone = OnnxBackbone(
            choose_model(settings.model), threads=threads or settings.inference_threads
        )
        self.tuning: Tuning = TUNING[self._backbone.info.contract]
        self.image_size = settings.image_size or self.tuning.image_size
        self.fit = self.tuning.fit
        # A small crop blown up to image_size is seen at a larger scale than the region it came
        # from; describing the query at smaller sizes too brings the scales back together.
        sizes = self.tuning.query_sizes if settings.query_sizes is None else settings.query_sizes
        self.query_sizes = tuple(s for s in sizes if s < self.image_size)
        self.limits = DecodeLimits(
            max_pixels=settings.max_pixels,
            min_side=settings.min_side,
            memory_bytes=settings.decode_memory_bytes,
        )
        self.max_batch = MAX_FORWARD_BATCH

    @property
    def info(self) -> ModelInfo:
        return self._backbone.info

    @property
    def dimensions(self) -> int:
        return self._backbone.info.channels

    @property
    def name(self) -> str:
        """The backbone's name (catalogue name or file stem)."""
        return self._backbone.info.name

    @property
    def key(self) -> str:
        """What the vectors of this backbone are stored under (ModelChoice.key)."""
        return self._backbone.info.key

    @property
    def has_regions(self) -> bool:
        """Whether the backbone can describe regions (feature-map contract only)."""
        return self._backbone.info.contract is Contract.FEATURE_MAP

    def decode(self, data: bytes, box: Box | None = None) -> DecodedImage:
        """Decode with this encoder's input size and limits (raises InvalidImageError);
        with `box`, just that part of the image."""
        return decode_image(data, self.image_size, self.limits, box, self.fit)

    def decode_framed(self, data: bytes, image: DecodedImage) -> DecodedImage | None:
        """The query's content inside flat borders (see `content_box`), decoded again from the
        file at full input size, or None when the query has no such borders."""
        box = content_box(image)
        return None if box is None else self.decode(data, box)

    def describe_file(self, data: bytes, *, regions: bool) -> DescriptorSet:
        """The descriptors an image file is indexed with (raises InvalidImageError)."""
        (descriptors,) = self.describe([self.decode(data)], regions=regions)
        return descriptors

    def describe_query(self, data: bytes, stage: Stage = _no_stage) -> QueryDescription:
        """A query image file described for search: decoded, framed when it has flat borders,
        at every query scale, and each photo-like block of a page on its own; the layout
        blocks of a screenshot are left to `QueryDescription.more` (raises
        InvalidImageError). `stage("decode")` and `stage("embed")` wrap the steps (the
        searcher times them and stops a call whose client has gone)."""
        with stage("decode"):
            image = self.decode(data)
            framed_box = content_box(image)
            framed = None if framed_box is None else self.decode(data, framed_box)
            boxes = query_boxes(image, besides=framed_box, blocks=self.tuning.layout_blocks)
            parts = [self.decode(data, box) for box in boxes.page]
        with stage("embed"):
            # The geometric check looks at the photo itself: a page's first photo-like
            # block, or the content inside flat borders, else the whole query (a layout
            # block may be a part of a plain photo: not a better view to check).
            view = parts[0] if parts else framed
            seen = image if view is None or _sliver(view) else view
            vectors = self.encode_query(image, framed, parts)

        def more() -> NDArray[np.float32]:
            with stage("decode"):
                blocks = [self.decode(data, box) for box in boxes.blocks]
            with stage("embed"):
                return self.encode(blocks)

        return QueryDescription(vectors, seen, more if boxes.blocks else None, file=data)

    def page_views(self, data: bytes) -> NDArray[np.float32] | None:
        """The photo-like blocks of a page-like image, each described on its own [V, C], as
        `describe_query` describes them; None where the image is not page-like (nearly every
        photo: its decoding and layout are all this costs then). An indexed file has its
        whole-image vector only, which of a page is mostly text (raises InvalidImageError)."""
        image = self.decode(data)
        boxes = query_boxes(image, blocks=False)
        if not boxes.page:
            return None
        return self.encode([self.decode(data, box) for box in boxes.page])

    def encode_query(
        self,
        image: DecodedImage,
        framed: DecodedImage | None = None,
        parts: Sequence[DecodedImage] = (),
    ) -> NDArray[np.float32]:
        """Query descriptors [V, C]: the image at each query scale, plus its content without
        flat borders when `framed` (from `decode_framed`) is given, plus `parts` (the
        photo-like blocks of a page or a screenshot)."""
        scaled = [image, *(rescaled(image, side, self.fit) for side in self.query_sizes)]
        return self.encode([*scaled, *([framed] if framed is not None else []), *parts])

    def encode(self, images: Sequence[DecodedImage]) -> NDArray[np.float32]:
        """Whole-image descriptors [N, C] of decoded images, L2-normalised, in input order."""
        pooled = self._run(images, _whole)
        return (
            np.stack([vectors[0] for vectors, _ in pooled])
            if pooled
            else np.empty((0, self.dimensions), dtype=np.float32)
        )

    def describe(
        self, images: Sequence[DecodedImage], *, regions: bool = True
    ) -> list[DescriptorSet]:
        """Whole-image (and regional) descriptors of each image, from one forward pass."""
        if regions and not self.has_regions:
            raise ModelError(
                f"model {self.name!r} gives one vector per image: regions need a feature-map "
                "backbone (efficientnet-lite0)"
            )
        pool = _regions if regions else _whole
        return [DescriptorSet(vectors, boxes) for vectors, boxes in self._run(images, pool)]

    def _run(self, images: Sequence[DecodedImage], pool: _Pooling) -> list[_Pooled]:
        if not self.has_regions:
            return self._run_embedding(images)
        return self._run_feature_map(images, pool)

    def _run_embedding(self, images: Sequence[DecodedImage]) -> list[_Pooled]:
        """Forward passes in batches of one exact size (nothing padded: the pooling inside the
        graph would see the padding)."""
        out: list[_Pooled | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            groups[image.pixels.shape].append(index)
        for indices in groups.values():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start : start + self.max_batch]
                pixels = np.stack([images[i].pixels for i in chunk])
                batch = (
                    pixels
                    if self._backbone.info.uint8_input
                    else pixels.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
                )
                vectors = self._backbone.run(batch)
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.maximum(norms, np.float32(_EPS))
                for row, i in enumerate(chunk):
                    out[i] = (vectors[row : row + 1].astype(np.float32), WHOLE_IMAGE_BOX)
        return [pooled for pooled in out if pooled is not None]

    def _run_feature_map(self, images: Sequence[DecodedImage], pool: _Pooling) -> list[_Pooled]:
        """Forward passes in batches of one padded size, so that an image's descriptors never
        depend on what it was batched with (padding changes border activations)."""
        out: list[_Pooled | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            groups[self._canvas(image)].append(index)
        stride = self._backbone.info.stride
        for (height, width), indices in groups.items():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start : start + self.max_batch]
                batch = np.zeros((len(chunk), 3, height, width), dtype=np.float32)
                for row, i in enumerate(chunk):
                    h, w = images[i].pixels.shape[:2]
                    batch[row, :, :h, :w] = images[i].pixels.transpose(2, 0, 1) * np.float32(
                        1 / 255
                    )
                features = self._backbone.run(batch)
                for row, i in enumerate(chunk):
                    h, w = images[i].pixels.shape[:2]
                    valid = features[row, :, : math.ceil(h / stride), : math.ceil(w / stride)]
                    out[i] = pool(valid)
        return [pooled for pooled in out if pooled is not None]

    def _canvas(self, image: DecodedImage) -> tuple[int, int]:
        stride = self._backbone.info.stride
        height, width = image.pixels.shape[:2]
        return math.ceil(height / stride) * stride, math.ceil(width / stride) * stride


_Pooled = tuple[NDArray[np.float32], NDArray[np.float32]]  # (vectors [R, C], boxes [R, 4])
_Pooling = Callable[[NDArray[np.float32]], _Pooled]


def _whole(feature_map: NDArray[np.float32]) -> _Pooled:
    rows, cols = feature_map.shape[1:]
    return _gem_windows(feature_map, ((0, rows, 0, cols),)), WHOLE_IMAGE_BOX


def _regions(feature_map: NDArray[np.float32]) -> _Pooled:
    """GeM of the whole map and of each window of REGION_SCALES (on the image's own cells)."""
    windows, boxes = _region_windows(*feature_map.shape[1:])
    return _gem_windows(feature_map, windows), boxes.copy()


_Window = tuple[int, int, int, int]  # (top, bottom, left, right) cells, bottom/right exclusive


@functools.lru_cache(maxsize=256)
def _region_windows(rows: int, cols: int) -> tuple[tuple[_Window, ...], NDArray[np.float32]]:
    """The whole map and the windows of REGION_SCALES on a rows x cols map, with their boxes."""
    windows: list[_Window] = [(0, rows, 0, cols)]
    boxes = [WHOLE_IMAGE_BOX[0]]
    for per_side, fraction in REGION_SCALES:
        height, width = max(1, round(rows * fraction)), max(1, round(cols * fraction))
        for i in range(per_side):
            top = round(i * (rows - height) / (per_side - 1))
            for j in range(per_side):
                left = round(j * (cols - width) / (per_side - 1))
                windows.append((top, top + height, left, left + width))
                boxes.append(
                    np.array(
                        [left / cols, top / rows, (left + width) / cols, (top + height) / rows],
                        dtype=np.float32,
                    )
                )
    stacked = np.stack(boxes)
    stacked.flags.writeable = False  # shared by every map of this shape
    return tuple(windows), stacked


def _gem_windows(
    feature_map: NDArray[np.float32], windows: Sequence[_Window]
) -> NDArray[np.float32]:
    """Generalised-mean pooling of each window of a [C, h, w] feature map, L2-normalised rows.

    The clipped map is cubed once, channels last, so that each window's sum adds whole
    contiguous channel vectors; sums are taken directly (no summed-area table: its
    differences cancel catastrophically for near-zero windows beside large ones).
    """
    cells = np.ascontiguousarray(
        np.maximum(feature_map, np.float32(_EPS)).transpose(1, 2, 0), dtype=np.float32
    )
    cubed = cells * cells * cells if GEM_POWER == 3 else np.power(cells, np.float32(GEM_POWER))
    means = np.stack(
        [
            cubed[top:bottom, left:right].sum(axis=(0, 1))
            / np.float32((bottom - top) * (right - left))
            for top, bottom, left, right in windows
        ]
    )
    root = np.cbrt(means) if GEM_POWER == 3 else np.power(means, np.float32(1 / GEM_POWER))
    pooled: NDArray[np.float32] = root.astype(np.float32, copy=False)
    norms = np.sqrt(np.einsum("rc,rc->r", pooled, pooled))
    normalised: NDArray[np.float32] = pooled / np.maximum(norms, np.float32(_EPS))[:, None]
    return normalised
