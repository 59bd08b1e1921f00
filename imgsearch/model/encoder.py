"""Turns decoded images into L2-normalised GeM descriptors with the ONNX backbone."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from imgsearch.model.preprocess import DecodedImage, DecodeLimits, decode_image
from imgsearch.model.session import ModelInfo, OnnxBackbone

GEM_POWER = 3.0
_EPS = 1e-6


class ImageEncoder:
    """Decode + embed. One instance is shared by the embedder and the searcher."""

    def __init__(
        self,
        model_path: Path,
        image_size: int = 384,
        threads: int = 2,
        limits: DecodeLimits | None = None,
        max_batch: int = 16,
    ) -> None:
        self._backbone = OnnxBackbone(model_path, threads=threads)
        self.image_size = image_size
        self.limits = limits or DecodeLimits()
        self.max_batch = max_batch

    @property
    def info(self) -> ModelInfo:
        return self._backbone.info

    @property
    def dimensions(self) -> int:
        return self._backbone.info.channels

    @property
    def name(self) -> str:
        return self._backbone.info.arch

    def decode(self, data: bytes) -> DecodedImage:
        """Decode with this encoder's input size and limits (raises InvalidImageError)."""
        return decode_image(data, self.image_size, self.limits)

    def encode_bytes(self, data: bytes) -> NDArray[np.float32]:
        """Descriptor of one encoded image file."""
        vector: NDArray[np.float32] = self.encode([self.decode(data)])[0]
        return vector

    def encode(self, images: Sequence[DecodedImage]) -> NDArray[np.float32]:
        """Descriptors [N, C] of decoded images, L2-normalised, in input order.

        Images are batched only with others of the same padded size, so an image's descriptor
        never depends on what it was batched with (padding changes border activations).
        """
        out = np.empty((len(images), self.dimensions), dtype=np.float32)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            groups[self._canvas(image)].append(index)
        for (height, width), indices in groups.items():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start : start + self.max_batch]
                out[chunk] = self._encode_same_size([images[i] for i in chunk], height, width)
        return out

    def _canvas(self, image: DecodedImage) -> tuple[int, int]:
        stride = self._backbone.info.stride
        height, width = image.pixels.shape[:2]
        return math.ceil(height / stride) * stride, math.ceil(width / stride) * stride

    def _encode_same_size(
        self, images: Sequence[DecodedImage], height: int, width: int
    ) -> NDArray[np.float32]:
        batch = np.zeros((len(images), 3, height, width), dtype=np.float32)
        for i, img in enumerate(images):
            h, w = img.pixels.shape[:2]
            batch[i, :, :h, :w] = img.pixels.transpose(2, 0, 1) * np.float32(1 / 255)
        features = self._backbone.run(batch)
        stride = self._backbone.info.stride
        return np.stack(
            [
                _gem(features[i], img.pixels.shape[0], img.pixels.shape[1], stride)
                for i, img in enumerate(images)
            ]
        )


def _gem(
    feature_map: NDArray[np.float32], height: int, width: int, stride: int
) -> NDArray[np.float32]:
    """Generalised-mean pooling over the cells that cover the image (not the padding)."""
    rows, cols = math.ceil(height / stride), math.ceil(width / stride)
    cells = np.clip(feature_map[:, :rows, :cols], _EPS, None).reshape(feature_map.shape[0], -1)
    pooled = np.power(np.mean(np.power(cells, GEM_POWER), axis=1), 1 / GEM_POWER)
    return _l2(pooled.astype(np.float32))


def _l2(vector: NDArray[np.float32]) -> NDArray[np.float32]:
    return vector / max(float(np.linalg.norm(vector)), _EPS)
