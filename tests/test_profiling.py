"""Per-op profiles from each runtime's own profiler (ORT, OpenVINO, ExecuTorch; LiteRT says it cannot), their diff,
and `edgekit profile` end to end."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import compile_cnn

from edgekit.cli import main
from edgekit.errors import UserError
from edgekit.profiling import diff_profiles, profile_package
from edgekit.profiling.naming import module_of, precision_of

RUNS = 10


@pytest.fixture(scope="module")
def ort_fp32(cnn_package):
    return cnn_package


@pytest.fixture(scope="module")
def ort_int8(tmp_path_factory, cnn_source, cnn_data):
    return compile_cnn(tmp_path_factory, cnn_source, cnn_data, "cpu-ort", "int8", "cnn-int8")


@pytest.fixture(scope="module")
def ort_profiles(ort_fp32, ort_int8):
    return profile_package(ort_fp32, runs=RUNS, threads=1), profile_package(ort_int8, runs=RUNS, threads=1)


def check_table(profile: dict, runs: int) -> None:
    """What every available profile holds: shares of the ops' total summing to 1, the total their means' sum and
    within one profiled run, medians and means non-negative, the conditions it ran under."""
    assert profile["available"] and profile["reason"] is None and profile["ops"]
    ops = profile["ops"]
    assert sum(op["share"] for op in ops) == pytest.approx(1.0, abs=1e-9)
    assert profile["ops_ms"] == pytest.approx(sum(op["ms"] for op in ops), rel=1e-9)
    assert 0 < profile["ops_ms"] <= profile["wall_ms"] and profile["wall_p50_ms"] > 0
    assert all(op["ms"] >= 0 and op["p50_ms"] >= 0 for op in ops)
    assert [op["ms"] for op in ops] == sorted((op["ms"] for op in ops), reverse=True)
    conditions = profile["conditions"]
    assert conditions["runs"] == runs and conditions["input_shapes"] == {"image": [1, 1, 8, 8]}
    assert conditions["cpu"] and isinstance(conditions["cpu_flags"], list)
    json.dumps(profile)  # JSON-able as it is


def test_onnxruntime_profile(ort_profiles):
    fp32, int8 = ort_profiles
    for profile in (fp32, int8):
        check_table(profile, RUNS)
        assert profile["runtime"] == "onnxruntime" and profile["runtime_version"]
        assert {op["provider"] for op in profile["ops"]} == {"CPUExecutionProvider"}
    assert {"Conv", "Gemm"} <= {op["type"] for op in fp32["ops"]}
    assert {op["precision"] for op in fp32["ops"]} == {"fp32"}
    by_type = {op["type"]: op for op in int8["ops"]}
    assert by_type["QuantizeLinear"]["precision"] == "fp32→int8"
    assert by_type["DequantizeLinear"]["precision"] == "int8→fp32"
    assert by_type["QLinearConv"]["precision"] == "int8"


@pytest.mark.slow
def test_openvino_profile(tmp_path_factory, cnn_source, cnn_data):
    fp32, int8 = (profile_package(compile_cnn(tmp_path_factory, cnn_source, cnn_data, "cpu-openvino", recipe,
                                              f"cnn-{recipe}"), runs=RUNS, threads=1) for recipe in ("fp32", "int8"))
    for profile in (fp32, int8):
        check_table(profile, RUNS)
        assert {op["provider"] for op in profile["ops"]} == {"CPU"} and all(op["kernel"] for op in profile["ops"])
        assert "Convolution" in {op["type"] for op in profile["ops"]}
        # the linear head keeps its PyTorch scope through OpenVINO's conversion: __module.head/aten::linear/…
        assert "head" in {op["module"] for op in profile["ops"]}
    assert all(op["kernel"].endswith("_f32") and op["precision"] == "fp32" for op in fp32["ops"])
    int8_convolutions = [op for op in int8["ops"] if op["type"] == "Convolution"]
    assert int8_convolutions and all(op["kernel"].endswith("_I8") and op["precision"] == "int8" for op in int8_convolutions)
    assert "FakeQuantize" in {op["type"] for op in int8["ops"]}


@pytest.mark.slow
def test_executorch_profile(tmp_path_factory, cnn_source, cnn_data):
    package = compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-executorch", "fp32", "cnn-fp32")
    profile = profile_package(package, runs=RUNS, threads=1)
    check_table(profile, RUNS)
    convolutions = [op for op in profile["ops"] if op["type"] == "Convolution"]
    assert len(convolutions) == 2 and all(op["precision"] == "fp32" and "IGEMM" in op["kernel"] for op in convolutions)
    assert "DelegateCall" in {op["type"] for op in profile["ops"]}  # XNNPACK's time outside its ops has its own row


def test_litert_says_it_cannot(tmp_path_factory, cnn_source, cnn_data):
    package = compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-tflite", "fp32", "cnn-fp32")
    profile = profile_package(package, runs=RUNS)
    assert not profile["available"] and profile["ops"] == [] and profile["ops_ms"] is None
    assert profile["reason"].startswith("not available for this runtime: LiteRT's Python Interpreter")
    code, stdout, _ = invoke("profile", package)
    assert code == 0 and "per-op profile not available for this runtime" in stdout
    code, _, stderr = invoke("profile", package, package)  # nothing to diff
    assert code == 1 and stderr.startswith("error: profile A") and "Traceback" not in stderr


def test_diff_names_the_quantize_overhead(ort_profiles):
    fp32, int8 = ort_profiles
    diff = diff_profiles(fp32, int8)
    assert diff["quantized"] == "B"
    findings = {finding["bucket"]: finding for finding in diff["findings"]}
    conversion = findings["conversion"]
    assert conversion["b_ms"] > 0 and conversion["a_ms"] == 0 and conversion["a_ops"] == []
    assert {name.rsplit("_", 1)[-1] for name in conversion["b_ops"]} == {"QuantizeLinear", "DequantizeLinear"}
    assert conversion["line"].startswith("Quantize/Dequantize overhead: B ")
    assert "ReduceMean" in findings["not_covered"]["line"]  # no int8 ReduceMean in ONNX Runtime's CPU kernels
    # every op falls in exactly one bucket: the buckets' deltas add up to the total's
    total = findings.pop("total")
    assert sum(finding["delta_ms"] for finding in findings.values()) == pytest.approx(total["delta_ms"], abs=1e-9)
    assert sorted(name for finding in findings.values() for name in finding["b_ops"]) == sorted(total["b_ops"])
    assert diff["summary"].startswith(f"where B−A {'+' if total['delta_ms'] >= 0 else '-'}")


def test_cli_profile_and_diff(ort_fp32, ort_int8):
    code, stdout, _ = invoke("profile", ort_fp32, ort_int8, "--runs", 5, "--threads", 1, "--json")
    shown = json.loads(stdout)
    assert code == 0 and shown["a"]["precision"] == "fp32" and shown["b"]["precision"] == "int8"
    assert any(finding["bucket"] == "conversion" and finding["b_ms"] > 0 for finding in shown["diff"]["findings"])
    int8_ops = len(shown["b"]["ops"])  # after ONNX Runtime's own fusions, which may differ by CPU and release
    code, stdout, _ = invoke("profile", ort_int8, "--runs", 5, "--threads", 1, "--top", 2)
    assert code == 0 and "edgekit profile:" in stdout and "(cpu-ort, int8)" in stdout and int8_ops > 2
    assert f"{int8_ops - 2} more ops" in stdout and "conditions: threads 1, batch 1, 5 warm-up + 5 timed runs" in stdout
    code, stdout, _ = invoke("profile", ort_fp32, ort_int8, "--runs", 5)
    assert code == 0 and "Quantize/Dequantize overhead: B " in stdout and "where B−A" in stdout


def test_cli_profile_on_a_device(ort_fp32, ort_int8, tmp_path):
    """--device: both packages profiled by the device runner (here a local:// device: this very venv) and diffed here."""
    devices = tmp_path / "devices.yaml"
    devices.write_text(json.dumps({"devices": {"box": {"url": f"local://{sys.prefix}", "cache_dir": str(tmp_path / "c")}}}))
    code, stdout, stderr = invoke("profile", ort_fp32, ort_int8, "--runs", 5, "--device", "box", "--devices", devices,
                                  "--json")
    assert code == 0, stderr
    shown = json.loads(stdout)
    assert shown["device"]["name"] == "box" and shown["a"]["package"] == str(ort_fp32) and shown["b"]["available"]
    assert any(finding["bucket"] == "conversion" and finding["b_ms"] > 0 for finding in shown["diff"]["findings"])
    code, _, stderr = invoke("profile", ort_fp32, "--device", "boxx", "--devices", devices)
    assert code == 1 and "no device 'boxx' (did you mean 'box'?)" in stderr


def test_bad_input_is_one_line(tmp_path, ort_fp32):
    code, stdout, stderr = invoke("profile", tmp_path)
    assert code == 1 and stderr.strip() == f"error: {tmp_path} is not an edgekit package (no manifest.json)"
    code, _, stderr = invoke("profile", tmp_path / "missing")
    assert code == 1 and stderr.strip() == f"error: package not found: {tmp_path / 'missing'}"
    code, _, stderr = invoke("profile", ort_fp32, ort_fp32, ort_fp32)
    assert code == 2 and "give one package to profile, or two" in stderr
    with pytest.raises(UserError, match="runs must be at least 1"):
        profile_package(ort_fp32, runs=0)


def hostile_copy(package: Path, folder: Path) -> Path:
    """A copy of `package` whose ONNX node names carry terminal escapes (clear the screen, set the window title): a
    package is someone else's file, and ONNX Runtime's profiler reports its node names."""
    import onnx

    from edgekit.digest import file_sha256

    copy = folder / "hostile"
    shutil.copytree(package, copy)
    model = onnx.load(copy / "model.onnx")
    for node in model.graph.node:
        node.name = f"/evil\x1b[2J/{node.name}\x1b]0;owned\x07"
    onnx.save(model, copy / "model.onnx")
    manifest = json.loads((copy / "manifest.json").read_text())
    [entry] = [entry for entry in manifest["files"] if entry["path"] == "model.onnx"]
    entry.update(sha256=file_sha256(copy / "model.onnx"), bytes=(copy / "model.onnx").stat().st_size)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_op_names_of_a_hostile_package_reach_the_terminal_escaped(ort_fp32, tmp_path):
    """The table and the diff show such names with their escapes written out, never as control characters."""
    hostile = hostile_copy(ort_fp32, tmp_path)
    code, stdout, stderr = invoke("profile", hostile, "--runs", 2, "--all")
    assert code == 0, stderr
    assert "\x1b" not in stdout and "\x07" not in stdout and stdout.count("\\x1b[2J") >= 2  # the op rows, escaped
    code, stdout, stderr = invoke("profile", ort_fp32, hostile, "--runs", 2)
    assert code == 0, stderr
    assert "\x1b" not in stdout and "module evil\\x1b[2J: A 0.0000 ms, B " in stdout


def test_profiling_imports_nothing_compile_side(ort_fp32):
    """On a device only numpy and the runtime are there: profiling an ORT package loads no torch, onnx, click, rich,
    PyYAML."""
    script = ("import sys, edgekit.profiling as p; p.profile_package(sys.argv[1], runs=2); "
              "print([m for m in ('torch', 'onnx', 'click', 'rich', 'yaml') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", script, str(ort_fp32)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("names, module", [
    (["/layer1/layer1.0/conv1/Conv"], "layer1.0.conv1"),  # torch.onnx (TorchScript) scopes
    (["/encoder/layer.0/attention/self/query/MatMul_output_0_QuantizeLinear"], "encoder.layer.0.attention.self.query"),
    (["/conv1/Conv_nchwc"], "conv1"),
    (["__module.head/aten::linear/MatMul/DequantizationMultiply"], "head"),  # OpenVINO from PyTorch
    (["Multiply_2800", "__module.bn1/aten::batch_norm/BatchNormInference"], "bn1"),  # a fused node's originals
    (["conv1.weight_DequantizeLinear"], "conv1"),  # ORT's quantizer names a weight's DQ after it
    (["node_Conv_17", "relu_QuantizeLinear", "/Relu"], None),  # torch.export names carry no module
])
def test_module_names_that_survive_export(names, module):
    assert module_of(names) == module


def test_precision_names():
    assert [precision_of(name) for name in ("float", "uint8", "I8", "f32", "bf16", "QC8", "undef", None)] == \
        ["fp32", "int8", "int8", "fp32", "bf16", "int8", None, None]


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr
