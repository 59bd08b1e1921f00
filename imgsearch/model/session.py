"""The only module that imports onnxruntime: loads a backbone and checks it meets the contract.

Contract v1 (what `scripts/export_model.py` produces; any backbone meeting it drops in):
one float32 input `pixels` [N, 3, H, W], RGB in [0, 1], normalisation inside the graph;
one float32 output `features` [N, C, ceil(H/stride), ceil(W/stride)], the last conv map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from imgsearch.errors import ModelError

log = logging.getLogger(__name__)

# onnxruntime's error types derive from Exception directly; these are the ones a bad model
# file or a failed run raise.
_ORT_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    RuntimeError,
)

INPUT_NAME = "pixels"
OUTPUT_NAME = "features"
CONTRACT_VERSION = "1"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    arch: str
    channels: int
    stride: int
    path: Path


class OnnxBackbone:
    """A feature-map extractor; thread-safe (onnxruntime sessions may be run concurrently)."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        options = ort.SessionOptions()
        # One op at a time, parallel inside ops: the best use of few cores for conv nets. With
        # threads=1 a run uses only its calling thread, so several threads (the indexer's
        # embedding workers) can each run the one session side by side.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except _ORT_ERRORS as exc:
            raise ModelError(f"cannot load model {path}: {exc}") from exc
        self.info = self._check_contract(path)
        log.info(
            "model loaded arch=%s channels=%d stride=%d path=%s",
            self.info.arch,
            self.info.channels,
            self.info.stride,
            path,
        )

    def _check_contract(self, path: Path) -> ModelInfo:
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise ModelError(
                f"{path} does not meet contract v{CONTRACT_VERSION}: expected input "
                f"{INPUT_NAME!r} and output {OUTPUT_NAME!r}, found inputs "
                f"{[i.name for i in inputs]} and outputs {[o.name for o in outputs]}"
            )
        meta = self._session.get_modelmeta().custom_metadata_map
        if meta.get("imgsearch.contract", CONTRACT_VERSION) != CONTRACT_VERSION:
            raise ModelError(f"{path} declares contract {meta['imgsearch.contract']}")
        output = next(o for o in outputs if o.name == OUTPUT_NAME)
        channels = output.shape[1] if isinstance(output.shape[1], int) else None
        if channels is None and "imgsearch.channels" in meta:
            channels = int(meta["imgsearch.channels"])
        if channels is None:
            raise ModelError(f"{path} does not declare its number of output channels")
        return ModelInfo(
            arch=meta.get("imgsearch.arch", path.stem),
            channels=channels,
            stride=int(meta.get("imgsearch.stride", "32")),
            path=path,
        )

    def run(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """Feature maps [N, C, h, w] for a batch [N, 3, H, W] of RGB pixels in [0, 1]."""
        try:
            (features,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: pixels})
        except _ORT_ERRORS as exc:
            raise ModelError(f"inference failed: {exc}") from exc
        return np.asarray(features, dtype=np.float32)
