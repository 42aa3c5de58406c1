"""`--recipe auto`: the candidate list, the selection rule on measured candidates, and one real run on the tiny CNN."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import CNN_INPUT

from edgekit.autoselect import candidates, choose, compile_auto, tolerance_for
from edgekit.errors import UserError
from edgekit.metrics import Evaluation
from edgekit.passes.quantize_ort import isa_choice
from edgekit.spec import parse_input_spec
from edgekit.target import load_target


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory, cnn_source, cnn_data):
    """One real auto compile of the tiny CNN for cpu-ort (3 timed runs per candidate: selection, not benchmarking)."""
    folder = tmp_path_factory.mktemp("auto")
    result = compile_auto(cnn_source, "cpu-ort", folder / "pkg", cnn_data, cnn_data, (parse_input_spec(CNN_INPUT),),
                          folder / "cache", bench_runs=3)
    return result


def test_cpu_ort_candidates_cover_every_method():
    target = load_target("cpu-ort")
    other = "u8" if isa_choice(target.instruction_set)["activation_type"] == "int8" else "s8"  # the ISA's non-default
    found = candidates(target)
    assert [c.name for c in found] == ["fp32", "fp16", "int8-static", "int8-static-percentile", "int8-static-entropy",
                                       f"int8-static-{other}", "int8-dynamic", "int4-weight-only"]
    variant = next(c for c in found if c.name.endswith(other)).recipe
    step = next(s for s in variant.steps if s.pass_name == "quantize-static")
    assert step.config.activation_type == ("uint8" if other == "u8" else "int8")
    assert [c.name for c in found if c.transformer_only] == ["int4-weight-only"]


def test_cpu_openvino_candidates_follow_the_isa(tmp_path):
    target = load_target("cpu-openvino")
    rows = {c.name: c for c in candidates(target)}
    assert rows["int8-static-transformer"].transformer_only  # NNCF's transformer preset, a variant quantize-nncf declares
    step = rows["int8-static-transformer"].recipe.steps[-1]
    assert (step.pass_name, step.config.preset, step.config.model_type) == ("quantize-nncf", "mixed", "transformer")
    if target.instruction_set.bf16:
        assert rows["bf16-openvino"].recipe is not None
    else:
        assert rows["bf16-openvino"].recipe is None and "no native bf16" in rows["bf16-openvino"].skipped
    avx2 = tmp_path / "cpu-openvino-avx2.yaml"
    avx2.write_text(Path(target.source).read_text().replace("name: cpu-openvino", "name: cpu-openvino-avx2\nisa: avx2"))
    skipped = {c.name: c for c in candidates(load_target(avx2))}["bf16-openvino"]
    assert skipped.recipe is None and "avx2 has no native bf16" in skipped.skipped


def test_auto_compiles_measures_and_records_every_candidate(auto_run):
    manifest = json.loads((auto_run.package / "manifest.json").read_text())
    auto = manifest["auto"]
    rows = {row["name"]: row for row in auto["candidates"]}
    assert set(rows) == {c.name for c in candidates(load_target("cpu-ort"))}
    assert auto["tolerance"] == {"metric": "top1", "max_drop": 0.01, "relative": False, "default": True}
    assert rows["int4-weight-only"]["status"] == "skipped" and "not transformer-like" in rows["int4-weight-only"]["reason"]
    measured = [row for row in rows.values() if row["status"] == "ok"]
    assert len(measured) == 7 and all(row["p50_ms"] > 0 and row["size_bytes"] > 0 for row in measured)
    chosen = [row for row in auto["candidates"] if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["name"] == auto["chosen"] and chosen[0]["verdict"] == "within"
    fastest = min((row for row in measured if row["verdict"] == "within"), key=lambda row: row["p50_ms"])
    assert fastest["name"] == auto["chosen"]
    assert manifest["precision"] == chosen[0]["precision"] and manifest["metrics"]["verdict"]["ok"]
    assert manifest["data"]["report"]["overlap"]["same_data"] is False  # same file, loaded twice: all rows shared
    assert manifest["data"]["report"]["overlap"]["fraction"] == 1.0


def test_choose_on_measured_candidates(auto_run):
    records = [{k: v for k, v in row.items() if k not in ("verdict", "metric", "chosen")}
               for row in auto_run.manifest.auto["candidates"]]
    ok = [r for r in records if r["status"] == "ok"]
    # a cosine bound no quantized candidate meets leaves only the exact ones (fp32, and fp16 if it is that close)
    strict = Evaluation("cosine", max_drop=1e-9)
    best, rows = choose(records, strict)
    exact = [r for r in ok if 1 - r["fidelity"]["cosine_mean"] <= 1e-9]
    assert best is not None and best["name"] in {r["name"] for r in exact}
    assert {r["name"] for r in rows if r["verdict"] == "within"} == {r["name"] for r in exact}
    # the winner is the fastest within, whatever the order of the records
    loose = Evaluation("cosine", max_drop=1.0)
    best, _ = choose(list(reversed(records)), loose)
    assert best["p50_ms"] == min(r["p50_ms"] for r in ok)
    # skipped and failed rows are listed with their reason, never chosen
    failed = {"name": "broken", "precision": "int8", "status": "failed", "reason": "no conversion"}
    best, rows = choose([failed], loose)
    assert best is None and rows[0]["verdict"] == "failed" and rows[0]["chosen"] is False
    # nothing within: no winner
    assert choose(ok, Evaluation("mse", max_drop=-1.0))[0] is None


def test_default_tolerance_and_its_limits():
    classifier = {"top1_agreement": 1.0, "cosine_mean": 1.0, "accuracy": 0.9, "reference_accuracy": 0.9}
    assert tolerance_for(None, classifier) == (Evaluation("top1", 0.01), True)
    assert tolerance_for(None, {"cosine_mean": 1.0}) == (Evaluation("cosine", 0.01), True)
    unlabelled = {"top1_agreement": 1.0, "cosine_mean": 1.0}  # a 2-D output without labels may be an embedding
    assert tolerance_for(None, unlabelled) == (Evaluation("cosine", 0.01), True)
    assert tolerance_for(Evaluation("cosine", 0.05), classifier) == (Evaluation("cosine", 0.05), False)
    with pytest.raises(UserError, match="metric mse needs a tolerance: give --max-drop"):
        tolerance_for(Evaluation("mse"), classifier)


def test_a_failing_candidate_is_listed_not_fatal(tmp_path, cnn_source, cnn_data):
    target = tmp_path / "cpu-ort-extra.yaml"
    text = (Path(load_target("cpu-ort").source).read_text()
            .replace("precisions: [fp32, fp16, int8, int4]", "precisions: [fp32, fp16]")
            .replace("  fp16: fp16\n", "  fp16: fp16-weights\n"))  # OpenVINO's fp16 recipe: it cannot run on ORT
    target.write_text(text)
    result = compile_auto(cnn_source, target, tmp_path / "pkg", cnn_data, cnn_data, (parse_input_spec(CNN_INPUT),),
                          tmp_path / "cache", bench_runs=2)
    rows = {row["name"]: row for row in result.manifest.auto["candidates"]}
    assert rows["fp32"]["chosen"] and rows["fp16-weights"]["status"] == "failed"
    assert "no conversion leads from openvino to onnx" in rows["fp16-weights"]["reason"]
    shutil.rmtree(tmp_path / "cache")


def test_mobile_candidates_are_the_targets_quantize_entries():
    tflite = {c.name: c for c in candidates(load_target("mobile-tflite"))}
    schemes = {name: (c.recipe.steps[0].precision, c.recipe.steps[0].scheme) for name, c in tflite.items()
               if name.startswith("int")}
    assert schemes == {"int8-static": ("int8", "static"), "int8-dynamic": ("int8", "dynamic"),
                       "int8-weight-only": ("int8", "weight-only"), "int4-dynamic": ("int4", "dynamic"),
                       "int4-weight-only": ("int4", "weight-only")}
    assert {name for name, c in tflite.items() if c.transformer_only} == {"int4-dynamic", "int4-weight-only"}
    executorch = [c.name for c in candidates(load_target("mobile-executorch"))]
    assert executorch == ["fp32", "int8-static", "int8-dynamic", "int4-dynamic"]
