"""Recipe and target files: validation errors name the file, the step, the field; paths work like names."""

import shutil

import pytest

from edgekit.catalog import builtin_dir
from edgekit.errors import UserError
from edgekit.recipe import load_recipe
from edgekit.target import all_targets, load_target


def _recipe(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_builtin_recipes_load_and_validate():
    recipe = load_recipe("int8-static")
    assert [s.pass_name for s in recipe.steps] == ["optimize-onnx", "quantize-static"]
    assert recipe.steps[1].config.per_channel is True and recipe.precision == "int8"


def test_path_works_like_a_builtin_name(tmp_path):
    copy = tmp_path / "mine.yaml"
    shutil.copy(builtin_dir("recipes") / "int8-static.yaml", copy)
    assert load_recipe(copy).steps == load_recipe("int8-static").steps
    target_copy = tmp_path / "t.yaml"
    shutil.copy(builtin_dir("targets") / "cpu-ort.yaml", target_copy)
    assert load_target(target_copy).format == load_target("cpu-ort").format


@pytest.mark.parametrize("text, message", [
    ("steps:\n  - pass: quantize-static\n    with: {per_channel: 'yes'}\n",
     r"step 1 \(quantize-static\): parameter 'per_channel' = 'yes' \(str\); expected true or false"),
    ("steps:\n  - pass: quantize-static\n    with: {calibrate_method: entropyy}\n",
     r"expected one of 'minmax', 'percentile', 'entropy' \(did you mean 'entropy'\?\)"),
    ("steps:\n  - pass: quantize-static\n    with: {per_chanel: true}\n",
     r"unknown parameter 'per_chanel' \(did you mean 'per_channel'\?\)"),
    ("steps:\n  - pass: quantize-static\n    with: {calibration_samples: 0}\n",
     r"'calibration_samples' = 0 is outside \[1, 100000\]"),
    ("stepz: []\n", r"unknown field 'stepz' \(did you mean 'steps'\?\)"),
    ("steps:\n  - optimize-onnx\n", r"step 1: expected a mapping with 'pass'"),
    ("steps: [\n", "not valid YAML"),
])
def test_recipe_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_recipe(_recipe(tmp_path, text))


def test_unknown_names_suggest():
    with pytest.raises(UserError, match=r"unknown recipe 'int8-statc' \(did you mean 'int8-static'\?\)"):
        load_recipe("int8-statc")
    with pytest.raises(UserError, match=r"unknown target 'cpu-or' \(did you mean 'cpu-ort'\?\)"):
        load_target("cpu-or")
    with pytest.raises(UserError, match="target file not found"):
        load_target("no/such/target.yaml")


def test_target_field_errors(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: x\ndevice: tpu\nruntime: onnxruntime\nformat: onnx\nprecisions: [fp32]\n")
    with pytest.raises(UserError, match=r"parameter 'device' = 'tpu' \(str\); expected one of 'cpu', 'gpu', 'npu', 'mobile'"):
        load_target(path)
    path.write_text("name: x\ndevice: cpu\nruntime: onnxruntim\nformat: onnx\nprecisions: [fp32]\n")
    with pytest.raises(UserError, match=r"unknown runtime 'onnxruntim' \(did you mean 'onnxruntime'\?\)"):
        load_target(path)


@pytest.mark.parametrize(("runtime", "options", "message"), [
    ("openvino", "{devce: CPU}", r"options: unknown parameter 'devce' \(did you mean 'device'\?\); known: device, config"),
    ("onnxruntime", "{graph_optimization_level: fast}", r"parameter 'graph_optimization_level' = 'fast' .*one of 'disable'"),
    ("onnxruntime", "{providers: CPUExecutionProvider}", r"parameter 'providers' .*a list of str"),
    ("tflite", "{threads: 2}", r"unknown parameter 'threads'; known: none"),
])
def test_target_options_are_typed_per_runtime(tmp_path, runtime, options, message):
    path = tmp_path / "t.yaml"
    path.write_text(f"name: x\ndevice: cpu\nruntime: {runtime}\nformat: onnx\nprecisions: [fp32]\noptions: {options}\n")
    with pytest.raises(UserError, match=message):
        load_target(path)


def test_a_recipes_runtime_options_are_checked_too():
    with pytest.raises(UserError, match=r"target cpu-openvino with a recipe's runtime options: unknown parameter 'confg' "
                                        r"\(did you mean 'config'\?\)"):
        load_target("cpu-openvino").with_runtime({"confg": {"INFERENCE_PRECISION_HINT": "bf16"}})


def test_cpu_ort_is_available_here():
    targets = {t.name: t for t in all_targets()}
    assert targets["cpu-ort"].availability() is None
