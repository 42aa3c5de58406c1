"""`--recipe auto`: the candidate list, the selection rule on measured candidates, and one real run on the tiny CNN."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import CNN_INPUT

from edgekit.autoselect import (
    MIN_SPEEDUP,
    candidates,
    choose,
    compile_auto,
    faster_beyond_noise,
    precision_rank,
    ptq_within,
    qat_candidate,
    tolerance_for,
)
from edgekit.errors import UserError
from edgekit.metrics import Evaluation, default_max_drop
from edgekit.model import Format
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
    assert auto["tolerance"] == {"metric": "auto", "max_drop": None, "worst": None, "relative": False, "default": True,
                                 "min_speedup": MIN_SPEEDUP}
    assert rows["int4-weight-only"]["status"] == "skipped" and "not transformer-like" in rows["int4-weight-only"]["reason"]
    measured = [row for row in rows.values() if row["status"] == "ok"]
    assert len(measured) == 7 and all(row["p50_low"] <= row["p50_ms"] <= row["p50_high"] for row in measured)
    chosen = [row for row in auto["candidates"] if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["name"] == auto["chosen"] and chosen[0]["verdict"] == "within"
    # the labelled CNN's [batch, 10] logits are judged by top-1 accuracy; the default limit is 0.01
    metric = chosen[0]["metric"]
    assert (metric["name"], metric["limit"]) == ("top1", 0.01) and "against the labels" in metric["reason"]
    # no more precise candidate within tolerance was left for one that is not faster beyond the noise
    winner = chosen[0]
    for row in measured:
        if row["verdict"] == "within" and precision_rank(row["precision"]) < precision_rank(winner["precision"]):
            assert faster_beyond_noise(winner, row, MIN_SPEEDUP)
        assert row["why"], row["name"]
    assert manifest["precision"] == winner["precision"] and manifest["metrics"]["verdict"]["ok"]
    assert manifest["metrics"]["judged"][0]["metric"] == "top1"
    assert manifest["data"]["report"]["overlap"]["same_data"] is False  # same file, loaded twice: all rows shared
    assert manifest["data"]["report"]["overlap"]["fraction"] == 1.0


def test_choose_on_measured_candidates(auto_run):
    records = [{k: v for k, v in row.items() if k not in ("verdict", "metric", "chosen", "judged", "why", "strain")}
               for row in auto_run.manifest.auto["candidates"]]
    ok = [r for r in records if r["status"] == "ok"]
    # a cosine bound no quantized candidate meets leaves only the exact ones (fp32, and fp16 if it is that close)
    strict = Evaluation("cosine", max_drop=1e-9)
    best, rows = choose([{**r, "fidelity": _rejudged(r, strict)} if r["status"] == "ok" else r for r in records],
                        strict, False)
    exact = [r for r in rows if r["status"] == "ok" and r["metric"]["drop"] <= 1e-9]
    assert best is not None and best["name"] in {r["name"] for r in exact}
    assert {r["name"] for r in rows if r["verdict"] == "within"} == {r["name"] for r in exact}
    # skipped and failed rows are listed with their reason, never chosen
    failed = {"name": "broken", "precision": "int8", "status": "failed", "reason": "no conversion"}
    best, rows = choose([failed], Evaluation("cosine", max_drop=1.0))
    assert best is None and rows[0]["verdict"] == "failed" and rows[0]["chosen"] is False
    assert rows[0]["why"] == "no conversion"
    # nothing within: no winner
    assert choose([{**r, "fidelity": _rejudged(r, Evaluation("mse"))} for r in ok], Evaluation("mse", max_drop=-1.0))[0] is None


def _rejudged(record: dict, evaluation: Evaluation) -> dict:
    """A record's fidelity with one judgement by `evaluation`'s metric, from the figures it kept (cosine, mse)."""
    fidelity = record["fidelity"]
    value = fidelity["cosine_mean"] if evaluation.metric == "cosine" else fidelity["mse"]
    kind = "similarity" if evaluation.metric == "cosine" else "error"
    return {**fidelity, "judged": [_judged(evaluation.metric, value, kind)]}


def _judged(metric: str, value: float, kind: str = "agreement", worst: float | None = None, binary: bool = False) -> dict:
    return {"output": "y", "metric": metric, "reason": "test", "kind": kind, "binary": binary, "value": value,
            "reference": 0.0 if kind == "error" else 1.0, "worst": value if worst is None else worst,
            "worst_sample": 0, "changed": None, "samples": 8}


def _row(name: str, precision: str, p50: float, spread: float, agreement: float = 1.0, worst: float | None = None) -> dict:
    return {"name": name, "precision": precision, "status": "ok", "p50_ms": p50, "p50_low": p50 - spread,
            "p50_high": p50 + spread, "size_bytes": 1000, "fidelity": {"judged": [_judged("agreement", agreement, worst=worst)]}}


def test_a_less_precise_candidate_wins_only_beyond_the_noise():
    fp32 = _row("fp32", "fp32", 10.0, 0.1)
    # 1% faster, intervals overlapping: the more precise package stays
    best, rows = choose([fp32, _row("int8", "int8", 9.9, 0.1)], Evaluation())
    assert best["name"] == "fp32" and "not faster beyond noise (and by 5%) than the more precise fp32" in rows[1]["why"]
    # 20% faster but its interval reaches fp32's: noise, not speed
    assert choose([fp32, _row("int8", "int8", 8.0, 2.0)], Evaluation())[0]["name"] == "fp32"
    # intervals apart but only 3% faster: under the 5% margin, unless the margin is lowered
    tight = [fp32, _row("int8", "int8", 9.7, 0.01)]
    assert choose(tight, Evaluation())[0]["name"] == "fp32"
    assert choose(tight, Evaluation(), min_speedup=0.0)[0]["name"] == "int8"
    # clearly faster: int8 wins; a second int8 with a bigger drop must beat the closer one beyond noise too
    best, rows = choose([fp32, _row("int8-a", "int8", 5.0, 0.05, 0.999), _row("int8-b", "int8", 4.9, 0.05, 0.995)],
                        Evaluation(worst=1.0))
    assert best["name"] == "int8-a" and "more precise int8-a" in rows[2]["why"]
    best, _ = choose([fp32, _row("int8-a", "int8", 5.0, 0.05, 0.999), _row("int8-b", "int8", 4.0, 0.05, 0.995)],
                     Evaluation(worst=1.0))
    assert best["name"] == "int8-b"


def test_the_worst_sample_is_bounded_for_agreement_metrics():
    # mean 0.995 is within 0.01, but one sample lost 4% of its positions: by default that misses
    fp32, int8 = _row("fp32", "fp32", 10.0, 0.1), _row("int8", "int8", 5.0, 0.1, agreement=0.995, worst=0.96)
    best, rows = choose([fp32, int8], Evaluation())
    assert best["name"] == "fp32" and rows[1]["verdict"] == "misses"
    assert "sample 0 dropped by 0.0400" in rows[1]["why"] and "worst-sample limit 0.01" in rows[1]["why"]
    # an explicit, looser worst bound lets it through
    assert choose([fp32, int8], Evaluation(worst=0.05))[0]["name"] == "int8"


def test_default_tolerance_and_its_limits():
    assert tolerance_for(None) == (Evaluation(), True)
    assert tolerance_for(Evaluation("cosine", 0.05)) == (Evaluation("cosine", 0.05), False)
    assert default_max_drop("ctc") == default_max_drop("top5") == default_max_drop("cosine") == 0.01
    assert default_max_drop("rel-error") == 0.05
    row = _row("fp32", "fp32", 1.0, 0.1)
    row["fidelity"] = {"judged": [_judged("mse", 0.0, "error")]}
    with pytest.raises(UserError, match="metric mse has no default tolerance: give --max-drop"):
        choose([row], Evaluation("mse"))


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


def test_the_printed_table_shows_interval_worst_and_why(auto_run, monkeypatch):
    import io

    from edgekit import console

    screen = io.StringIO()
    monkeypatch.setattr(console.out, "_file", screen)  # restored to None: follow sys.stdout
    monkeypatch.setattr(console.out, "width", 400)
    console.show_auto(auto_run.manifest.auto)
    text = screen.getvalue()
    assert "p50 ms [95% CI]" in text and "worst" in text and "changed" in text and "why" in text
    chosen = next(row for row in auto_run.manifest.auto["candidates"] if row["chosen"])
    assert f"{chosen['p50_low']:.3g}, {chosen['p50_high']:.3g}]" in text
    assert "fastest of those faster beyond noise than every more precise candidate" in text
    assert "not transformer-like" in text and "rule: the most precise candidate within tolerance" in text


def test_qat_is_tried_when_no_quantized_candidate_is_within(tmp_path, cnn_source, cnn_data, caplog):
    target = tmp_path / "cpu-ort-int8.yaml"  # fp32 and int8/static only (with its calibration-method variants)
    text = Path(load_target("cpu-ort").source).read_text().replace("precisions: [fp32, fp16, int8, int4]",
                                                                     "precisions: [fp32, int8]")
    text = text.split("  int8/dynamic:")[0].replace("calibrate_method: minmax}", "calibrate_method: minmax, activation_type: uint8}")
    target.write_text(text + "default_recipe: fp32\nrecipes: {fp32: fp32}\n")
    strict = Evaluation("cosine", max_drop=1e-7)  # int8 rounding alone misses it; fp32 keeps it
    with caplog.at_level("INFO", logger="edgekit"):
        result = compile_auto(cnn_source, target, tmp_path / "pkg", cnn_data, cnn_data, (parse_input_spec(CNN_INPUT),),
                              tmp_path / "cache", bench_runs=2, tolerance=strict)
    rows = {row["name"]: row for row in result.manifest.auto["candidates"]}
    assert list(rows) == ["fp32", "int8-static", "int8-static-percentile", "int8-static-entropy", "qat-int8"]
    assert "auto: no quantized candidate is within tolerance: trying quantization-aware training (qat-int8)" in caplog.text
    qat = rows["qat-int8"]
    assert qat["status"] == "ok" and qat["precision"] == "int8" and qat["verdict"] == "misses"
    assert qat["metric"]["name"] == "cosine" and 0 < qat["metric"]["drop"] < 0.01
    assert result.manifest.auto["chosen"] == "fp32"
    shutil.rmtree(tmp_path / "cache")


def test_qat_candidate_needs_a_torch_source_and_data():
    judged = [{"name": "fp32", "precision": "fp32", "verdict": "within"}, {"name": "int8", "precision": "int8", "verdict": "misses"},
              {"name": "int4", "precision": "int4", "verdict": "failed"}]
    assert not ptq_within(judged) and ptq_within([*judged, {"name": "q", "precision": "int8", "verdict": "within"}])
    ready = qat_candidate(Format.TORCH, "calib.npz")
    assert ready.name == "qat-int8" and [getattr(s, "pass_name", None) for s in ready.recipe.steps][0] == "qat"
    onnx = qat_candidate(Format.ONNX, "calib.npz")
    assert onnx.recipe is None and onnx.skipped == "the source is onnx: qat trains a PyTorch model"
    assert qat_candidate(Format.TORCH, None).skipped == "no --calib data to train on"
