"""fp32 rounding noise: measured against float64, and what FidelityCheck allows an fp32 step because of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from foreign import opset11_classifier

from edgekit.conditioning import float_noise
from edgekit.errors import FidelityError
from edgekit.evaluate import NOISE_MARGIN, FidelityCheck
from edgekit.ingest import ingest
from edgekit.instruments import StepRecord
from edgekit.pipeline import PlannedStep
from edgekit.recipe import parse_step


def naive_layer_norm(path: Path, scale: float = 1.0) -> Path:
    """A LayerNorm written as E[x²] - E[x]² (as jax2tf exported magika's): ill-conditioned when |mean| >> std.
    `scale` multiplies the output (a stand-in for a conversion that moved it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1]),
        helper.make_node("Mul", ["x", "x"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["mean_square"], axes=[1]),
        helper.make_node("Mul", ["mean", "mean"], ["mean_squared"]),
        helper.make_node("Sub", ["mean_square", "mean_squared"], ["variance"]),
        helper.make_node("Max", ["variance", "eps"], ["safe"]),
        helper.make_node("Sqrt", ["safe"], ["std"]),
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normed"]),
        helper.make_node("Mul", ["normed", "scale"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "naive_ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
                              [numpy_helper.from_array(np.array(1e-12, np.float32), "eps"),
                               numpy_helper.from_array(np.array(scale, np.float32), "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def offset_feeds(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": (30 + 0.05 * rng.standard_normal((1, 256))).astype(np.float32)} for _ in range(count)]


def test_noise_is_large_for_an_ill_conditioned_graph_and_tiny_for_a_plain_one(tmp_path):
    ill = ingest(naive_layer_norm(tmp_path / "ln.onnx"))
    assert float_noise(ill, offset_feeds()) > 1e-3  # var = 2.5e-3 from terms of 900: fp32 keeps ~2 digits of it
    plain = ingest(opset11_classifier(tmp_path / "classifier.onnx"))
    images = np.random.default_rng(0).random((4, 1, 3, 16, 16), dtype=np.float32)
    assert float_noise(plain, [{"x": image} for image in images]) < 1e-5


def _check(before, after, feeds):
    step = PlannedStep(parse_step({"pass": "optimize-onnx"}, "test"), "recipe", before.format, after.format)
    record = StepRecord("optimize-onnx", "recipe", 0.0, False, None)
    FidelityCheck(feeds).after_step(step, before, after, record)
    return record.details["fidelity"]


def test_an_fp32_step_may_differ_by_the_noise_the_model_amplifies(tmp_path):
    before = ingest(naive_layer_norm(tmp_path / "ln.onnx"))
    after = ingest(naive_layer_norm(tmp_path / "moved.onnx", scale=1.002))  # 2e-3: over optimize-onnx's 1e-4
    fidelity = _check(before, after, offset_feeds())
    assert fidelity["max_rel"] > 1e-4
    assert fidelity["max_rel"] <= NOISE_MARGIN * fidelity["float_noise"]


def test_a_well_conditioned_model_gets_no_such_allowance(tmp_path):
    import onnx
    from onnx import numpy_helper

    path = opset11_classifier(tmp_path / "classifier.onnx")
    moved = onnx.load(str(path))
    for init in moved.graph.initializer:
        if init.name == "fc_b":  # move one logit: the softmax's probabilities shift by ~1e-3
            bias = numpy_helper.to_array(init).copy()
            bias[0] += 5e-3
            init.CopyFrom(numpy_helper.from_array(bias, "fc_b"))
    onnx.save(moved, str(tmp_path / "moved.onnx"))
    images = np.random.default_rng(0).random((4, 1, 3, 16, 16), dtype=np.float32)
    with pytest.raises(FidelityError, match=r"over its tolerance 1e-04, 16x the model's fp32 rounding noise"):
        _check(ingest(path), ingest(tmp_path / "moved.onnx"), [{"x": image} for image in images])
