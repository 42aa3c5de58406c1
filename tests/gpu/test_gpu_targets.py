"""The NVIDIA GPU targets: what holds on any machine (targets, honest availability, plans, one-line
failures) and, where the GPU runtimes are present, the real compile → load → compare → bench checks
of run_gpu_checks.py (skipped here with the reason)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import CNN_INPUT

from edgekit.cli import main
from edgekit.errors import MissingBackend, UnsupportedOnTarget
from edgekit.model import Format
from edgekit.runtime import open_model
from edgekit.spec import TensorSpec
from edgekit.target import load_target

sys.path.insert(0, str(Path(__file__).parent))
import run_gpu_checks  # noqa: E402

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
CNN = (TensorSpec("image", ("batch", 1, 8, 8)),), (TensorSpec("logits", ("batch", 4)),)


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_gpu_targets_load():
    trt = load_target("gpu-tensorrt")
    assert (trt.device, trt.runtime, trt.format, trt.precisions) == ("gpu", "tensorrt", Format.TENSORRT, ("fp32", "fp16", "int8"))
    assert [s.pass_name for s in trt.lowering] == ["build-tensorrt"]
    assert trt.recipes == {"fp32": "fp32", "fp16": "fp16-tensorrt", "int8": "int8"}
    assert [s.pass_name for s in trt.quantize["int8/static"]] == ["optimize-onnx", "quantize-static"]
    cuda = load_target("gpu-ort-cuda")
    assert (cuda.runtime, cuda.format) == ("onnxruntime", Format.ONNX)
    assert cuda.options["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_targets_command_says_why_gpu_targets_cannot_run_here():
    """`edgekit targets` probes every target (about 10 s here, most of it other backends' imports)."""
    rows = {row["name"]: row for row in json.loads(invoke("targets", "--json")[1])}
    trt, cuda = rows["gpu-tensorrt"]["unavailable"], rows["gpu-ort-cuda"]["unavailable"]
    if trt is None or cuda is None:
        pytest.skip("an NVIDIA GPU runtime is present here")
    assert (trt.startswith("tensorrt is not installed") or "cuda-python" in trt or "GPU" in trt) and "edgekit[tensorrt]" in trt
    assert cuda.startswith("CUDAExecutionProvider not in this onnxruntime") and "pip install 'edgekit[ort-cuda]'" in cuda
    from edgekit import console

    with console.out.capture() as captured:  # the table keeps the [extra] that rich would read as markup
        console.show_targets([rows["gpu-tensorrt"]])
    assert "edgekit[tensorrt]" in captured.get().replace("\n", "").replace("│", "").replace(" ", "")


def test_plans_for_gpu_tensorrt(cnn_source):
    def plan(*extra):
        code, stdout, stderr = invoke("compile", cnn_source, "-t", "gpu-tensorrt", "--input", CNN_INPUT, "--dry-run", "--json", *extra)
        assert code == 0, stderr
        return [(s["pass"], s["origin"], s["from"], s["to"], s["config"]) for s in json.loads(stdout)]

    [export, build] = plan()
    assert export[:4] == ("export-onnx", "inserted", "torch", "onnx")
    assert build[:4] == ("build-tensorrt", "lowering", "onnx", "tensorrt") and build[4]["fp16"] is False
    assert plan("--recipe", "fp16")[1][:2] == ("build-tensorrt", "recipe") and plan("--recipe", "fp16")[1][4]["fp16"]
    steps = plan("--recipe", "int8")
    assert [s[:2] for s in steps] == [("export-onnx", "inserted"), ("optimize-onnx", "recipe"),
                                      ("quantize-static", "recipe"), ("build-tensorrt", "lowering")]
    quantize = steps[2][4]
    assert quantize["symmetric_activations"] and not quantize["quantize_bias"] and quantize["activation_type"] == "int8"


@pytest.mark.parametrize(("recipe", "message"), [
    ("int4-weights", "target gpu-ort-cuda does not support precision int4 (recipe int4-weights); it supports fp32, fp16, int8"),
    ("fp16-tensorrt", "lowering step 'optimize-onnx' of target gpu-ort-cuda takes onnx, but no conversion leads from tensorrt to onnx; "
                       "onnx can be made from exported, tflite, torch: give the model in one of those"),
])
def test_plan_for_gpu_ort_cuda_refuses_what_cannot_reach_it(cnn_onnx, recipe, message):
    code, _, stderr = invoke("compile", cnn_onnx, "-t", "gpu-ort-cuda", "-r", recipe, "--dry-run")
    assert code == 1 and stderr.strip() == f"error: {message}"


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_compile_without_tensorrt_fails_in_one_line_and_writes_nothing(cnn_onnx, tmp_path):
    out = tmp_path / "pkg"
    code, _, stderr = invoke("compile", cnn_onnx, "-t", "gpu-tensorrt", "-o", out, "--no-cache")
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "error: tensorrt is not installed (needed for building TensorRT engines): pip install 'edgekit[tensorrt]'")
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_tensorrt_package_without_tensorrt_names_the_pip_command(tmp_path):
    from edgekit.runtime import tensorrt

    assert tensorrt.probe({}) == "tensorrt is not installed (needed for TensorRT engines): pip install 'edgekit[tensorrt]'"
    with pytest.raises(MissingBackend, match=r"pip install 'edgekit\[tensorrt\]'"):
        open_model("tensorrt", (tmp_path / "model.engine",), *CNN)


def test_cuda_provider_absent_is_refused_not_run_on_cpu(cnn_onnx):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    options = load_target("gpu-ort-cuda").options
    with pytest.raises(UnsupportedOnTarget, match=r"CUDAExecutionProvider not in this onnxruntime .*edgekit\[ort-cuda\]"):
        open_model("onnxruntime", (cnn_onnx,), *CNN, options)


@pytest.fixture(scope="module")
def gpu_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu")
    return (folder, *run_gpu_checks.make_data(folder))


@pytest.mark.parametrize("check", run_gpu_checks.CHECKS, ids=[f"{t}-{p}" for t, p, *_ in run_gpu_checks.CHECKS])
def test_gpu_compile_load_compare_bench(check, request):
    """The GPU checks themselves (each compiles and benches: tens of seconds on a GPU machine)."""
    target, precision, *bounds = check
    why = load_target(target).availability()
    if why:
        pytest.skip(why)
    folder, data, images, logits = request.getfixturevalue("gpu_data")
    result = run_gpu_checks.run_check(target, precision, *bounds, folder, data, images, logits)
    if result.status == "SKIP":
        pytest.skip(result.detail)
    assert result.status == "PASS", result.line()
