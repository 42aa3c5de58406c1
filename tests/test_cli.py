"""The CLI end to end: compile, bench, inspect, targets, recipes; user mistakes → one line, exit 1."""

import json

import pytest
from click.testing import CliRunner
from conftest import CNN_INPUT

from edgekit.cli import main


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_compile_bench_inspect(cnn_source, cnn_data, tmp_path):
    out = tmp_path / "pkg"
    code, stdout, stderr = invoke("compile", cnn_source, "--target", "cpu-ort", "--recipe", "int8",
                                  "--calib", cnn_data, "--eval", cnn_data, "--input", CNN_INPUT, "-o", out,
                                  "--cache-dir", tmp_path / "cache", "--bench-runs", 3)
    assert code == 0, stderr
    assert f"package {out}" in stdout and "top-1 agreement" in stdout and "0/3 steps from cache" in stdout
    assert (out / "manifest.json").is_file()
    code, stdout, _ = invoke("compile", cnn_source, "-t", "cpu-ort", "-r", "int8", "--calib", cnn_data,
                             "--eval", cnn_data, "--input", CNN_INPUT, "-o", out, "--cache-dir", tmp_path / "cache",
                             "--bench-runs", 3)
    assert code == 0 and "3/3 steps from cache" in stdout
    code, stdout, _ = invoke("bench", out, "--runs", 5, "--warmup", 1, "--batch", 2, "--json")
    assert code == 0
    [row] = json.loads(stdout)
    assert row["conditions"]["batch"] == 2 and row["conditions"]["input_shapes"] == {"image": [2, 1, 8, 8]}
    assert row["precision"] == "int8" and row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
    code, stdout, _ = invoke("bench", out, out, "--runs", 3)
    assert code == 0 and stdout.count("cpu-ort") == 2 and "conditions: threads" in stdout
    code, stdout, _ = invoke("inspect", out / "model.onnx", "--json")
    summary = json.loads(stdout)
    assert code == 0 and summary["operators"]["QuantizeLinear"] > 0 and summary["opset"]["ai.onnx"] >= 13


def test_dry_run_shows_inserted_steps(cnn_source):
    code, stdout, _ = invoke("compile", cnn_source, "-t", "cpu-ort", "-r", "int8", "--input", CNN_INPUT,
                             "--dry-run", "--json")
    assert code == 0
    assert [(s["pass"], s["origin"]) for s in json.loads(stdout)][0] == ("export-onnx", "inserted")


def test_targets_and_recipes_listings():
    code, stdout, _ = invoke("targets", "--json")
    targets = {t["name"]: t for t in json.loads(stdout)}
    assert code == 0 and targets["cpu-ort"]["unavailable"] is None
    code, stdout, _ = invoke("recipes", "--json")
    recipes = {r["name"]: r for r in json.loads(stdout)}
    assert code == 0 and recipes["int8"]["steps"] == [
        {"quantize": {"precision": "int8", "scheme": "static", "granularity": "per-channel"}}]
    assert [s["pass"] for s in recipes["int8-nncf-transformer"]["steps"]] == ["quantize-nncf"]  # an expert's own pass


@pytest.mark.parametrize("args, message", [
    (["compile", "missing.onnx", "-t", "cpu-ort"], "error: model not found: missing.onnx"),
    (["compile", "{cnn}", "-t", "cpu-or", "--input", CNN_INPUT], "error: unknown target 'cpu-or' (did you mean 'cpu-ort'?)"),
    (["compile", "{cnn}", "-t", "cpu-ort", "-r", "int9", "--input", CNN_INPUT],
     "error: target cpu-ort has no int9 recipe; it offers fp32 (fp32)"),
    (["compile", "{cnn}", "-t", "cpu-ort", "-r", "int8-dynamc", "--input", CNN_INPUT],
     "error: unknown recipe 'int8-dynamc' (did you mean 'int8-dynamic'?)"),
    (["compile", "{cnn}", "-t", "cpu-ort", "--input", "image:1x3x8x8"], "error: the model failed on inputs image:1x3x8x8"),
    (["compile", "{cnn}", "-t", "cpu-ort", "--input", CNN_INPUT, "--calib", "{bad_data}"], "input 'image': dim 3 is 9"),
    (["compile", "{broken}", "-t", "cpu-ort"], "broken_factory() raised RuntimeError: weights file is gone"),
    (["bench", "{tmp}"], "is not an edgekit package"),
    (["inspect", "{garbage}"], "is not a valid ONNX model"),
    (["compile", "{cnn}", "-t", "cpu-ort", "--input", CNN_INPUT, "--metric", "box-iou"],
     "metric box-iou reads boxes through a decode hook: add decode: file.py:function"),
    (["compile", "{cnn}", "-t", "cpu-ort", "--input", CNN_INPUT, "--metric", "top1", "--metric-option", "output=nope"],
     "output 'nope' is not one of the model's outputs"),
    (["compile", "{cnn}", "-t", "cpu-ort", "--input", CNN_INPUT, "--metric", "ctcc"],
     "unknown metric 'ctcc' (did you mean 'ctc'?)"),
])
def test_user_mistakes_are_one_line_without_traceback(args, message, cnn_source, tmp_path):
    import numpy as np
    from conftest import MODELS

    bad_data = tmp_path / "bad.npz"
    np.savez(bad_data, image=np.zeros((4, 1, 8, 9), np.float32))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"garbage")
    values = {"cnn": cnn_source, "bad_data": bad_data, "broken": f"{MODELS}:broken_factory", "tmp": tmp_path,
              "garbage": garbage}
    out = tmp_path / "never"
    code, stdout, stderr = invoke(*[a.format(**values) for a in args], *(["-o", out] if args[0] == "compile" else []))
    assert code == 1
    assert message in stderr and "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_backend_output_stays_off_the_default_screen_and_in_the_log(cnn_source, cnn_data, tmp_path):
    """Run as a user does (a real process on real descriptors): LiteRT's C++ 'XNNPACK delegate' line goes to the
    log, edgekit's own lines to the screen; with -v the backend line is on the screen."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "EDGEKIT_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "edgekit.cli", "compile", cnn_source, "--target", "mobile-tflite",
               "--calib", str(cnn_data), "--input", "image:1x1x8x8", "--bench-runs", "2"]
    quiet = subprocess.run([*command, "-o", str(tmp_path / "a")], capture_output=True, text=True, env=env, check=True)
    screen = quiet.stdout + quiet.stderr
    assert "package" in screen and "XNNPACK delegate" not in screen
    assert "XNNPACK delegate" in (tmp_path / "cache" / "logs" / "last.log").read_text()
    loud = subprocess.run([command[0], *command[1:3], "-v", *command[3:], "-o", str(tmp_path / "b")],
                          capture_output=True, text=True, env=env, check=True)
    assert "XNNPACK delegate" in loud.stdout + loud.stderr
    failed = subprocess.run([*command[:4], str(tmp_path / "missing.onnx"), *command[5:]], capture_output=True, text=True,
                            env=env)
    assert failed.returncode == 1 and failed.stderr.strip().splitlines() == [f"error: model not found: {tmp_path / 'missing.onnx'}"]


def test_an_unexpected_failure_in_a_pass_is_one_line_with_its_traceback_in_the_log(tmp_path):
    import os
    import subprocess
    import sys

    model = tmp_path / "breaks_export.py"
    model.write_text(
        "import torch\n\n"
        "class Net(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        if torch.compiler.is_exporting():\n"
        "            raise RuntimeError('this module refuses torch.export')\n"
        "        return x * 2\n\n"
        "def factory():\n"
        "    return Net(), (torch.zeros(1, 4),)\n")
    env = {**os.environ, "EDGEKIT_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "compile", f"{model}:factory", "--target", "mobile-executorch",
                           "-o", str(tmp_path / "pkg"), "--bench-runs", "2"], capture_output=True, text=True, env=env)
    log = tmp_path / "cache" / "logs" / "last.log"
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: step 'convert-executorch' failed: RuntimeError: this module refuses torch.export "
        f"(traceback in {log}; --debug shows it here)")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "breaks_export.py" in text


def test_metric_and_max_drop_judge_any_recipe(cnn_source, cnn_data, tmp_path):
    """--metric/--max-drop judge a named recipe too: the recipe's own limit passes, a custom metric's drop over
    --max-drop fails the compile and writes nothing."""
    from click.testing import CliRunner

    from edgekit.cli import main

    metric = tmp_path / "metric.py"
    metric.write_text("def always_drops(reference, candidate, labels):\n"
                      "    return 1.0 if reference[0] is candidate[0] else 0.5  # the source scores 1, any package 0.5\n")
    common = ["compile", cnn_source, "-t", "cpu-ort", "-r", "int8", "--calib", str(cnn_data), "--input", "image:1x1x8x8",
              "--bench-runs", "2"]
    loose = CliRunner().invoke(main, [*common, "-o", str(tmp_path / "a")])
    assert loose.exit_code == 0, loose.output
    tight = CliRunner().invoke(main, [*common, "-o", str(tmp_path / "b"), "--metric", f"{metric}:always_drops",
                                      "--max-drop", "0.1"])
    assert tight.exit_code == 1 and "dropped by 0.5000" in tight.output and not (tmp_path / "b").exists()


def test_compile_says_which_metric_judged_each_output_and_why(cnn_source, cnn_data, tmp_path):
    code, stdout, stderr = invoke("compile", cnn_source, "-t", "cpu-ort", "-r", "fp32", "--calib", cnn_data,
                                  "--input", CNN_INPUT, "-o", tmp_path / "a", "--bench-runs", 3, "--metric", "top5",
                                  "--max-drop", "0.01")
    assert code == 0, stderr
    assert "judged by top5: named by the evaluation" in stdout and "changed on 0/" in stdout and "— within" in stdout
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    [judged] = manifest["metrics"]["judged"]
    assert judged["metric"] == "top5" and judged["ok"] and judged["limit"] == 0.01 and judged["worst"] == 1.0
    latency = manifest["metrics"]["bench"]["latency_ms"]
    assert latency["p50_low"] <= latency["p50"] <= latency["p50_high"]
    code, _, stderr = invoke("compile", cnn_source, "-t", "cpu-ort", "--input", CNN_INPUT, "-o", tmp_path / "b",
                             "--metric-option", "blank")
    assert code == 2 and "'blank' is not KEY=VALUE" in stderr and not (tmp_path / "b").exists()


def test_dump_steps_refuses_a_folder_with_files_and_auto(cnn_source, tmp_path):
    (tmp_path / "mine.txt").write_text("the user's")
    code, _, stderr = invoke("compile", cnn_source, "-t", "cpu-ort", "--input", CNN_INPUT, "-o", tmp_path / "pkg",
                             "--dump-steps", tmp_path)
    assert code == 1 and stderr.strip().splitlines()[-1] == (f"error: --dump-steps {tmp_path} exists and is not an "
                                                            "empty folder; give a new one")
    assert (tmp_path / "mine.txt").read_text() == "the user's" and not (tmp_path / "pkg").exists()
    code, _, stderr = invoke("compile", cnn_source, "-t", "cpu-ort", "-r", "auto", "--input", CNN_INPUT,
                             "--dump-steps", tmp_path / "new")
    assert code == 1 and "--dump-steps follows one recipe's steps" in stderr


def test_help_and_usage_errors_reach_the_terminal_while_backend_output_goes_to_the_log(tmp_path):
    """Subcommand --help and click's usage errors are printed before the backends' output is redirected."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "EDGEKIT_CACHE_DIR": str(tmp_path)}
    edgekit = [sys.executable, "-m", "edgekit.cli"]
    shown = subprocess.run([*edgekit, "compile", "--help"], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and shown.stdout.startswith("Usage: ") and "compile [OPTIONS] MODEL" in shown.stdout
    shown = subprocess.run([*edgekit, "cache", "prune", "--help"], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "--older-than" in shown.stdout
    refused = subprocess.run([*edgekit, "bench", "x", "--threads", "-1"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "Invalid value for '--threads': -1 is not in the range x>=1" in refused.stderr
