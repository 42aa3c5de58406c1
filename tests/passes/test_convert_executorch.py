"""convert-executorch / quantize-executorch: the tiny CNN lowered to XNNPACK, run on the real ExecuTorch runtime.

The packages are built once per module (lowering takes ~20 s on a loaded 2-core machine); the
build shares one pipeline cache with tests/runtime/test_executorch.py.
"""

from __future__ import annotations

import json
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
from edgekit.passes.executorch import QuantizeExecutorch, QuantizeExecutorchConfig
from edgekit.runtime import load
from edgekit.spec import parse_input_spec

FP32_RTOL = 1e-4  # max |diff| / max |reference|
INT8_MIN_COSINE = 0.999  # per sample, tiny CNN on its own seeded data
INT8_MIN_TOP1 = 0.95


@pytest.fixture(scope="module")
def fp32_package(tmp_path_factory, cnn_source, cnn_data) -> Path:
    return compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-executorch", "fp32", "cnn-fp32")


@pytest.fixture(scope="module")
def int8_package(tmp_path_factory, cnn_source, cnn_data) -> Path:
    return compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-executorch", "int8", "cnn-int8")


def _reference(images: np.ndarray) -> np.ndarray:
    module, _ = tiny_cnn()
    with torch.no_grad():
        return module(torch.from_numpy(images)).numpy()


def _outputs(package: Path, images: np.ndarray) -> np.ndarray:
    session = load(package)
    return np.concatenate([session.run({"image": image[None]})["output"] for image in images])


def _program(package: Path):
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary((package / "model.pte").read_bytes())
    return getattr(program, "program", program)


def test_fp32_matches_torch(fp32_package, cnn_data):
    images = np.load(cnn_data)["image"]
    got, want = _outputs(fp32_package, images), _reference(images)
    assert np.abs(got - want).max() / np.abs(want).max() < FP32_RTOL


def test_fp32_package_says_its_batch_is_fixed_and_is_delegated(fp32_package):
    manifest = json.loads((fp32_package / "manifest.json").read_text())
    assert manifest["runtime"] == "executorch" and manifest["format"] == "executorch"
    assert manifest["inputs"] == [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "output", "shape": [1, 4], "dtype": "float32"}]
    assert [(s["pass"], s["origin"]) for s in manifest["steps"]] == [("convert-executorch", "inserted")]
    assert manifest["steps"][0]["fidelity"]["max_rel"] < FP32_RTOL
    plan_ = _program(fp32_package).execution_plan[0]
    assert {d.id for d in plan_.delegates} == {"XnnpackBackend"}
    assert len(plan_.operators) <= 1  # at most one op (the global mean) left to portable kernels


def test_int8_fidelity_and_quantized_program(int8_package, fp32_package, cnn_data):
    images = np.load(cnn_data)["image"]
    got, want = _outputs(int8_package, images), _reference(images)
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() >= INT8_MIN_COSINE
    assert (got.argmax(1) == want.argmax(1)).mean() >= INT8_MIN_TOP1
    manifest = json.loads((int8_package / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    assert [s["pass"] for s in manifest["steps"]] == ["quantize-executorch"]
    assert {d.id for d in _program(int8_package).execution_plan[0].delegates} == {"XnnpackBackend"}
    assert not np.allclose(got, _outputs(fp32_package, images), atol=1e-6)  # really quantized


def test_int8_needs_calibration_data(tmp_path, cnn_source):
    model = ingest(cnn_source, (parse_input_spec(CNN_INPUT),))
    with pytest.raises(UserError, match="quantize-executorch needs calibration data: give --calib"):
        QuantizeExecutorch().run(model, QuantizeExecutorchConfig(), Context(tmp_path))


def test_plans(cnn_source, cnn_onnx):
    steps = plan(cnn_source, "mobile-executorch", "int8", (parse_input_spec(CNN_INPUT),)).describe()
    assert [(s["pass"], s["origin"]) for s in steps] == [("quantize-executorch", "recipe")]
    with pytest.raises(UnsupportedOnTarget, match="does not support precision fp16.*fp32, int8"):
        plan(cnn_source, "mobile-executorch", "fp16")
    steps = plan(cnn_onnx, "mobile-executorch", "fp32").describe()
    assert [(s["pass"], s["origin"]) for s in steps] == [("onnx-to-torch", "inserted"), ("convert-executorch", "inserted")]


def test_graph_xnnpack_cannot_lower_runs_on_portable_kernels(tmp_path):
    from edgekit.runtime import load
    from edgekit.spec import parse_input_spec

    source = f"{Path(__file__).resolve().parent.parent / 'models.py'}:prelu_head"
    images = np.random.default_rng(0).standard_normal((8, 1, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=images)
    from edgekit import compiler

    result = compiler.compile(source, "mobile-executorch", tmp_path / "pkg", "fp32", tmp_path / "data.npz",
                              inputs=(parse_input_spec("x:1x3x8x8"),), bench_runs=2)
    assert result.manifest.provenance["delegate"].startswith("none: XNNPACK's lowering failed")
    module, _ = __import__("models").prelu_head()
    want = module(torch.from_numpy(images[0])).detach().numpy()
    got = list(load(result.package).run({"x": images[0]}).values())[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)  # fp32 portable kernels


def test_an_int8_graph_xnnpack_cannot_lower_is_refused_in_one_line(tmp_path):
    from edgekit import compiler
    from edgekit.spec import parse_input_spec

    source = f"{Path(__file__).resolve().parent.parent / 'models.py'}:prelu_head"
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).standard_normal((8, 1, 3, 8, 8)).astype(np.float32))
    with pytest.raises(UnsupportedOnTarget, match=r"^quantize-executorch: XNNPACK's lowering failed \(.*\), and ExecuTorch's "
                                                  r"portable kernels have no quantized ops: no int8 \.pte for this model$"):
        compiler.compile(source, "mobile-executorch", tmp_path / "pkg", "int8", tmp_path / "data.npz",
                         inputs=(parse_input_spec("x:1x3x8x8"),), bench_runs=2)
    assert not (tmp_path / "pkg").exists()
