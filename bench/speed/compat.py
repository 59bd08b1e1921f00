"""The production descriptor API and defaults, in one place.

Production (imgsearch.settings defaults) indexes one whole-image vector per file
(`regions=False`); regional descriptors (whole image + 13 regions, one Qdrant point per row)
are opt-in and measured here as an alternative. Queries are embedded at the input size and
each `query_sizes` scale, plus a "framed" view when the query has flat borders
(`ImageEncoder.encode_query`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from imgsearch.backbones import EFFICIENTNET, Contract
from imgsearch.descriptors import DescriptorSet
from imgsearch.model import DecodedImage, ImageEncoder
from imgsearch.model.encoder import REGION_SCALES, REGIONS_PER_IMAGE
from imgsearch.settings import TUNING, Settings
from imgsearch.store import FileState

F32 = NDArray[np.float32]

_DEFAULTS = Settings()
PRODUCTION_REGIONS: bool = _DEFAULTS.index.regions
PRODUCTION_ENGINE: str = _DEFAULTS.store.engine.value
PRODUCTION_WORKERS: int = _DEFAULTS.index.embed_workers
PRODUCTION_THREADS: int = _DEFAULTS.encoder.inference_threads
# The speed benchmark measures the feature-map backbone (EfficientNet-Lite0) and its variants
# (fp32, int8, sizes, regions); bench/accuracy times both backbones' searches side by side.
SPEED_MODEL = EFFICIENTNET
_TUNED = TUNING[Contract.FEATURE_MAP]
PRODUCTION_SIDE: int = _DEFAULTS.encoder.image_size or _TUNED.image_size
QUERY_SIZES: list[int] = list(
    _TUNED.query_sizes if _DEFAULTS.encoder.query_sizes is None else _DEFAULTS.encoder.query_sizes
)
QUERY_VIEWS = 2 + len(QUERY_SIZES)  # input size, each query size, the framed view (padded)


def points_per_image(regions: bool) -> int:
    return REGIONS_PER_IMAGE if regions else 1


POINTS_PER_IMAGE: int = points_per_image(PRODUCTION_REGIONS)


def describe(
    encoder: ImageEncoder, images: Sequence[DecodedImage], *, regions: bool = PRODUCTION_REGIONS
) -> list[DescriptorSet]:
    """What the indexer stores per image."""
    return encoder.describe(images, regions=regions)


def rows(descriptors: DescriptorSet) -> F32:
    """All vectors [R, C] of a descriptor set (R = points per image)."""
    vectors: F32 = descriptors.vectors
    return vectors


def item(state: FileState, vectors: F32) -> tuple[FileState, DescriptorSet]:
    """An upsert item for VectorStore from vectors [R, C] (row 0 = whole image)."""
    return state, DescriptorSet(vectors, _boxes(len(vectors)))


def _boxes(count: int) -> F32:
    boxes = [(0.0, 0.0, 1.0, 1.0)]
    for per_side, fraction in REGION_SCALES:
        for i in range(per_side):
            for j in range(per_side):
                left = j * (1 - fraction) / (per_side - 1)
                top = i * (1 - fraction) / (per_side - 1)
                boxes.append((left, top, left + fraction, top + fraction))
    return np.asarray(boxes[:count], dtype=np.float32)


def query_vectors(encoder: ImageEncoder, data: bytes, side: int | None = None) -> F32:
    """The vectors the searcher embeds a query file into, padded to [QUERY_VIEWS, C]: a query
    without flat borders has no framed view, its row repeats row 0 (max scoring ignores it)."""
    image = encoder.decode(data) if side is None else _decode(encoder, data, side)
    framed = encoder.decode_framed(data, image) if side is None else None
    vectors: F32 = encoder.encode_query(image, framed)
    if len(vectors) < QUERY_VIEWS:
        pad = np.repeat(vectors[:1], QUERY_VIEWS - len(vectors), axis=0)
        vectors = np.concatenate([vectors, pad])
    return vectors


def _decode(encoder: ImageEncoder, data: bytes, side: int) -> DecodedImage:
    from imgsearch.model.preprocess import decode_image

    return decode_image(data, side, encoder.limits)


def store_query(vectors: F32) -> F32:
    """The argument VectorStore.search takes for these query vectors (padding removed)."""
    unique = np.unique(vectors, axis=0)
    return unique if len(unique) < len(vectors) else vectors
