"""onnx-to-torch: an ONNX model reaches the torch-only mobile converters through onnx2torch.

The tiny CNN, exported to ONNX, compiles for mobile-tflite (the planner inserts onnx-to-torch, then
convert-tflite) and the .tflite matches ONNX Runtime on the .onnx; an op onnx2torch has no converter
for is refused by name.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import CNN_INPUT
from onnx import TensorProto, helper

from edgekit.compiler import compile
from edgekit.errors import UnsupportedOnTarget
from edgekit.ingest import ingest
from edgekit.passes.base import Context
from edgekit.passes.onnx_torch import OnnxToTorch
from edgekit.runtime import load
from edgekit.spec import parse_input_spec

FP32_RTOL = 1e-4  # max |diff| / max |reference|


@pytest.fixture(scope="module")
def cnn_onnx17(tmp_path_factory):
    """The tiny CNN as ONNX opset 17 (torchscript exporter), as older tools write it: onnx2torch has no
    converters for opset 18+ ReduceMean/Reshape/Constant, which the dynamo exporter's `cnn_onnx` uses."""
    import torch
    from models import tiny_cnn

    module, _ = tiny_cnn()
    path = tmp_path_factory.mktemp("onnx17") / "cnn.onnx"
    torch.onnx.export(module, (torch.randn(2, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    return path


def test_onnx_source_compiles_for_mobile_tflite_and_matches_onnxruntime(cnn_onnx17, cnn_data, tmp_path):
    cnn_onnx = cnn_onnx17
    result = compile(cnn_onnx, "mobile-tflite", tmp_path / "pkg", "fp32", cnn_data,
                     inputs=(parse_input_spec(CNN_INPUT),), cache_dir=tmp_path / "cache", bench_runs=3)
    steps = [(s["pass"], s["origin"]) for s in result.plan.describe()]
    assert steps == [("onnx-to-torch", "inserted"), ("convert-tflite", "inserted")]
    images = np.load(cnn_data)["image"]
    want = ort.InferenceSession(str(cnn_onnx)).run(None, {"image": images})[0]
    session = load(tmp_path / "pkg")
    got = next(iter(session.run({"image": images}).values()))
    assert got.shape == want.shape
    assert np.abs(got - want).max() / np.abs(want).max() < FP32_RTOL


def test_converted_module_keeps_the_onnx_io_and_int_inputs(tmp_path):
    path = tmp_path / "bytes.onnx"
    node = helper.make_node("Cast", ["bytes"], ["as_float"], to=TensorProto.FLOAT)
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [1], [0.5])
    mul = helper.make_node("Mul", ["as_float", "scale"], ["scores"])
    graph = helper.make_graph([node, mul], "g", [helper.make_tensor_value_info("bytes", TensorProto.INT32, ["batch", 4])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])], [scale])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = ingest(path, ())
    converted = OnnxToTorch().run(model, None, Context(tmp_path))
    assert converted.inputs == model.inputs and converted.outputs == model.outputs
    assert str(converted.example_inputs[0].dtype) == "torch.int32"
    import torch

    got = converted.module(torch.tensor([[1, 2, 3, 4]], dtype=torch.int32))
    assert got.tolist() == [[0.5, 1.0, 1.5, 2.0]]


def test_opset_20_ops_without_converters_are_named(cnn_onnx, tmp_path):
    with pytest.raises(UnsupportedOnTarget, match=r"onnx2torch cannot convert ops .*Reshape \(opset 20\)"):
        OnnxToTorch().run(ingest(cnn_onnx, ()), None, Context(tmp_path))


def test_an_op_onnx2torch_lacks_is_refused_by_name(tmp_path):
    path = tmp_path / "hardmax.onnx"
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    with pytest.raises(UnsupportedOnTarget, match=r"^onnx2torch cannot convert op Hardmax \(opset 13\)$"):
        OnnxToTorch().run(ingest(path, ()), None, Context(tmp_path))
