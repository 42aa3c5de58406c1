"""The planner's inserted conversions and refusals, and the step cache."""

import logging

import pytest

from edgekit.compiler import compile, plan
from edgekit.errors import UnsupportedOnTarget, UserError
from edgekit.metrics import Evaluation
from edgekit.spec import parse_input_spec

CNN = (parse_input_spec("image:batchx1x8x8"),)


def _ort_target(folder, name: str, constraints: str = "{}", device: str = "cpu"):
    """A one-precision (fp32) ONNX Runtime target file with the given constraints."""
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\ndevice: {device}\nruntime: onnxruntime\nformat: onnx\nprecisions: [fp32]\n"
                    f"constraints: {constraints}\n")
    return path


def test_torch_source_gets_export_inserted_before_onnx_steps(cnn_source):
    steps = plan(cnn_source, "cpu-ort", "int8", CNN).describe()
    assert [(s["pass"], s["origin"]) for s in steps] == [
        ("export-onnx", "inserted"), ("optimize-onnx", "recipe"), ("quantize-static", "recipe")]
    assert "step 'optimize-onnx' of recipe int8 takes onnx" in steps[0]["reason"]
    assert steps[1]["reason"] == steps[2]["reason"] == "quantize int8/static on cpu-ort"  # the target's way


def test_onnx_source_needs_no_conversion_and_lowering_is_added(cnn_onnx):
    steps = plan(cnn_onnx, "cpu-ort", "fp32").describe()
    assert [(s["pass"], s["origin"]) for s in steps] == [("optimize-onnx", "lowering")]


def test_precision_name_picks_the_targets_recipe(cnn_onnx):
    assert plan(cnn_onnx, "cpu-ort", "int4").recipe.name == "int4-weights"


def test_unsupported_precision_lists_what_the_target_takes(cnn_onnx, tmp_path):
    target = _ort_target(tmp_path, "fp32-only")
    with pytest.raises(UnsupportedOnTarget, match="does not support precision int8 .*it supports fp32"):
        plan(cnn_onnx, target, "int8")


def test_static_shape_target_names_the_symbolic_dim_and_the_fix(cnn_onnx, tmp_path):
    target = _ort_target(tmp_path, "static", "{static_shapes: true}", device="npu")
    with pytest.raises(UnsupportedOnTarget, match=r"symbolic dim 'batch'; fix it with --input image:1x1x8x8:float32"):
        plan(cnn_onnx, target, "fp32")
    assert plan(cnn_onnx, target, "fp32", (parse_input_spec("image:1x1x8x8"),)).steps == ()


def test_no_conversion_path_is_an_error(cnn_onnx, tmp_path):
    from edgekit.ingest import ingest
    from edgekit.passes.base import Context
    from edgekit.passes.openvino import ConvertOpenvino, ConvertOpenvinoConfig

    ir = ConvertOpenvino().run(ingest(cnn_onnx), ConvertOpenvinoConfig(), Context(tmp_path / "ir")).path
    recipe = tmp_path / "needs-torch.yaml"
    recipe.write_text("steps:\n  - pass: export-onnx\n")
    with pytest.raises(UnsupportedOnTarget, match="takes exported, torch, but no conversion leads from openvino"):
        plan(ir, "cpu-ort", recipe)


def test_second_compile_reuses_every_cached_step(cnn_source, cnn_data, tmp_path, cache_dir):
    first = compile(cnn_source, "cpu-ort", tmp_path / "a", "int8", cnn_data, cnn_data, CNN, cache_dir, bench_runs=3)
    assert [r.cached for r in first.records] == [False, False, False]
    second = compile(cnn_source, "cpu-ort", tmp_path / "b", "int8", cnn_data, cnn_data, CNN, cache_dir, bench_runs=3)
    assert [r.cached for r in second.records] == [True, True, True]
    assert first.manifest.files[0].sha256 == second.manifest.files[0].sha256
    assert second.manifest.recipe["applied"] == first.manifest.recipe["applied"]
    # a cached step keeps its fidelity record (export-onnx and optimize-onnx promise a tolerance)
    fidelity = [[step.get("fidelity", {}).get("max_rel") for step in result.manifest.steps] for result in (first, second)]
    assert fidelity[0][:2] == fidelity[1][:2] and None not in fidelity[1][:2]


def test_changed_config_or_calibration_misses_the_cache(cnn_source, cnn_data, tmp_path, cache_dir):
    compile(cnn_source, "cpu-ort", tmp_path / "a", "int8", cnn_data, cnn_data, CNN, cache_dir, bench_runs=3)
    recipe = tmp_path / "entropy.yaml"
    recipe.write_text("precision: int8\nsteps:\n  - pass: optimize-onnx\n  - pass: quantize-static\n"
                      "    with: {calibrate_method: percentile}\n")
    again = compile(cnn_source, "cpu-ort", tmp_path / "b", recipe, cnn_data, cnn_data, CNN, cache_dir, bench_runs=3)
    assert [r.cached for r in again.records] == [True, True, False]


def test_synthetic_calibration_warns(cnn_source, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        result = compile(cnn_source, "cpu-ort", tmp_path / "p", "int8", inputs=CNN, bench_runs=3)
    assert "calibration and accuracy on random data are unreliable" in caplog.text
    assert result.manifest.data["calibration_origin"] == "synthetic"


def test_unknown_pass_in_recipe_names_file_step_and_suggestion(tmp_path, cnn_onnx):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("steps:\n  - pass: optimize-onnx\n  - pass: quantise-static\n")
    with pytest.raises(UserError, match=r"typo.yaml, step 2: unknown pass 'quantise-static' \(did you mean 'quantize-static'\?\)"):
        plan(cnn_onnx, "cpu-ort", recipe)


def test_auto_has_no_single_plan(cnn_onnx):
    with pytest.raises(UserError, match="--recipe auto compiles and measures every candidate recipe"):
        plan(cnn_onnx, "cpu-ort", "auto")


def test_precision_the_target_lacks_lists_what_it_offers(cnn_source):
    with pytest.raises(UnsupportedOnTarget, match=r"target mobile-tflite has no bf16 recipe; it offers fp32 \(fp32\), "
                                                  r"fp16 \(fp16-tflite\), int8 \(int8\), int4 \(int4-weights\)"):
        plan(cnn_source, "mobile-tflite", "bf16", CNN)


def test_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(UserError, match="is a folder without config.json: not a Hugging Face model folder"):
        plan(tmp_path, "cpu-ort", "fp32")


def test_fidelity_check_stops_a_step_that_changes_the_outputs(cnn_onnx, tmp_path):
    """A pass promising 1e-4 (optimize-onnx) whose output drifts (one weight scaled by 1.1) stops the compile."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgekit.errors import FidelityError
    from edgekit.evaluate import FidelityCheck
    from edgekit.ingest import ingest
    from edgekit.instruments import StepRecord
    from edgekit.model import Format
    from edgekit.passes.base import Step, get_pass
    from edgekit.pipeline import PlannedStep

    graph = onnx.load(str(cnn_onnx))
    weight = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.1, weight.name))
    drifted_path = tmp_path / "drifted.onnx"
    onnx.save(graph, str(drifted_path))
    source, drifted = ingest(cnn_onnx), ingest(drifted_path)
    step = PlannedStep(Step("optimize-onnx", get_pass("optimize-onnx").Config()), "recipe", Format.ONNX, Format.ONNX)
    feeds = [{"image": np.random.default_rng(i).standard_normal((2, 1, 8, 8)).astype(np.float32)} for i in range(4)]
    check = FidelityCheck(feeds)
    same = StepRecord("optimize-onnx", "recipe", 0.0, False, None)
    check.after_step(step, source, ingest(cnn_onnx), same)
    assert same.details["fidelity"]["max_rel"] == 0.0
    with pytest.raises(FidelityError, match=r"step 'optimize-onnx' changed the outputs by .* over its tolerance 1e-04"):
        check.after_step(step, source, drifted, StepRecord("optimize-onnx", "recipe", 0.0, False, None))


def test_a_target_field_a_pass_declares_joins_its_cache_key(cnn_source, cnn_data, tmp_path, cache_dir):
    """quantize-nncf picks NNCF's target device from the target's `device`: two targets that differ only there must
    not share its cached output (they did: the key held no target field)."""
    import yaml

    from edgekit.catalog import resolve

    builtin = yaml.safe_load(resolve("targets", "cpu-openvino").read_text())
    variants = {}
    for device in ("cpu", "gpu"):  # the runtime options keep OpenVINO on the CPU, so both compile and run here
        path = tmp_path / f"openvino-as-{device}.yaml"
        path.write_text(yaml.safe_dump({**builtin, "name": f"openvino-as-{device}", "device": device}))
        variants[device] = path
    first = compile(cnn_source, variants["cpu"], tmp_path / "a", "int8", cnn_data, cnn_data, CNN, cache_dir, bench_runs=2)
    second = compile(cnn_source, variants["gpu"], tmp_path / "b", "int8", cnn_data, cnn_data, CNN, cache_dir, bench_runs=2)
    cached = {r.pass_name: r.cached for r in second.records}
    assert [r.cached for r in first.records] == [False] * len(first.records)
    assert cached["convert-openvino"] is True and cached["quantize-nncf"] is False


def test_dump_steps_writes_every_intermediate_model(cnn_source, cnn_data, tmp_path):
    """The dump instrument writes each step's model; the last one is byte for byte the packaged model."""
    import json

    from edgekit.digest import file_sha256
    from edgekit.instruments import DumpSteps

    result = compile(cnn_source, "cpu-ort", tmp_path / "pkg", "prune-distill-int8", cnn_data, cnn_data, CNN,
                     tmp_path / "cache", bench_runs=2, instruments=(DumpSteps(tmp_path / "dump"),),
                     tolerance=Evaluation("top1", max_drop=1.0))
    folders = sorted(p.name for p in (tmp_path / "dump").iterdir())
    assert folders == [f"{i:02d}-{s.step.pass_name}" for i, s in enumerate(result.plan.steps, 1)]
    pruned = json.loads((tmp_path / "dump" / "01-prune-structured" / "model.json").read_text())
    assert pruned["format"] == "torch" and "not written" in pruned["note"] and pruned["files"] == []
    last = tmp_path / "dump" / folders[-1]
    assert file_sha256(last / "model.onnx") == result.manifest.files[0].sha256
    assert json.loads((last / "model.json").read_text())["meta"]["passes"][-1]["pass"] == "quantize-static"


def test_a_model_above_the_targets_opset_range_is_refused(cnn_onnx, tmp_path):
    target = _ort_target(tmp_path, "old-ort", "{opset_min: 11, opset_max: 17}")
    with pytest.raises(UnsupportedOnTarget, match=r"the model has ONNX opset 2\d; target old-ort takes opsets 11 to 17"):
        plan(cnn_onnx, target, "fp32")
