"""The production descriptor API as this checkout has it, in one place.

The service is moving from one whole-image vector per file to a descriptor *set* per file
(whole image + regions, `ImageEncoder.describe`, one Qdrant point per row) with multi-scale
queries (`ImageEncoder.encode_query`). The benchmark measures whichever the checkout has:
these helpers call the production functions and say how many points a file costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from imgsearch import model as production_model
from imgsearch.model import DecodedImage, ImageEncoder
from imgsearch.store import FileState

F32 = NDArray[np.float32]

REGIONAL = hasattr(ImageEncoder, "describe")
POINTS_PER_IMAGE: int = int(getattr(production_model, "REGIONS_PER_IMAGE", 1)) if REGIONAL else 1


def describe(encoder: ImageEncoder, images: Sequence[DecodedImage]) -> list[Any]:
    """What the indexer stores per image: a DescriptorSet, or one vector on older checkouts."""
    if REGIONAL:
        return list(encoder.describe(images))
    return list(encoder.encode(images))


def whole(descriptors: Any) -> F32:  # noqa: ANN401 - DescriptorSet or vector, per checkout
    """The whole-image vector of what describe() returned."""
    if REGIONAL:
        vector: F32 = descriptors.vectors[0]
        return vector
    return np.asarray(descriptors, dtype=np.float32)


def rows(descriptors: Any) -> F32:  # noqa: ANN401
    """All vectors [R, C] of what describe() returned (R = POINTS_PER_IMAGE)."""
    if REGIONAL:
        vectors: F32 = descriptors.vectors
        return vectors
    return np.asarray(descriptors, dtype=np.float32)[None, :]


def item(state: FileState, vectors: F32) -> tuple[FileState, Any]:
    """An upsert item for VectorStore from vectors [R, C] (row 0 = whole image)."""
    if REGIONAL:
        from imgsearch.model import DescriptorSet  # type: ignore[attr-defined,unused-ignore]

        return state, DescriptorSet(vectors, _boxes(len(vectors)))
    return state, vectors[0]


def _boxes(count: int) -> F32:
    from imgsearch.model.encoder import REGION_SCALES  # type: ignore[attr-defined,unused-ignore]

    boxes = [(0.0, 0.0, 1.0, 1.0)]
    for per_side, fraction in REGION_SCALES:
        for i in range(per_side):
            for j in range(per_side):
                left = j * (1 - fraction) / (per_side - 1)
                top = i * (1 - fraction) / (per_side - 1)
                boxes.append((left, top, left + fraction, top + fraction))
    return np.asarray(boxes[:count], dtype=np.float32)


def query_vectors(encoder: ImageEncoder, image: DecodedImage) -> F32:
    """The vectors a query is searched with [Q, C] (Q = 1 + extra query scales)."""
    if hasattr(encoder, "encode_query"):
        vectors: F32 = encoder.encode_query(image)
        return vectors
    return encoder.encode([image])


def store_query(vectors: F32) -> F32:
    """The argument VectorStore.search takes for these query vectors."""
    return vectors if REGIONAL else vectors[0]
