"""The OpenVINO targets end to end: compile the tiny CNN → load the package → run → compare with PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from extras import require

from edgekit import compiler
from edgekit.build import recipe_for
from edgekit.errors import UnsupportedOnTarget
from edgekit.runtime import load
from edgekit.spec import parse_input_spec
from edgekit.target import load_target

require("nncf", "nncf")

BATCH_SPEC = (parse_input_spec("image:batchx1x8x8:float32"),)
STATIC_SPEC = (parse_input_spec("image:1x1x8x8:float32"),)


@pytest.fixture(scope="module")
def packages(cnn_source, cnn_data, tmp_path_factory):
    """cpu-openvino packages of the tiny CNN for fp32, fp16 and int8 (by precision name → the target's recipe).

    They share a cache, so the conversion to IR runs once.
    """
    root = tmp_path_factory.mktemp("packages")
    return {precision: compiler.compile(cnn_source, "cpu-openvino", root / precision, precision, calib=cnn_data,
                                        inputs=BATCH_SPEC, cache_dir=root / "cache", bench_runs=5)
            for precision in ("fp32", "fp16", "int8")}


@pytest.fixture(scope="module")
def reference(cnn_data):
    import torch
    from models import tiny_cnn

    images = np.load(cnn_data)["image"]
    with torch.no_grad():
        return images, tiny_cnn()[0](torch.from_numpy(images)).numpy()


def _run(result, images: np.ndarray) -> np.ndarray:
    return load(result.package).run({"image": images})["output"]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


def test_fp32_matches_pytorch_within_1e4(packages, reference):
    result = packages["fp32"]
    assert [s.describe()["pass"] for s in result.plan.steps] == ["convert-openvino"]
    manifest = result.manifest
    assert (manifest.runtime, manifest.format, manifest.precision) == ("openvino", "openvino", "fp32")
    assert [entry.path for entry in manifest.files] == ["model.xml", "model.bin"]
    images, expected = reference
    got = _run(result, images)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4
    assert manifest.metrics.verdict.ok and manifest.metrics.bench.latency_ms.p50 > 0


def test_fp16_weights_within_1e2(packages, reference):
    result = packages["fp16"]
    assert result.manifest.recipe["name"] == "fp16-weights" and result.manifest.precision == "fp16"
    images, expected = reference
    got = _run(result, images)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-2
    weights = {p: next(e.bytes for e in packages[p].manifest.files if e.path == "model.bin") for p in ("fp32", "fp16")}
    assert weights["fp16"] < 0.6 * weights["fp32"]


def test_int8_keeps_top1_agreement_095_and_cosine_099(packages, reference):
    result = packages["int8"]
    assert [s.describe()["pass"] for s in result.plan.steps] == ["convert-openvino", "quantize-nncf"]
    assert result.plan.steps[0].origin == "inserted"
    images, expected = reference
    got = _run(result, images)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.95
    assert _cosine(got, expected) >= 0.99
    assert result.manifest.metrics.fidelity["top1_agreement"] >= 0.95


def test_running_a_package_never_loads_torch(packages):
    code = (
        "import sys, json, numpy as np\n"
        "from edgekit.runtime import load\n"
        "for path in json.loads(sys.argv[1]):\n"
        "    out = load(path).run({'image': np.zeros((2, 1, 8, 8), np.float32)})['output']\n"
        "    assert out.shape == (2, 4), out.shape\n"
        "heavy = [m for m in ('torch', 'nncf', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    paths = json.dumps([str(result.package) for result in packages.values()])
    done = subprocess.run([sys.executable, "-c", code, paths], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("name, device", [("gpu-openvino", "GPU"), ("npu-openvino", "NPU")])
def test_gpu_and_npu_targets_say_why_not_here(name, device):
    target = load_target(name)
    why = target.availability()
    if why is None:
        pytest.skip(f"this machine has an OpenVINO {device}")
    assert f"OpenVINO sees no {device} device here" in why


def test_npu_refuses_symbolic_dims_with_the_fix(cnn_source):
    with pytest.raises(UnsupportedOnTarget, match=r"npu-openvino needs static shapes.*'batch'.*--input image:1x1x8x8:float32"):
        compiler.plan(cnn_source, "npu-openvino", "int8", BATCH_SPEC)


def test_npu_package_is_built_static_but_not_measured_here(cnn_source, cnn_data, tmp_path):
    if load_target("npu-openvino").availability() is None:
        pytest.skip("this machine has an NPU: the package would be measured")
    result = compiler.compile(cnn_source, "npu-openvino", tmp_path / "npu", "fp16", calib=cnn_data, inputs=STATIC_SPEC)
    assert result.manifest.inputs[0].shape == (1, 1, 8, 8)
    assert result.manifest.metrics is None and result.manifest.precision == "fp16"
    import openvino

    ir = openvino.Core().read_model(str(result.package / "model.xml"))
    assert str(ir.inputs[0].get_partial_shape()) == "[1,1,8,8]"


def test_gpu_refuses_fp32_naming_what_it_supports(cnn_source):
    with pytest.raises(UnsupportedOnTarget, match="gpu-openvino does not support precision fp32.*fp16, int8, int4"):
        compiler.plan(cnn_source, "gpu-openvino", "fp32", BATCH_SPEC)


def test_precision_names_pick_the_targets_recipes():
    target = load_target("cpu-openvino")
    assert {p: recipe_for(target, p).name for p in target.precisions} == {
        "fp32": "fp32", "fp16": "fp16-weights", "bf16": "bf16-openvino", "int8": "int8", "int4": "int4-weights"}
    assert target.options["config"]["INFERENCE_PRECISION_HINT"] == "f32"
