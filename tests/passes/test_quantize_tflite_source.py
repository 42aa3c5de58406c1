"""A .tflite someone else made, as a source: int8 for mobile-tflite with LiteRT's own quantizer, fp32 for cpu-openvino.

The source is the tiny CNN compiled to an fp32 mobile-tflite package (litert-torch, dynamic batch);
its .tflite is then compiled again as a source, run on the real LiteRT interpreter and OpenVINO.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import compile_cnn, run_litert

from edgekit.compiler import compile
from edgekit.errors import UnsupportedOnTarget, UserError
from edgekit.ingest import ingest
from edgekit.runtime import load
from edgekit.runtime.tflite import interpreter_class

INT8_MIN_COSINE = 0.98  # per sample: int8 weights and activations, calibrated on the same distribution
FP32_RTOL = 1e-4  # max |diff| / max |reference|


@pytest.fixture(scope="module")
def tflite_source(tmp_path_factory, cnn_source, cnn_data) -> Path:
    package = compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-tflite", "fp32", "cnn-fp32")
    return package / "model.tflite"


@pytest.fixture(scope="module")
def source_data(tflite_source, cnn_data, tmp_path_factory) -> Path:
    """The CNN's data keyed by the .tflite's own input name."""
    (spec,) = ingest(tflite_source).inputs
    path = tmp_path_factory.mktemp("tflite-data") / "data.npz"
    np.savez(path, **{spec.name: np.load(cnn_data)["image"]})
    return path


@pytest.fixture(scope="module")
def int8_package(tflite_source, source_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tflite-int8") / "pkg"
    compile(tflite_source, "mobile-tflite", out, "int8", source_data, source_data, bench_runs=3)
    return out


def test_int8_of_a_tflite_source_is_integer_inside_with_float_io(int8_package):
    interpreter = interpreter_class()(model_path=str(int8_package / "model.tflite"))
    assert [d["dtype"] for d in interpreter.get_input_details()] == [np.float32]
    assert [d["dtype"] for d in interpreter.get_output_details()] == [np.float32]
    ops = interpreter._get_ops_details()
    convs = [op for op in ops if op["op_name"] == "CONV_2D"]
    tensors = interpreter.get_tensor_details()
    assert convs and all(tensors[op["inputs"][1]]["dtype"] == np.int8 for op in convs)  # int8 conv weights
    assert all(op["result_types"] == [np.int8] for op in convs)  # int8 activations: integer kernels


def test_int8_of_a_tflite_source_stays_close_to_it(int8_package, tflite_source, source_data):
    (name,) = np.load(source_data).files
    images = np.load(source_data)[name]
    session = load(int8_package)
    assert [spec.dtype for spec in session.inputs] == ["float32"]
    got = session.run({session.inputs[0].name: images})
    got = next(iter(got.values()))
    want = run_litert(tflite_source, images)
    cosine = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() >= INT8_MIN_COSINE


def test_tflite_source_to_openvino_fp32(tflite_source, source_data, tmp_path):
    out = tmp_path / "ov"
    compile(tflite_source, "cpu-openvino", out, "fp32", source_data, source_data, bench_runs=3)
    (name,) = np.load(source_data).files
    images = np.load(source_data)[name][:8]
    session = load(out)
    got = next(iter(session.run({session.inputs[0].name: images}).values()))
    want = run_litert(tflite_source, images)
    assert np.abs(got - want).max() <= FP32_RTOL * np.abs(want).max()


def test_fp16_of_a_float32_tflite_source_is_refused(tflite_source, source_data, tmp_path):
    with pytest.raises(UnsupportedOnTarget, match="fp16 of a float32 .tflite"):
        compile(tflite_source, "mobile-tflite", tmp_path / "fp16", "fp16", source_data, source_data, bench_runs=3)
    assert not (tmp_path / "fp16").exists()


def test_corrupt_tflite_source_is_one_user_error(tmp_path, source_data):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"TFL3" + bytes(64))
    with pytest.raises(UserError) as error:
        compile(broken, "mobile-tflite", tmp_path / "out", "int8", source_data, source_data, bench_runs=3)
    assert "not a valid .tflite" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()
