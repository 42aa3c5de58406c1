"""tflite-to-onnx: a .tflite made elsewhere reaches cpu-ort through tflite2onnx, with the .tflite's own io.

The source is MediaPipe's short-range face detector (fp16 weights behind DEQUANTIZE, NHWC input), read
from the mediapipe wheel as the benchmark zoo does (downloaded once with `pip download --no-deps`, never
installed); it is compiled for cpu-ort and run on the real ONNX Runtime against LiteRT.
The tiny CNN's .tflite is the refusal case: litert-torch makes its 1-channel conv a DEPTHWISE_CONV_2D
with depth multiplier 8, which tflite2onnx 0.4.1 does not convert.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import compile_cnn, run_litert
from extras import require

from edgekit.compiler import compile, plan
from edgekit.errors import UnsupportedOnTarget
from edgekit.ingest import ingest

require("tflite2onnx", "tflite2onnx")

FP32_RTOL = 1e-4  # max |diff| / max |reference|


@pytest.fixture(scope="module")
def tflite_source() -> Path:
    sys.path.insert(0, str(Path(__file__).parents[2]))
    from benchmarks.zoo import wheel_file

    return wheel_file("mediapipe==0.10.21", "mediapipe/modules/face_detection/face_detection_short_range.tflite")


@pytest.fixture(scope="module")
def source_data(tflite_source, tmp_path_factory) -> Path:
    """Samples in [-1, 1] keyed by the .tflite's own input name."""
    (spec,) = ingest(tflite_source).inputs
    path = tmp_path_factory.mktemp("tflite-data") / "data.npz"
    images = np.random.default_rng(1).uniform(-1, 1, (8, *spec.shape[1:])).astype(np.float32)
    np.savez(path, **{spec.name: images})
    return path


@pytest.fixture(scope="module")
def ort_package(tflite_source, source_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tflite-ort") / "pkg"
    compile(tflite_source, "cpu-ort", out, "fp32", source_data, source_data, bench_runs=3)
    return out


def test_planner_inserts_tflite_to_onnx_for_cpu_ort(tflite_source):
    first = plan(tflite_source, "cpu-ort", "fp32").describe()[0]
    assert (first["pass"], first["origin"], first["from"], first["to"]) == ("tflite-to-onnx", "inserted", "tflite", "onnx")


def test_tflite_source_runs_on_onnx_runtime_like_litert(ort_package, tflite_source, source_data):
    import onnx
    import onnxruntime as ort

    source = ingest(tflite_source)
    graph = onnx.load(str(ort_package / "model.onnx"))
    assert any(o.version >= 13 for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    session = ort.InferenceSession(str(ort_package / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [spec.name for spec in source.inputs]
    assert [o.name for o in session.get_outputs()] == [spec.name for spec in source.outputs]
    (spec,) = source.inputs
    assert list(session.get_inputs()[0].shape) == list(spec.shape)  # NHWC, as the .tflite takes it
    for image in np.load(source_data)[spec.name][:4]:
        got = session.run(None, {spec.name: image[None]})
        want = run_litert(tflite_source, image[None])
        assert got[0].shape == want.shape
        assert np.abs(got[0] - want).max() <= FP32_RTOL * np.abs(want).max()


def _with_op_replaced(path: Path, old: str, new: str, out: Path) -> Path:
    """`path` with every `old` operator turned into `new` (both unary, same shapes): a valid model."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    replaced = 0
    for code in model.operatorCodes:
        if flatbuffer_utils.get_builtin_code_from_operator_code(code) == getattr(schema.BuiltinOperator, old):
            code.builtinCode = getattr(schema.BuiltinOperator, new)
            code.deprecatedBuiltinCode = min(code.builtinCode, 127)
            replaced += 1
    assert replaced, f"no {old} in {path}"
    out.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return out


def test_an_op_tflite2onnx_lacks_is_one_clear_refusal(tflite_source, source_data, tmp_path):
    swish = _with_op_replaced(tflite_source, "RELU", "HARD_SWISH", tmp_path / "swish.tflite")
    with pytest.raises(UnsupportedOnTarget) as error:
        compile(swish, "cpu-ort", tmp_path / "out", "fp32", source_data, source_data, bench_runs=3)
    assert str(error.value) == "tflite2onnx cannot convert op HARD_SWISH of swish.tflite"
    assert not (tmp_path / "out").exists()


def test_a_depthwise_conv_with_multiplier_is_refused_naming_the_op(tmp_path_factory, cnn_source, cnn_data, tmp_path):
    cnn = compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-tflite", "fp32", "cnn-fp32") / "model.tflite"
    (spec,) = ingest(cnn).inputs
    data = tmp_path / "data.npz"
    np.savez(data, **{spec.name: np.load(cnn_data)["image"]})
    with pytest.raises(UnsupportedOnTarget) as error:
        compile(cnn, "cpu-ort", tmp_path / "out", "fp32", data, data, bench_runs=3)
    assert str(error.value) == ("tflite2onnx cannot convert op DEPTHWISE_CONV_2D of model.tflite: "
                                "assert(option.DepthMultiplier() == 1)")
