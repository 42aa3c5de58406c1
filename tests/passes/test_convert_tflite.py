"""convert-tflite / quantize-tflite: the tiny CNN through litert-torch, run on the real LiteRT interpreter.

The packages are built once per module (litert-torch takes ~10 s per conversion on a loaded 2-core
machine); the build shares one pipeline cache with tests/runtime/test_tflite.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CNN_INPUT, compile_cnn
from models import tiny_cnn

from edgekit.compiler import plan
from edgekit.errors import UnsupportedOnTarget, UserError
from edgekit.ingest import ingest
from edgekit.passes.base import Context
from edgekit.passes.tflite import ConvertTfliteConfig, QuantizeTflite, QuantizeTfliteConfig
from edgekit.runtime import load, open_model
from edgekit.runtime.tflite import interpreter_class
from edgekit.spec import parse_input_spec

FP32_RTOL = 1e-4  # max |diff| / max |reference|
INT8_MIN_COSINE = 0.999  # per sample, tiny CNN on its own seeded data
INT8_MIN_TOP1 = 0.95


@pytest.fixture(scope="module")
def fp32_package(tmp_path_factory, cnn_source, cnn_data) -> Path:
    return compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-tflite", "fp32", "cnn-fp32")


@pytest.fixture(scope="module")
def int8_package(tmp_path_factory, cnn_source, cnn_data) -> Path:
    return compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-tflite", "int8", "cnn-int8")


def _images(cnn_data: Path) -> np.ndarray:
    return np.load(cnn_data)["image"]


def _session(model):
    return open_model("tflite", model.files, model.inputs, model.outputs)


def _reference(images: np.ndarray) -> np.ndarray:
    module, _ = tiny_cnn()
    with torch.no_grad():
        return module(torch.from_numpy(images)).numpy()


def test_fp32_matches_torch_at_any_batch(fp32_package, cnn_data):
    session = load(fp32_package)
    images = _images(cnn_data)
    for batch in (1, 5, 64):
        got = session.run({"image": images[:batch]})["output"]
        want = _reference(images[:batch])
        assert got.shape == (batch, 4)
        assert np.abs(got - want).max() / np.abs(want).max() < FP32_RTOL


def test_fp32_package_keeps_the_symbolic_batch(fp32_package):
    import json

    manifest = json.loads((fp32_package / "manifest.json").read_text())
    assert manifest["runtime"] == "tflite" and manifest["format"] == "tflite"
    assert manifest["inputs"] == [{"name": "image", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert [s["pass"] for s in manifest["steps"]] == ["convert-tflite"]
    assert manifest["steps"][0]["origin"] == "inserted"
    assert manifest["steps"][0]["fidelity"]["max_rel"] < FP32_RTOL
    details = interpreter_class()(model_path=str(fp32_package / "model.tflite")).get_input_details()
    assert list(details[0]["shape_signature"]) == [-1, 1, 8, 8]


def test_int8_fidelity_and_int8_tensors(int8_package, cnn_data):
    images = _images(cnn_data)
    got = load(int8_package).run({"image": images})["output"]
    want = _reference(images)
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() >= INT8_MIN_COSINE
    assert (got.argmax(1) == want.argmax(1)).mean() >= INT8_MIN_TOP1
    interpreter = interpreter_class()(model_path=str(int8_package / "model.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8  # quantized at the boundary by the session
    kinds = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    assert "int8" in kinds and "int32" in kinds  # int8 weights/activations, int32 biases


def test_fp16_weights_and_static_dims(tmp_path, cnn_source, cnn_data):
    model = ingest(cnn_source, (parse_input_spec(CNN_INPUT),))
    ctx = Context(tmp_path)
    result = QuantizeTflite().run(model, QuantizeTfliteConfig(mode="fp16", dynamic_dims=False), ctx)
    assert result.meta["precision"] == "fp16"
    assert [s.shape for s in result.inputs] == [(1, 1, 8, 8)] and [s.shape for s in result.outputs] == [(1, 4)]
    interpreter = interpreter_class()(model_path=str(result.path))
    assert "float16" in {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    images = _images(cnn_data)[:1]
    got = _session(result).run({"image": images})["output"]
    want = _reference(images)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-3


def test_int8_needs_calibration_data(tmp_path, cnn_source):
    model = ingest(cnn_source, (parse_input_spec(CNN_INPUT),))
    with pytest.raises(UserError, match="quantize-tflite needs calibration data: give --calib"):
        QuantizeTflite().run(model, QuantizeTfliteConfig(), Context(tmp_path))


def test_onnx_source_goes_through_onnx_to_torch(cnn_onnx):
    steps = [(s["pass"], s["origin"]) for s in plan(cnn_onnx, "mobile-tflite", "fp32").describe()]
    assert steps == [("onnx-to-torch", "inserted"), ("convert-tflite", "inserted")]
    steps = [(s["pass"], s["origin"]) for s in plan(cnn_onnx, "mobile-tflite", "int8").describe()]
    assert steps[:2] == [("onnx-to-torch", "inserted"), ("quantize-tflite", "recipe")]


def test_plan_inserts_the_conversion_and_refuses_bf16(cnn_source, tmp_path):
    steps = plan(cnn_source, "mobile-tflite", "fp32", (parse_input_spec(CNN_INPUT),)).describe()
    assert [(s["pass"], s["origin"], s["config"]) for s in steps] == [("convert-tflite", "inserted", {"dynamic_dims": True})]
    with pytest.raises(UnsupportedOnTarget, match="does not support precision bf16.*fp32, fp16, int8, int4"):
        recipe = tmp_path / "bf16.yaml"
        recipe.write_text("precision: bf16\nsteps: []\n")
        plan(cnn_source, "mobile-tflite", recipe)


def test_config_is_validated():
    from edgekit.recipe import parse_step

    with pytest.raises(UserError, match="mode"):
        parse_step({"pass": "quantize-tflite", "with": {"mode": "int2"}}, "test")
    assert parse_step({"pass": "convert-tflite"}, "test").config == ConvertTfliteConfig()
