"""The only module that imports onnxruntime: loads a backbone and checks it meets a contract.

Two contracts; any backbone meeting one drops in:

- feature map, v1 (what `scripts/export_model.py` produces): one float32 input `pixels`
  [N, 3, H, W], RGB in [0, 1], normalisation inside the graph; one float32 output `features`
  [N, C, ceil(H/stride), ceil(W/stride)], the last conv map (pooled here, regions possible).
- embedding: one input, either `image` uint8 [N, H, W, 3] (RGB, any size) or `pixels` as
  above; one float32 output `embedding` [N, D], L2-normalised (pooling inside the graph).
  `sscd-mnv4s` meets it as shipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from imgsearch.backbones import Contract, ModelChoice
from imgsearch.errors import ModelError
from imgsearch.metrics import MODEL_RUNS_WAITING

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
IMAGE_INPUT_NAME = "image"
OUTPUT_NAME = "features"
EMBEDDING_NAME = "embedding"
CONTRACT_VERSION = "1"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str  # catalogue name or file stem
    key: str  # names this model's vectors (see ModelChoice.key)
    arch: str
    contract: Contract
    channels: int  # length of each descriptor
    stride: int  # feature-map contract only
    path: Path
    uint8_input: bool  # embedding contract: takes `image` uint8 NHWC
    reason: str
    redistributable: bool


class CoreSlots:
    """Shares `cores` between concurrent forward passes without oversubscribing them.

    A pass that finds every core free takes them all (one query alone gets the lowest
    latency); one that finds a pass in flight takes one core, waiting for it if need be, so
    that concurrent queries run side by side on one thread each: measured 1.2x the
    throughput of letting multi-thread passes fight for the cores on the model alone
    (bench/results/speed/providers.md); in the whole service, since idle threads no longer
    spin, the two are within the machine's noise (bench/results/speed/README.md).
    """

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self._free = cores
        self._waiting = 0
        self._changed = threading.Condition()

    @contextmanager
    def claim(self) -> Iterator[int]:
        """Hold cores for one pass; yields how many (all of them, or 1)."""
        with self._changed:
            if self._free == self.cores and self._waiting == 0:
                taken = self.cores
            else:
                taken = 1  # under load, one core per pass, side by side
                self._waiting += 1
                MODEL_RUNS_WAITING.inc()
                try:
                    self._changed.wait_for(lambda: self._free > 0)
                finally:
                    self._waiting -= 1
                    MODEL_RUNS_WAITING.dec()
            self._free -= taken
        try:
            yield taken
        finally:
            with self._changed:
                self._free += taken
                self._changed.notify_all()


class OnnxBackbone:
    """A backbone of either contract; thread-safe.

    With `threads` > 1, passes share the cores through `CoreSlots`: a pass alone runs on
    `threads` intra-op threads, concurrent passes on one thread each (a second session of
    the same model, ~the model's size in memory). With `threads` = 1 (the indexing workers)
    every caller runs the one session side by side with the others.
    """

    def __init__(self, choice: ModelChoice, threads: int = 2) -> None:
        path = choice.path
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        self._session = _load_session(path, threads)
        self._narrow = _load_session(path, 1) if threads > 1 else None
        self._slots = CoreSlots(threads)
        self.info = self._check_contract(choice)
        self._input = IMAGE_INPUT_NAME if self.info.uint8_input else INPUT_NAME
        self._output = OUTPUT_NAME if self.info.contract is Contract.FEATURE_MAP else EMBEDDING_NAME
        log.info(
            "model loaded name=%s contract=%s dimensions=%d threads=%d path=%s",
            self.info.name,
            self.info.contract,
            self.info.channels,
            threads,
            path,
        )

    def _check_contract(self, choice: ModelChoice) -> ModelInfo:
        path = choice.path
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        meta = self._session.get_modelmeta().custom_metadata_map
        if meta.get("imgsearch.contract", CONTRACT_VERSION) != CONTRACT_VERSION:
            raise ModelError(f"{path} declares contract {meta['imgsearch.contract']}")
        float_input = list(inputs) == [INPUT_NAME] and inputs[INPUT_NAME].type == "tensor(float)"
        uint8_input = (
            list(inputs) == [IMAGE_INPUT_NAME] and inputs[IMAGE_INPUT_NAME].type == "tensor(uint8)"
        )
        if float_input and OUTPUT_NAME in outputs and len(outputs[OUTPUT_NAME].shape) == 4:
            contract, output = Contract.FEATURE_MAP, outputs[OUTPUT_NAME]
        elif (float_input or uint8_input) and EMBEDDING_NAME in outputs:
            contract, output = Contract.EMBEDDING, outputs[EMBEDDING_NAME]
            if len(output.shape) != 2:
                raise ModelError(f"{path}: output {EMBEDDING_NAME!r} is not [batch, dimensions]")
        else:
            raise ModelError(
                f"{path} meets neither model contract (README 'Models'): expected input "
                f"{INPUT_NAME!r} (float32 NCHW) or {IMAGE_INPUT_NAME!r} (uint8 NHWC) and output "
                f"{OUTPUT_NAME!r} (feature map) or {EMBEDDING_NAME!r} (vector); found inputs "
                f"{list(inputs)} and outputs {list(outputs)}"
            )
        channels = output.shape[1] if isinstance(output.shape[1], int) else None
        if channels is None and "imgsearch.channels" in meta:
            channels = int(meta["imgsearch.channels"])
        if channels is None:
            raise ModelError(f"{path} does not declare its number of output channels")
        return ModelInfo(
            name=choice.name,
            key=choice.key,
            arch=meta.get("imgsearch.arch", path.stem),
            contract=contract,
            channels=channels,
            stride=int(meta.get("imgsearch.stride", "32")),
            path=path,
            uint8_input=uint8_input,
            reason=choice.reason,
            redistributable=choice.redistributable,
        )

    def run(self, batch: NDArray[np.float32] | NDArray[np.uint8]) -> NDArray[np.float32]:
        """The model's output for a batch: feature maps [N, C, h, w] or vectors [N, D]; the
        input is [N, 3, H, W] float RGB in [0, 1], or [N, H, W, 3] uint8 RGB (`uint8_input`)."""
        if self._narrow is None:
            return self._run(self._session, batch)
        with self._slots.claim() as cores:
            return self._run(self._session if cores > 1 else self._narrow, batch)

    def _run(
        self, session: ort.InferenceSession, batch: NDArray[np.float32] | NDArray[np.uint8]
    ) -> NDArray[np.float32]:
        try:
            (out,) = session.run([self._output], {self._input: batch})
        except _ORT_ERRORS as exc:
            raise ModelError(f"inference failed: {exc}") from exc
        return np.asarray(out, dtype=np.float32)


def _load_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One op at a time, parallel inside ops: the best use of few cores for conv nets. With
    # threads=1 a run uses only its calling thread, so several threads can each run the one
    # session side by side.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning for the next op: a search is a pass
    # among decoding and keypoint work on the same two cores, which the spin took from them
    # (bench/results/speed/README.md: 68-74 -> 52-54 ms of CPU per search, same latency).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except _ORT_ERRORS as exc:
        raise ModelError(f"cannot load model {path}: {exc}") from exc
