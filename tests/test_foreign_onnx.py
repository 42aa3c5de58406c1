"""Foreign ONNX: generic dims, --input over the file, opset upgrades, 0-d and stateful inputs, refused outputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from foreign import RATE, classifier_with_images, stateful_vad, vad_stream

from edgekit import compiler
from edgekit.errors import PassFailed
from edgekit.ingest import ingest
from edgekit.ingest.onnx import load_graph, opset_of
from edgekit.runtime import load
from edgekit.spec import parse_input_spec


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return classifier_with_images(tmp_path_factory.mktemp("foreign"), 24, 48, 192)


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vad")
    path = stateful_vad(folder / "vad.onnx")
    np.savez(folder / "stream.npz", **vad_stream(path, 24))
    return path, folder / "stream.npz"


def _reference(path, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def test_generic_dims_are_independent_and_input_wins(classifier):
    path, _, _ = classifier
    own = ingest(path).inputs[0]
    assert own.shape == ("x_dim0", 3, "x_dim2", "x_dim3")  # '?' twice is two dims, not one
    given = ingest(path, (parse_input_spec("x:1x3x48x192"),)).inputs[0]
    assert given.shape == (1, 3, 48, 192)


def test_opset11_model_compiles_fp32_and_int8_with_user_shape(classifier, tmp_path):
    path, data, images = classifier
    inputs = (parse_input_spec("x:1x3x48x192"),)
    fp32 = compiler.compile(path, "cpu-ort", tmp_path / "fp32", "fp32", data, inputs=inputs, bench_runs=2)
    assert fp32.manifest.inputs[0].shape == (1, 3, 48, 192)
    assert fp32.manifest.metrics.bench.conditions["input_shapes"]["x"] == [1, 3, 48, 192]
    int8 = compiler.compile(path, "cpu-ort", tmp_path / "int8", "int8", data, inputs=inputs, bench_runs=2)
    steps = [(s["pass"], s["origin"]) for s in int8.manifest.steps]
    assert steps[0] == ("upgrade-onnx-opset", "inserted")
    assert opset_of(load_graph(int8.package / "model.onnx")) == 13
    ops = [node.op_type for node in load_graph(int8.package / "model.onnx").graph.node]
    assert ops.count("DequantizeLinear") >= 2  # Conv and Gemm quantized
    session = load(int8.package)
    feeds = [{"x": image} for image in images[:8]]
    want = np.concatenate([out[0] for out in _reference(path, feeds)])
    got = np.concatenate([session.run(feed)["probs"] for feed in feeds])
    # int8 activations and weights on a 5-class softmax: within a few hundredths of probability
    assert np.abs(got - want).max() < 0.05 and (got.argmax(1) == want.argmax(1)).mean() >= 0.75


def test_a_step_whose_model_the_runtime_refuses_is_one_line_naming_the_pass(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.evaluate import FidelityCheck
    from edgekit.instruments import StepRecord
    from edgekit.model import Format, Model
    from edgekit.pipeline import PlannedStep
    from edgekit.recipe import parse_step
    from edgekit.spec import TensorSpec

    # what ORT's QDQ quantizer once wrote into opset-11 graphs: DequantizeLinear with a per-channel axis
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], axis=0, name="dq_conv_w")], "bad",
        [helper.make_tensor_value_info("q", TensorProto.INT8, [4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "scale"), numpy_helper.from_array(np.array(0, np.int8), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save(model, str(tmp_path / "bad.onnx"))
    produced = Model(Format.ONNX, (TensorSpec("q", (4,), "int8"),), (TensorSpec("y", (4,)),), files=(tmp_path / "bad.onnx",))
    step = PlannedStep(parse_step({"pass": "quantize-static"}, "test"), "recipe", Format.ONNX, Format.ONNX)
    check = FidelityCheck([{"q": np.zeros(4, np.int8)}])
    with pytest.raises(PassFailed, match=r"^step 'quantize-static' failed: RuntimeError: produced a model onnxruntime refuses: .*axis"):
        check.after_step(step, produced, produced, StepRecord("quantize-static", "recipe", 0.0, False, None))


@pytest.mark.parametrize(("target", "recipe"), [("cpu-ort", "fp32"), ("cpu-ort", "int8-dynamic"), ("cpu-openvino", "fp32")])
def test_stateful_model_with_scalar_input_compiles_and_measures(vad, tmp_path, target, recipe):
    path, data = vad
    result = compiler.compile(path, target, tmp_path / "pkg", recipe, data, bench_runs=2)
    conditions = result.manifest.metrics.bench.conditions
    assert conditions["input_shapes"] == {"x": [1, 256], "sr": [], "state": [1, 1, 16]}
    assert conditions["unbound_dims"] == {}
    session = load(result.package)
    stream = np.load(data)
    state = stream["state"][0]
    reference = _reference(path, [{"x": stream["x"][0], "sr": np.array(RATE), "state": state}])[0]
    out = session.run({"x": stream["x"][0], "sr": np.array(RATE), "state": state})
    assert set(out) == {"prob", "stateN"} and out["stateN"].shape == (1, 1, 16)
    tolerance = 1e-4 if recipe == "fp32" else 0.05  # dynamic int8 GRU weights
    np.testing.assert_allclose(out["prob"], reference[0], atol=tolerance)
    for _ in range(3):  # the state it returns feeds its next call
        out = session.run({"x": stream["x"][1], "sr": np.array(RATE), "state": out["stateN"]})
    assert np.isfinite(out["prob"]).all()


def test_unbound_symbolic_dims_are_named_before_benchmarking(vad, tmp_path, caplog):
    from edgekit.bench.harness import measure

    path, data = vad
    result = compiler.compile(path, "cpu-ort", tmp_path / "pkg", "fp32", data, bench_runs=2)
    manifest_path = result.package / "manifest.json"
    import json

    manifest = json.loads(manifest_path.read_text())
    manifest["data"] = {}  # a package whose compile had no data for its sizes
    manifest_path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        figures = measure(result.package, runs=2, warmup=1)
    assert figures.conditions["unbound_dims"] == {"x:x_dim1": 1}
    assert "input 'x': symbolic dim 'x_dim1' has no size from data or --input; benchmarked at 1" in caplog.text


def test_ops_the_quantizer_leaves_in_float_are_named(classifier, tmp_path):
    path, data, _ = classifier
    recipe = tmp_path / "int8-no-gemm.yaml"
    recipe.write_text("name: int8-no-gemm\nprecision: int8\nsteps:\n  - pass: quantize-static\n"
                      "    with: {exclude_op_types: [Gemm]}\n")
    result = compiler.compile(path, "cpu-ort", tmp_path / "int8", recipe, data,
                              inputs=(parse_input_spec("x:1x3x48x192"),), bench_runs=2)
    assert result.manifest.float_ops == {"Gemm": 1}  # the Conv is quantized, the excluded Gemm named
