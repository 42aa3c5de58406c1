"""onnx-to-torch: every op builder against ONNX Runtime, foreign ONNX to the mobile targets, refusals by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from foreign import classifier_with_images

from edgekit import compiler
from edgekit.errors import UnsupportedOnTarget
from edgekit.runtime import load
from edgekit.spec import parse_input_spec

RNG = np.random.default_rng(0)


def rand(*shape: int, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


@dataclass
class Case:
    op: str
    inputs: list[Any]  # arrays fed at run time; Const(array) = an initializer; None = absent optional input
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 17
    outputs: int = 1

    @property
    def id(self) -> str:
        return f"{self.op}-{self.opset}-{abs(hash(repr(sorted(self.attrs.items())))) % 997}"


@dataclass
class Const:
    value: np.ndarray


CASES = [
    *[Case(op, [rand(2, 3, 4)]) for op in ("Relu", "Sigmoid", "Tanh", "Exp", "Erf", "Softplus", "HardSwish", "Abs", "Neg",
                                          "Floor", "Ceil", "Sin", "Cos", "Sign", "Softsign", "Identity")],
    Case("Mish", [rand(2, 3)], opset=18),
    Case("Sqrt", [rand(2, 3, low=0.1)]), Case("Log", [rand(2, 3, low=0.1)]), Case("Reciprocal", [rand(2, 3, low=0.5)]),
    Case("Round", [np.array([0.5, 1.5, -2.5, 0.4], np.float32)]), Case("IsNaN", [np.array([np.nan, 1.0], np.float32)]),
    Case("Not", [np.array([True, False])]),
    *[Case(op, [rand(2, 3, 4), rand(4)]) for op in ("Add", "Sub", "Mul", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")],
    Case("Div", [rand(2, 3), rand(2, 3, low=0.5)]), Case("Div", [ints(7, -7, 9), ints(2, 2, -4)]),
    Case("Pow", [rand(3, low=0.5), rand(3)]), Case("Equal", [ints(1, 2, 3), Const(ints(1, 0, 3))]),
    *[Case(op, [np.array([True, False, True]), np.array([True, True, False])]) for op in ("And", "Or", "Xor")],
    Case("Mod", [ints(7, -7, 9), ints(3, 3, -4)]), Case("Mod", [rand(4), rand(4, low=0.5)], {"fmod": 1}),
    *[Case(op, [rand(2, 3), rand(3), rand(2, 3)]) for op in ("Max", "Min", "Sum", "Mean")],
    Case("Where", [np.array([True, False, True]), rand(3), rand(3)]),
    Case("PRelu", [rand(1, 3, 4, 4), Const(rand(3, 1, 1))]), Case("LeakyRelu", [rand(5)], {"alpha": 0.2}),
    Case("Elu", [rand(5)], {"alpha": 0.7}), Case("Selu", [rand(5)]), Case("HardSigmoid", [rand(5)], {"alpha": 0.3}),
    Case("Gelu", [rand(5)], {"approximate": "tanh"}, opset=20), Case("Gelu", [rand(5)], opset=20),
    Case("Clip", [rand(6), Const(np.array(-0.5, np.float32)), Const(np.array(1.0, np.float32))], opset=13),
    Case("Clip", [rand(6), None, Const(np.array(0.5, np.float32))], opset=13),
    Case("Clip", [rand(6)], {"min": 0.0, "max": 6.0}, opset=6),
    Case("Cast", [rand(5) * 10], {"to": 6}), Case("CastLike", [ints(1, 2), Const(np.zeros(1, np.float32))], opset=15),
    Case("Reshape", [rand(2, 3, 4), Const(ints(0, -1))]), Case("Flatten", [rand(2, 3, 4, 5)], {"axis": 2}),
    Case("Squeeze", [rand(1, 3, 1, 2), Const(ints(0, -2))]), Case("Squeeze", [rand(1, 3, 1, 2)], {"axes": [2]}, opset=11),
    Case("Squeeze", [rand(1, 3, 1, 2)]),
    Case("Unsqueeze", [rand(3, 2), Const(ints(0, -1))]), Case("Unsqueeze", [rand(3, 2)], {"axes": [1]}, opset=11),
    Case("Transpose", [rand(2, 3, 4)], {"perm": [1, 2, 0]}), Case("Transpose", [rand(2, 3, 4)]),
    Case("Concat", [rand(2, 3), rand(2, 1), Const(rand(2, 2))], {"axis": -1}),
    Case("Split", [rand(6, 4), Const(ints(1, 2, 3))], {"axis": 0}, outputs=3),
    Case("Split", [rand(7, 4)], {"axis": 0, "num_outputs": 3}, opset=18, outputs=3),
    Case("Split", [rand(2, 6)], {"axis": 1, "split": [4, 2]}, opset=11, outputs=2),
    Case("Slice", [rand(5, 6), Const(ints(1, -1)), Const(ints(4, -7)), Const(ints(0, 1)), Const(ints(2, -2))]),
    Case("Slice", [rand(5, 6), Const(ints(2)), Const(ints(2**62)), Const(ints(-1))]),
    Case("Slice", [rand(5, 6)], {"starts": [1], "ends": [3], "axes": [1]}, opset=9),
    Case("Gather", [rand(4, 5), Const(ints(3, -1, 0))], {"axis": 1}),
    Case("Gather", [Const(rand(10, 4)), np.array([[1, 9], [-2, 0]], np.int64)]),
    Case("Gather", [rand(4, 5), Const(np.array(2, np.int64))]),
    Case("Expand", [rand(3, 1), Const(ints(2, 1, 4))]), Case("Tile", [rand(2, 3), Const(ints(2, 2))]),
    Case("Shape", [rand(2, 3, 4)]), Case("Shape", [rand(2, 3, 4)], {"start": 1}, opset=15), Case("Size", [rand(2, 3)]),
    Case("ConstantOfShape", [Const(ints(2, 3))]),
    Case("Pad", [rand(1, 2, 3, 3), Const(ints(0, 0, 1, 2, 0, 0, 2, 1)), Const(np.array(0.5, np.float32))]),
    Case("Pad", [rand(1, 2, 4, 4), Const(ints(0, 0, 1, 2, 0, 0, 2, 1))], {"mode": "reflect"}),
    Case("Pad", [rand(1, 2, 4, 4), Const(ints(0, 0, 1, 2, 0, 0, 2, 1))], {"mode": "edge"}),
    Case("Pad", [rand(2, 3, 4), Const(ints(1, 2)), None, Const(ints(-1))], opset=18),
    Case("Pad", [rand(1, 3, 4)], {"pads": [0, 1, 0, 0, 1, 2], "value": 1.0}, opset=2),
    Case("DepthToSpace", [rand(1, 8, 2, 3)], {"blocksize": 2}), Case("DepthToSpace", [rand(1, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"}),
    Case("SpaceToDepth", [rand(1, 2, 4, 6)], {"blocksize": 2}),
    Case("ReduceSum", [rand(2, 3, 4), Const(ints(1, -1))], opset=13), Case("ReduceSum", [rand(2, 3, 4)], {"keepdims": 0}, opset=13),
    Case("ReduceMean", [rand(2, 3, 4)], {"axes": [1], "keepdims": 0}), Case("ReduceMax", [rand(2, 3, 4), Const(ints(2))], opset=18),
    Case("ReduceMin", [rand(2, 3, 4)], {"axes": [0, 2]}), Case("ReduceL1", [rand(2, 3)], {"axes": [1]}),
    Case("ReduceL2", [rand(2, 3)], {"axes": [1]}), Case("ReduceSumSquare", [rand(2, 3)], {"axes": [0]}),
    Case("ReduceProd", [rand(2, 3, 4)], {"axes": [0, 2]}), Case("ReduceLogSumExp", [rand(2, 3)], {"axes": [1]}),
    Case("ArgMax", [rand(3, 5)], {"axis": 1, "keepdims": 0}),
    Case("ArgMin", [np.array([[1, 0, 0, 2]], np.float32)], {"axis": 1, "select_last_index": 1}),
    Case("Softmax", [rand(2, 3, 4)], {"axis": 1}, opset=11), Case("Softmax", [rand(2, 3, 4)], {"axis": 1}),
    Case("LogSoftmax", [rand(2, 5)]),
    Case("TopK", [rand(3, 6), Const(ints(2))], {"axis": 1}, outputs=2),
    Case("TopK", [rand(3, 6), Const(ints(3))], {"largest": 0}, outputs=2),
    Case("CumSum", [rand(2, 5), Const(np.array(1, np.int64))], {"exclusive": 1, "reverse": 1}),
    Case("CumSum", [rand(2, 5), Const(np.array(0, np.int32))]),
    Case("MatMul", [rand(2, 3, 4), rand(4, 5)]), Case("Einsum", [rand(2, 3), rand(3, 4)], {"equation": "ij,jk->ik"}),
    Case("Gemm", [rand(3, 4), Const(rand(5, 4)), Const(rand(5))], {"transB": 1}),
    Case("Gemm", [rand(4, 3), rand(4, 5), rand(1, 5)], {"transA": 1, "alpha": 0.5, "beta": 2.0}),
    Case("Gemm", [rand(3, 4), rand(4, 5)]),
    Case("BatchNormalization", [rand(2, 3, 4, 4), Const(rand(3)), Const(rand(3)), Const(rand(3)), Const(rand(3, low=0.5))],
         {"epsilon": 1e-3}),
    Case("InstanceNormalization", [rand(2, 3, 4, 4), Const(rand(3)), Const(rand(3))]),
    Case("LayerNormalization", [rand(2, 3, 4), Const(rand(4)), Const(rand(4))]),
    Case("LayerNormalization", [rand(2, 3, 4), Const(rand(3, 4))], {"axis": 1}),
    Case("Conv", [rand(1, 4, 9, 9), Const(rand(6, 2, 3, 3)), Const(rand(6))], {"group": 2, "strides": [2, 2], "pads": [0, 1, 2, 1]}),
    Case("Conv", [rand(1, 3, 8, 7), Const(rand(4, 3, 3, 3))], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    Case("Conv", [rand(1, 3, 8, 7), Const(rand(4, 3, 2, 2))], {"auto_pad": "SAME_LOWER"}),
    Case("Conv", [rand(1, 2, 12), Const(rand(3, 2, 3))], {"dilations": [2], "pads": [2, 2]}),
    Case("ConvTranspose", [rand(1, 4, 5, 5), Const(rand(4, 3, 3, 3)), Const(rand(3))],
         {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 1]}),
    Case("ConvTranspose", [rand(1, 4, 5, 5), Const(rand(4, 2, 2, 2))], {"strides": [2, 2], "group": 2}),
    Case("ConvTranspose", [rand(1, 3, 4, 4), Const(rand(3, 2, 3, 3))], {"strides": [2, 2], "output_shape": [8, 7]}),
    Case("ConvTranspose", [rand(1, 3, 4, 4), Const(rand(3, 2, 3, 3))], {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    Case("MaxPool", [rand(1, 2, 9, 9)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    Case("MaxPool", [rand(1, 2, 8, 8)], {"kernel_shape": [3, 3], "pads": [0, 0, 1, 1], "strides": [2, 2]}),
    Case("MaxPool", [rand(1, 2, 8, 8)], {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"}),
    Case("AveragePool", [rand(1, 2, 8, 8)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    Case("AveragePool", [rand(1, 2, 8, 8)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    Case("AveragePool", [rand(1, 2, 8, 8)], {"kernel_shape": [2, 2], "pads": [0, 0, 1, 1], "count_include_pad": 1}),
    Case("GlobalAveragePool", [rand(1, 3, 5, 4)]), Case("GlobalMaxPool", [rand(1, 3, 5, 4)]),
    Case("Resize", [rand(1, 2, 3, 4), None, Const(np.array([1, 1, 2, 2], np.float32))],
         {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
    Case("Resize", [rand(1, 2, 3, 4), None, None, Const(ints(1, 2, 5, 7))], {"mode": "linear"}),
    Case("Resize", [rand(1, 2, 3, 4), None, None, Const(ints(1, 2, 6, 8))],
         {"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
    Case("Resize", [rand(1, 2, 3, 4), None, Const(np.array([1, 1, 2, 2], np.float32))], {"mode": "cubic"}),
    Case("Upsample", [rand(1, 2, 3, 4), Const(np.array([1, 1, 2, 3], np.float32))], opset=9),
    Case("Dropout", [rand(3, 4)]),
]


def _single_node_model(case: Case):
    from onnx import helper, numpy_helper

    feeds, inits, names = {}, [], []
    for index, value in enumerate(case.inputs):
        name = f"in{index}"
        if value is None:
            names.append("")
        elif isinstance(value, Const):
            inits.append(numpy_helper.from_array(value.value, name))
            names.append(name)
        else:
            feeds[name] = value
            names.append(name)
    outputs = [f"out{i}" for i in range(case.outputs)]
    node = helper.make_node(case.op, names, outputs, name=f"the_{case.op.lower()}", **case.attrs)
    graph_inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
                    for name, value in feeds.items()]
    graph = helper.make_graph([node], "case", graph_inputs,
                              [helper.make_empty_tensor_value_info(n) for n in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 8
    return model, feeds


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_op_matches_onnxruntime(case):
    import onnxruntime as ort
    import torch

    from edgekit.passes.onnx_module import build_module

    model, feeds = _single_node_model(case)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    module = build_module(model, tuple(feeds), tuple(o.name for o in model.graph.output))
    got = module(*[torch.from_numpy(value) for value in feeds.values()])
    assert len(got) == len(want)
    for mine, theirs in zip(got, want):
        mine = mine.numpy()
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        if theirs.dtype.kind == "f":
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)  # fp32 both sides
        else:
            np.testing.assert_array_equal(mine, theirs)


def test_every_op_builder_has_a_case():
    from edgekit.passes.onnx_ops import OPS

    assert set(OPS) - {case.op for case in CASES} == set()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return classifier_with_images(tmp_path_factory.mktemp("foreign"), 16, 24, 40)


def _reference(path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": image})[0] for image in images])


@pytest.mark.parametrize("target", ["mobile-tflite", "mobile-executorch"])
def test_foreign_onnx_reaches_the_mobile_targets(classifier, tmp_path, target):
    path, data, images = classifier
    result = compiler.compile(path, target, tmp_path / "pkg", "fp32", data, bench_runs=2)
    steps = [(s["pass"], s["origin"]) for s in result.manifest.steps]
    assert ("onnx-to-torch", "inserted") in steps
    # the generic dims ('unk__1', '?', '?') take the data's sizes
    assert result.manifest.inputs[0].shape == (1, 3, 24, 40)
    session = load(result.package)
    got = np.concatenate([session.run({"x": image})["probs"] for image in images[:6]])
    np.testing.assert_allclose(got, _reference(path, images[:6]), atol=1e-4)  # fp32 throughout


def test_foreign_onnx_quantizes_for_litert(classifier, tmp_path):
    path, data, images = classifier
    result = compiler.compile(path, "mobile-tflite", tmp_path / "pkg", "int8", data, bench_runs=2)
    assert result.manifest.precision == "int8"
    session = load(result.package)
    got = np.concatenate([session.run({"x": image})["probs"] for image in images])
    want = _reference(path, images)
    # int8 activations and weights on a 5-class softmax: within a few hundredths of probability
    assert np.abs(got - want).max() < 0.05 and (got.argmax(1) == want.argmax(1)).mean() >= 0.75


def _save(model, path):
    import onnx

    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_op_without_a_converter_is_named(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["y"]),
                               helper.make_node("Det", ["x"], ["d"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2, None]),
                               helper.make_tensor_value_info("d", TensorProto.FLOAT, [])])
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "odd.onnx")
    with pytest.raises(UnsupportedOnTarget, match=r"^onnx-to-torch has no converter for ops Det, NonZero of odd\.onnx$"):
        compiler.compile(path, "mobile-tflite", tmp_path / "pkg", "fp32", bench_runs=2)
    assert not (tmp_path / "pkg").exists()


def test_a_shape_computed_at_run_time_is_refused_naming_the_node(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape_by_input")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])])
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "dyn.onnx")
    with pytest.raises(UnsupportedOnTarget, match=r"^onnx-to-torch: Reshape node 'reshape_by_input': input 1 \('shape'\) "
                                                  r"must be a constant"):
        compiler.compile(path, "mobile-tflite", tmp_path / "pkg", "fp32", inputs=(parse_input_spec("shape:2:int64"),),
                         bench_runs=2)
