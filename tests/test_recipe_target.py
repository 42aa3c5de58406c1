"""Recipe and target files: validation errors name the file, the step, the field; paths work like names."""

import shutil

import pytest

from edgekit.catalog import builtin_dir
from edgekit.errors import UserError
from edgekit.intent import QuantizeIntent
from edgekit.recipe import load_recipe
from edgekit.target import all_targets, load_target


def _recipe(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_builtin_recipes_load_and_validate():
    recipe = load_recipe("int8")
    assert recipe.steps == (QuantizeIntent("int8", "static", "per-channel"),) and recipe.precision == "int8"
    expert = load_recipe("int8-nncf-transformer")
    assert [s.pass_name for s in expert.steps] == ["quantize-nncf"] and expert.steps[0].config.model_type == "transformer"


def test_every_builtin_recipe_plans_on_every_target_that_offers_its_precision():
    """A recipe says what; each target that offers the precision lowers it (or refuses with a reason)."""
    from edgekit.catalog import builtin_names
    from edgekit.errors import UnsupportedOnTarget
    from edgekit.pipeline import lowered_steps

    lowered, refused = {}, {}
    for target in all_targets():
        for name in builtin_names("recipes"):
            recipe = load_recipe(name)
            if recipe.precision in target.precisions and any(isinstance(s, QuantizeIntent) for s in recipe.steps):
                try:
                    lowered[(target.name, name)] = [step.pass_name for step, _ in lowered_steps(recipe, target)][-1]
                except UnsupportedOnTarget as error:
                    refused[(target.name, name)] = str(error)
    # dynamic int8 exists only where the runtime has kernels for it; a budget (mixed precision) only where the
    # target's quantizer takes one (ONNX Runtime, OpenVINO)
    no_dynamic = {(t, name) for t in ("cpu-openvino", "gpu-openvino", "npu-openvino", "gpu-ort-cuda", "gpu-tensorrt")
                  for name in ("int8-dynamic", "int8-mixed-dynamic")}
    no_budget = {(t, name) for t in ("mobile-tflite", "mobile-executorch") for name in ("int8-mixed", "int8-mixed-dynamic")}
    assert set(refused) == no_dynamic | no_budget
    assert "quantize-tflite has no per-layer mixed precision, so no budget" in refused[("mobile-tflite", "int8-mixed")]
    assert lowered[("cpu-ort", "int8-mixed-dynamic")] == "quantize-dynamic"
    assert lowered[("cpu-openvino", "int8-mixed")] == "quantize-nncf"
    assert "has no int8/dynamic quantization; it offers: int8/static" in refused[("gpu-tensorrt", "int8-dynamic")]
    for name in ("int8", "int4-weights", "prune-distill-int8"):  # one recipe each on every CPU-runnable target
        assert {t for t, r in lowered if r == name} >= {"cpu-ort", "cpu-openvino", "mobile-tflite", "mobile-executorch"}
    assert lowered[("cpu-ort", "int8")] == lowered[("gpu-tensorrt", "int8")] == "quantize-static"
    assert lowered[("cpu-openvino", "int8")] == lowered[("npu-openvino", "prune-distill-int8")] == "quantize-nncf"
    assert lowered[("mobile-tflite", "int4-weights")] == "quantize-tflite"
    assert lowered[("mobile-executorch", "int4-weights")] == "quantize-executorch"
    assert lowered[("cpu-openvino", "int4-weights")] == "compress-weights-nncf"
    assert lowered[("cpu-ort", "int4-weights")] == "quantize-int4"


@pytest.mark.parametrize("target, intent, message", [
    ("cpu-openvino", {"precision": "int8", "scheme": "dynamic"},
     r"target cpu-openvino has no int8/dynamic quantization; it offers: int8/static, int8/weight-only, int4/weight-only"),
    ("cpu-ort", {"precision": "int4", "granularity": "per-channel"},
     r"quantize-int4 cannot quantize int4 weights per-channel; it offers per-group"),
    ("mobile-tflite", {"precision": "int4", "group_size": 100}, r"LiteRT's int4 blocks hold 32, 64, 128 or 256 weights"),
])
def test_an_intent_the_target_cannot_lower_names_what_it_offers(target, intent, message):
    from edgekit.errors import UnsupportedOnTarget
    from edgekit.intent import lower_intent, parse_intent

    with pytest.raises(UnsupportedOnTarget, match=message):
        lower_intent(parse_intent({"quantize": intent}, "t"), load_target(target))


def test_intent_fields_reach_the_targets_pass():
    from edgekit.intent import lower_intent

    steps, key = lower_intent(QuantizeIntent("int4", granularity="per-group", group_size=64), load_target("cpu-openvino"))
    assert key == "int4/weight-only" and steps[-1].config.group_size == 64 and steps[-1].config.mode == "int4_sym"
    steps, key = lower_intent(QuantizeIntent("int8", "static", "per-tensor", calibration_samples=7), load_target("cpu-ort"))
    assert [s.pass_name for s in steps] == ["optimize-onnx", "quantize-static"]
    assert (steps[-1].config.per_channel, steps[-1].config.calibration_samples) == (False, 7)
    steps, key = lower_intent(QuantizeIntent("int4"), load_target("mobile-executorch"))
    assert key == "int4/dynamic" and steps[-1].config.precision == "int4"  # the target's first int4 entry


def test_path_works_like_a_builtin_name(tmp_path):
    copy = tmp_path / "mine.yaml"
    shutil.copy(builtin_dir("recipes") / "int8.yaml", copy)
    assert load_recipe(copy).steps == load_recipe("int8").steps
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
    ("steps:\n  - optimize-onnx\n", r"step 1: expected a mapping with 'pass' \(a pass to run\) or 'quantize'"),
    ("steps:\n  - quantize: {precision: int3}\n", r"step 1 \(quantize\): parameter 'precision' = 'int3'"),
    ("steps:\n  - quantize: {precision: int8, scheme: statc}\n", r"\(did you mean 'static'\?\)"),
    ("steps:\n  - quantize: {precision: int4, granularity: per-channel, group_size: 64}\n",
     r"group_size applies to granularity per-group, not per-channel"),
    ("steps:\n  - quantize: {precision: int8}\n    scheme: static\n", r"not beside it: scheme"),
    ("steps: [\n", "not valid YAML"),
])
def test_recipe_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_recipe(_recipe(tmp_path, text))


def test_unknown_names_suggest():
    with pytest.raises(UserError, match=r"unknown recipe 'int8-dynamc' \(did you mean 'int8-dynamic'\?\)"):
        load_recipe("int8-dynamc")
    with pytest.raises(UserError, match=r"recipe int8-nncf is now int8: one recipe that each target quantizes its own "
                                        r"way \(--recipe int8\)"):
        load_recipe("int8-nncf")
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


@pytest.mark.parametrize("quantize, message", [
    ("{int8/statc: {pass: quantize-static}}", r"unknown entry 'int8/statc' \(did you mean 'int8/static'\?\)"),
    ("{int8/static: {pass: optimize-onnx}}", r"the last step must be a quantizing pass .* not optimize-onnx"),
    ("{int8/static: {pass: quantize-static, with: {per_chanel: true}}}", r"quantize int8/static, step 1 \(quantize-static\): "
                                                                         r"unknown parameter 'per_chanel'"),
])
def test_target_quantize_entries_are_checked(tmp_path, quantize, message):
    path = tmp_path / "t.yaml"
    path.write_text(f"name: x\ndevice: cpu\nruntime: onnxruntime\nformat: onnx\nprecisions: [fp32]\nquantize: {quantize}\n")
    with pytest.raises(UserError, match=message):
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
