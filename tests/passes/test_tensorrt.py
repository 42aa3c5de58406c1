"""build-tensorrt: what runs without TensorRT (profile ranges, the Q/DQ check, config validation, the
missing-backend error); the build itself runs in tests/gpu where TensorRT and a GPU are present."""

import importlib.util
import re
from pathlib import Path

import pytest

from edgekit.errors import MissingBackend, UserError
from edgekit.ingest import ingest
from edgekit.ingest.onnx import load_graph
from edgekit.passes.base import Context, get_pass
from edgekit.passes.tensorrt import BuildTensorrtConfig, explicit_quantization, profile_ranges
from edgekit.recipe import parse_step
from edgekit.spec import TensorSpec

NO_TENSORRT = importlib.util.find_spec("tensorrt") is None


def test_profile_ranges_batch_named_and_fixed_dims():
    spec = TensorSpec("ids", ("batch", "seq", 16))
    config = BuildTensorrtConfig(min_batch=1, opt_batch=4, max_batch=8, dims=("seq=1:128:512",))
    assert profile_ranges(spec, config) == [(1, 4, 8), (1, 128, 512), (16, 16, 16)]
    overridden = BuildTensorrtConfig(dims=("batch = 2:2:2", "seq=8:8:8"))
    assert profile_ranges(spec, overridden) == [(2, 2, 2), (8, 8, 8), (16, 16, 16)]


@pytest.mark.parametrize(("config", "message"), [
    (BuildTensorrtConfig(), "symbolic dim 'seq' (axis 1) with no profile range; give it in the step's dims, e.g. dims: ['seq=1:64:256']"),
    (BuildTensorrtConfig(dims=("seq=1-128",)), "dims entry 'seq=1-128' is not NAME=MIN:OPT:MAX"),
    (BuildTensorrtConfig(dims=("seq=8:4:16",)), "dim 'seq' of input 'ids' needs min <= opt <= max, got 8:4:16"),
    (BuildTensorrtConfig(opt_batch=64, max_batch=32, dims=("seq=1:1:1",)), "dim 'batch' of input 'ids' needs min <= opt <= max"),
])
def test_profile_range_errors(config, message):
    with pytest.raises(UserError, match=re.escape(message)):
        profile_ranges(TensorSpec("ids", ("batch", "seq")), config)


def test_config_is_validated_like_any_step():
    step = parse_step({"pass": "build-tensorrt", "with": {"fp16": True, "workspace_mb": 512, "dims": ["seq=1:8:64"]}}, "recipe r")
    assert step.config == BuildTensorrtConfig(fp16=True, workspace_mb=512, dims=("seq=1:8:64",))
    with pytest.raises(UserError, match="parameter 'workspace_mb' = 1 is outside"):
        parse_step({"pass": "build-tensorrt", "with": {"workspace_mb": 1}}, "recipe r")
    with pytest.raises(UserError, match="unknown parameter 'fp61' \\(did you mean 'fp16'\\?\\)"):
        parse_step({"pass": "build-tensorrt", "with": {"fp61": True}}, "recipe r")
    assert get_pass("build-tensorrt").conversion


def _quantized(cnn_onnx: Path, cnn_data: Path, tmp_path: Path, **params):
    """The tiny CNN through ORT's quantize-static (int8 QDQ), for real."""
    from edgekit.data import load_data

    model = ingest(cnn_onnx)
    step = parse_step({"pass": "quantize-static", "with": {"activation_type": "int8", "calibration_samples": 16, **params}}, "t")
    ctx = Context(tmp_path, calibration=load_data(cnn_data, model.inputs))
    return get_pass("quantize-static").run(model, step.config, ctx)


def test_symmetric_qdq_is_explicit_quantization(cnn_onnx, cnn_data, tmp_path):
    quantized = _quantized(cnn_onnx, cnn_data, tmp_path, symmetric_activations=True, quantize_bias=False)
    assert explicit_quantization(load_graph(quantized.path))
    assert not explicit_quantization(load_graph(cnn_onnx))


@pytest.mark.parametrize(("params", "message"), [
    ({"symmetric_activations": False, "quantize_bias": False}, "QuantizeLinear node '.*' has an asymmetric or uint8 zero point"),
    ({"symmetric_activations": True, "quantize_bias": True}, r"DequantizeLinear node '.*' takes an int32 \(bias\) tensor"),
])
def test_qdq_tensorrt_cannot_take_is_refused_before_building(cnn_onnx, cnn_data, tmp_path, params, message):
    quantized = _quantized(cnn_onnx, cnn_data, tmp_path, **params)
    with pytest.raises(UserError, match=message + ".*symmetric_activations true, quantize_bias false"):
        get_pass("build-tensorrt").run(quantized, BuildTensorrtConfig(), Context(tmp_path))


@pytest.mark.skipif(not NO_TENSORRT, reason="tensorrt is installed here")
def test_missing_tensorrt_names_the_extra(cnn_onnx, tmp_path):
    with pytest.raises(MissingBackend, match=r"tensorrt is not installed \(needed for building TensorRT engines\): "
                                             r"pip install 'edgekit\[tensorrt\]'"):
        get_pass("build-tensorrt").run(ingest(cnn_onnx), BuildTensorrtConfig(), Context(tmp_path))
