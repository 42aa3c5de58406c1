"""tflite-to-onnx: a .tflite made elsewhere reaches cpu-ort through tflite2onnx, with the .tflite's own io.

The source is MediaPipe's short-range face detector (fp16 weights behind DEQUANTIZE, NHWC input), read
from the mediapipe wheel as the benchmark zoo does (downloaded once with `pip download --no-deps`, never
installed); it is compiled for cpu-ort and run on the real ONNX Runtime against LiteRT.
MediaPipe's selfie segmenter has a custom op (Convolution2DTransposeBias) and HARD_SWISH, which are
rewritten into builtins first (tflite_rewrite) for tflite2onnx and OpenVINO.
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
    tanh = _with_op_replaced(tflite_source, "RELU", "TANH", tmp_path / "tanh.tflite")
    with pytest.raises(UnsupportedOnTarget) as error:
        compile(tanh, "cpu-ort", tmp_path / "out", "fp32", source_data, source_data, bench_runs=3)
    assert str(error.value) == "tflite2onnx cannot convert op TANH of tanh.tflite"
    assert not (tmp_path / "out").exists()


def _outputs_match_litert(package: Path, tflite: Path, images: np.ndarray) -> None:
    """Each image's first output from the package within fp32 tolerance of LiteRT's: 1e-4, or what the model's own
    fp32 rounding noise allows two fp32 runtimes (measured here, so the bound holds on any CPU's kernels)."""
    from edgekit.conditioning import float_noise
    from edgekit.evaluate import NOISE_MARGIN
    from edgekit.runtime import load

    session = load(package)
    source = ingest(tflite)
    (spec,) = source.inputs
    feeds = [{spec.name: image[None]} for image in images]
    tolerance = max(FP32_RTOL, NOISE_MARGIN * (float_noise(source, feeds) or 0.0))
    for feed in feeds:
        got = next(iter(session.run(feed).values()))
        want = run_litert(tflite, feed[spec.name])
        assert np.abs(got - want).max() <= tolerance * np.abs(want).max()


def test_hard_swish_is_spelled_in_ops_tflite2onnx_has(tflite_source, source_data, tmp_path):
    swish = _with_op_replaced(tflite_source, "RELU", "HARD_SWISH", tmp_path / "swish.tflite")
    compile(swish, "cpu-ort", tmp_path / "out", "fp32", source_data, source_data, bench_runs=3)
    _outputs_match_litert(tmp_path / "out", swish, np.load(source_data)[ingest(swish).inputs[0].name][:3])


@pytest.fixture(scope="module")
def selfie(tmp_path_factory) -> tuple[Path, Path]:
    """MediaPipe's selfie segmenter (custom Convolution2DTransposeBias, HARD_SWISH) and crops of skimage's astronaut
    in [0, 1] (a person: random images give an all-zero mask, whose relative error means nothing)."""
    from skimage import data as images
    sys.path.insert(0, str(Path(__file__).parents[2]))
    from benchmarks.zoo import wheel_file

    path = wheel_file("mediapipe==0.10.21", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite")
    (spec,) = ingest(path).inputs
    data = tmp_path_factory.mktemp("selfie") / "data.npz"
    astronaut = images.astronaut().astype(np.float32) / 255  # 512 x 512 x 3
    crops = [astronaut[::2, ::2], astronaut[:256, 128:384], astronaut[64:320, 64:320], astronaut[::2, ::-2]]
    np.savez(data, **{spec.name: np.stack(crops)})
    return path, data


@pytest.mark.parametrize("target", ["cpu-ort", "cpu-openvino"])
def test_mediapipe_custom_transposed_conv_becomes_a_builtin(selfie, tmp_path, target):
    path, data = selfie
    compile(path, target, tmp_path / "out", "fp32", data, data, bench_runs=3)
    _outputs_match_litert(tmp_path / "out", path, np.load(data)[ingest(path).inputs[0].name][:2])


def test_the_rewritten_flatbuffer_computes_what_the_custom_op_did(selfie, tmp_path):
    from ai_edge_litert.tools import flatbuffer_utils

    from edgekit.passes.litert_quantizer import plain_float_model
    from edgekit.passes.tflite_rewrite import custom_code

    path, data = selfie
    images = np.load(data)[ingest(path).inputs[0].name][:2]
    for for_tflite2onnx in (False, True):
        rewritten = tmp_path / f"builtin-{for_tflite2onnx}.tflite"
        rewritten.write_bytes(plain_float_model(path.read_bytes(), for_tflite2onnx)[0])
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(rewritten.read_bytes()))
        assert not [op for op in model.subgraphs[0].operators if custom_code(model, op)]
        want = run_litert(path, images)
        assert np.abs(run_litert(rewritten, images) - want).max() <= FP32_RTOL * np.abs(want).max()


def test_a_depthwise_conv_with_multiplier_is_refused_naming_the_op(tmp_path_factory, cnn_source, cnn_data, tmp_path):
    cnn = compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-tflite", "fp32", "cnn-fp32") / "model.tflite"
    (spec,) = ingest(cnn).inputs
    data = tmp_path / "data.npz"
    np.savez(data, **{spec.name: np.load(cnn_data)["image"]})
    with pytest.raises(UnsupportedOnTarget) as error:
        compile(cnn, "cpu-ort", tmp_path / "out", "fp32", data, data, bench_runs=3)
    assert str(error.value) == ("tflite2onnx cannot convert op DEPTHWISE_CONV_2D of model.tflite: "
                                "assert(option.DepthMultiplier() == 1)")
