"""Descriptor types shared by the model (which makes them) and the store (which keeps them).

numpy only: importing these must not load onnxruntime or an image library, so that the store
and the commands built on it (backup, optimize) start without the ML stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# The box of a whole-image descriptor (row 0 of a DescriptorSet).
WHOLE_IMAGE_BOX = np.array([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class DescriptorSet:
    """Row 0 describes the whole image, the other rows its regions; boxes are (x0, y0, x1, y1)
    as fractions of the image's width and height."""

    vectors: NDArray[np.float32]  # [regions, C], L2-normalised rows
    boxes: NDArray[np.float32]  # [regions, 4]
