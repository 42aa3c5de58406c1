"""`--recipe auto`: compile every candidate recipe the target supports, measure each, keep the fastest within tolerance."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekit.bench import noise
from edgekit.build import CompileResult, build_package, failure
from edgekit.errors import EdgekitError, FidelityError, UserError
from edgekit.intent import QuantizeIntent, lower_intent
from edgekit.manifest import Manifest
from edgekit.metrics import Evaluation, deciding, verdicts
from edgekit.model import Format
from edgekit.package import Staging, read_package
from edgekit.passes.base import get_pass
from edgekit.recipe import Recipe, load_recipe
from edgekit.scratch import owned_scratch
from edgekit.target import Target, load_target

log = logging.getLogger("edgekit")
QAT_RECIPE = "qat-int8"  # tried when no quantized candidate is within tolerance
MIN_SPEEDUP = 0.05  # a less precise candidate must be this much faster (and beyond its p50's interval) to win
FIDELITY_KEYS = ("samples", "cosine_mean", "cosine_min", "max_abs", "mse", "top1_agreement", "accuracy",
                 "reference_accuracy", "custom", "judged")


@dataclass(frozen=True)
class Candidate:
    """One recipe to try, or one that was not tried (`skipped` says why)."""

    name: str
    recipe: Recipe | None
    skipped: str = ""
    transformer_only: bool = False  # tried only when the fp32 graph is MatMul-heavy


def candidates(target: Target) -> list[Candidate]:
    """fp32, then for each precision the target offers: each of its `quantize:` entries (int8/static, int8/dynamic,
    int4/weight-only …) as an intent, with the variants its quantizer declares (calibration methods, the activation
    type the ISA does not favour, a transformer preset); a precision without entries by the target's recipe for it
    (fp16, bf16 where the ISA runs it natively). int4 and transformer variants are judged by `transformer_like` once
    the fp32 candidate shows the graph."""
    found: dict[str, Candidate] = {}
    isa = target.instruction_set

    def add(candidate: Candidate) -> None:
        found.setdefault(candidate.name, candidate)

    for precision in ("fp32", *[p for p in target.precisions if p != "fp32"]):
        entries = [key for key in target.quantize if key.startswith(f"{precision}/")]
        for key in entries:
            recipe = _intent_recipe(QuantizeIntent(precision, key.partition("/")[2]))  # type: ignore[arg-type]
            add(Candidate(recipe.name, recipe, transformer_only=precision == "int4"))
            *prepare, last = lower_intent(recipe.steps[0], target)[0]  # type: ignore[arg-type]
            for variant in get_pass(last.pass_name).variants(last.config, isa):
                name = f"{recipe.name}-{variant.suffix}"
                steps = (*prepare, replace(last, config=variant.config))
                add(Candidate(name, replace(recipe, name=name, steps=steps),
                              transformer_only=precision == "int4" or variant.transformer_only))
        name = target.recipes.get(precision, "fp32" if precision == "fp32" else None)
        if entries or name is None:
            continue
        recipe = load_recipe(name)
        if precision == "bf16" and not isa.bf16:
            add(Candidate(recipe.name, None, f"ISA {isa.name} has no native bf16"))
        else:
            add(Candidate(recipe.name, recipe))
    return list(found.values())


def ptq_within(rows: list[dict]) -> bool:
    """Whether a judged quantized candidate (int8, int4) is within tolerance."""
    return any(row["verdict"] == "within" and precision_rank(row["precision"]) >= 2 for row in rows)


def qat_candidate(source_format: Format, calib: str | Path | None) -> Candidate:
    """Recipe qat-int8 (quantization-aware training, then the target's int8/static), or why it cannot be tried: it
    trains a PyTorch source on the calibration data."""
    if source_format is not Format.TORCH:
        return Candidate(QAT_RECIPE, None, f"the source is {source_format.value}: qat trains a PyTorch model")
    if calib is None:
        return Candidate(QAT_RECIPE, None, "no --calib data to train on")
    return Candidate(QAT_RECIPE, load_recipe(QAT_RECIPE))


def _intent_recipe(intent: QuantizeIntent) -> Recipe:
    name = f"{intent.precision}-{intent.scheme}"
    return Recipe(name, (intent,), intent.precision, f"{intent.precision} {intent.scheme}, the target's way",
                  source="auto")


def transformer_like(package: Path) -> tuple[bool, str]:
    """Whether a compiled graph is MatMul-heavy (int4 weights pay off), with the counts; a .pte is not inspected
    (its ops sit inside XNNPACK's blob), so its int4 candidate is tried, and refused when it has no Linear to take."""
    main = read_package(package, verify=False).main_file
    if main.suffix == ".onnx":
        from edgekit.ingest.onnx import load_graph

        ops = [node.op_type for node in load_graph(main).graph.node]
    elif main.suffix == ".xml":
        from edgekit.runtime.openvino import core

        ops = [op.get_type_name() for op in core().read_model(str(main)).get_ordered_ops()]
    elif main.suffix == ".tflite":
        from edgekit.runtime.tflite import interpreter_class

        details = interpreter_class()(model_path=str(main))._get_ops_details()  # noqa: SLF001 - LiteRT's only op list
        ops = [op["op_name"] for op in details]
    else:
        return True, f"{main.suffix} graph not inspected"
    matmuls = sum(ops.count(kind) for kind in ("MatMul", "FULLY_CONNECTED", "BATCH_MATMUL"))
    convs = sum(ops.count(kind) for kind in ("Conv", "Gemm", "Convolution", "CONV_2D", "DEPTHWISE_CONV_2D"))
    return matmuls >= 2 and matmuls > convs, f"{matmuls} MatMul vs {convs} Conv/Gemm"


def tolerance_for(given: Evaluation | None) -> tuple[Evaluation, bool]:
    """The tolerance to select with, and whether its limits are the metrics' defaults (no max_drop given)."""
    given = given or Evaluation()
    return given, given.max_drop is None


def precision_rank(precision: str) -> int:
    """0 for the most precise: fp32, then 16-bit floats, int8, int4 — fewer bits, higher rank."""
    bits = re.search(r"\d+", precision)
    return {32: 0, 16: 1, 8: 2, 4: 3}.get(int(bits.group()) if bits else 32, 4)


def faster_beyond_noise(fast: dict, slow: dict, min_speedup: float) -> bool:
    """`fast`'s p50 is at least `min_speedup` below `slow`'s and their p50 confidence intervals do not overlap."""
    return noise.faster_beyond_noise(_median(fast), _median(slow), min_speedup)


def _median(row: dict) -> noise.Median:
    p50 = row["p50_ms"]
    return noise.Median(p50, p50 if row.get("p50_low") is None else row["p50_low"],
                        p50 if row.get("p50_high") is None else row["p50_high"])


def _interval(row: dict) -> str:
    low, high = row.get("p50_low"), row.get("p50_high")
    return f"{row['p50_ms']:.3g} ms" + (f" [{low:.3g}, {high:.3g}]" if low is not None and high is not None else "")


def choose(records: list[dict], tolerance: Evaluation, default_limits: bool = True,
           min_speedup: float = MIN_SPEEDUP) -> tuple[dict | None, list[dict]]:
    """Judge each measured record against `tolerance`; a less precise candidate is chosen only when it is faster than
    every more precise one within tolerance beyond the noise; among those, the fastest (p50, then size) wins.

    More precise: fewer bits dropped (fp32, fp16/bf16, int8, int4), then nearer its limits' origin. Records carry
    `name`, `status` ('ok', 'failed', 'skipped'), and for 'ok' `fidelity`, `precision`, `p50_ms` (with `p50_low`,
    `p50_high`: its confidence interval) and `size_bytes`. Returns the winner (None when nothing is within) and the
    records with `verdict`, `metric` (the deciding output's figures), `judged` and `why`.
    """
    judged = []
    for record in records:
        row = dict(record)
        if row["status"] == "ok":
            found = verdicts(row["fidelity"], tolerance, default_limits)
            check = deciding(found)
            row["verdict"] = "within" if check.ok else "misses"
            row["metric"] = _figures(check)
            row["judged"] = [_figures(v) for v in found]
            row["why"] = "" if check.ok else failure(check)
            row["strain"] = check.strain if check.ok else None
        else:
            row["verdict"] = row["status"]
            row["why"] = row.get("reason", "")
        judged.append(row)
    within = sorted((row for row in judged if row["verdict"] == "within"),
                    key=lambda row: (precision_rank(row["precision"]), row["strain"], row["p50_ms"]))
    qualified = []
    for index, row in enumerate(within):
        blocker = next((m for m in within[:index] if not faster_beyond_noise(row, m, min_speedup)), None)
        if blocker is None:
            qualified.append(row)
        else:
            row["why"] = (f"not faster beyond noise (and by {min_speedup:.0%}) than the more precise {blocker['name']}: "
                          f"{_interval(row)} vs {_interval(blocker)}")
    best = min(qualified, key=lambda row: (row["p50_ms"], row["size_bytes"]), default=None)
    for row in qualified:
        row["why"] = ("fastest of those faster beyond noise than every more precise candidate" if row is best
                      else f"slower than {best['name']}: {_interval(row)} vs {_interval(best)}")
    for row in judged:
        row["chosen"] = row is best
    return best, judged


def _figures(check) -> dict:
    return {"name": check.metric, "output": check.output, "reason": check.reason, "value": check.value,
            "reference": check.reference, "drop": check.drop, "limit": check.limit, "worst": check.worst,
            "worst_drop": check.worst_drop, "worst_limit": check.worst_limit, "worst_sample": check.worst_sample,
            "changed": check.changed, "samples": check.samples, "ok": check.ok}


def compile_auto(source: str | Path, target: str | Path, output: str | Path, calib: str | Path | None = None,
                 eval: str | Path | None = None, inputs: tuple = (), cache_dir: Path | None = None,
                 bench_runs: int = 50, threads: int | None = None, progress: Any = None,
                 instruments: tuple = (), tolerance: Evaluation | None = None, keep_candidates: Path | None = None,
                 trust_remote_code: bool = False, min_speedup: float = MIN_SPEEDUP, adapters: tuple = ()):
    """Compile each candidate into a scratch folder, measure, choose, and write the winner to `output`.

    `keep_candidates`: a folder to keep every candidate's package in (`<folder>/<candidate>`), else they are removed.

    The winner's manifest gains `auto`: the tolerance, whether it was the default, and every candidate row.
    """
    chosen_target = load_target(target)
    unavailable = chosen_target.availability()
    if unavailable:
        raise UserError(f"--recipe auto measures on this machine, but target {chosen_target.name} cannot run here: {unavailable}")
    scratch = owned_scratch(tempfile.gettempdir(), "edgekit-auto-")
    cache = cache_dir or scratch / "cache"  # shared steps (export, optimize) are computed once
    results: dict[str, Any] = {}
    records: list[dict] = []

    def attempt(candidate: Candidate) -> None:
        """Compile and measure one candidate into `results` and `records`, or record why it was not."""
        recipe = candidate.recipe
        if recipe is None:
            records.append(_record(candidate, "skipped", candidate.skipped))
            return
        if candidate.transformer_only and records:
            fp32 = next((results[r["name"]] for r in records if r["status"] == "ok" and r["precision"] == "fp32"), None)
            suited, why = transformer_like(fp32.package) if fp32 else (False, "no fp32 candidate to inspect")
            if not suited:
                records.append(_record(candidate, "skipped", f"not transformer-like: {why}"))
                return
        # candidates are judged by choose(), so none may fail compile on its own recipe's limit
        measured = replace(recipe, evaluation=replace(tolerance or Evaluation(), max_drop=None, worst=None,
                                                      data=recipe.evaluation.data))
        log.info("auto: compiling candidate %s", candidate.name)
        try:
            result = build_package(source, chosen_target.source, (keep_candidates or scratch) / candidate.name, measured,
                                   calib, eval, inputs,
                                   cache, bench_runs, threads, progress, instruments,
                                   trust_remote_code=trust_remote_code, adapters=adapters)
        except EdgekitError as error:
            records.append(_record(candidate, "failed", str(error)))
            return
        except Exception as error:  # a backend crash on one candidate must not lose the others
            log.warning("auto: candidate %s crashed", candidate.name, exc_info=True)
            records.append(_record(candidate, "failed", f"{type(error).__name__}: {error}"))
            return
        results[candidate.name] = result
        records.append(_measured(candidate, result.manifest))

    try:
        for candidate in candidates(chosen_target):
            attempt(candidate)
        if not any(r["status"] == "ok" for r in records):
            raise UnsupportedCandidates(records)
        limit, default = tolerance_for(tolerance)
        best, rows = choose(records, limit, default, min_speedup)
        if "int8/static" in chosen_target.quantize and not ptq_within(rows):
            source_format = next(iter(results.values())).plan.source_format
            candidate = qat_candidate(source_format, calib)
            if candidate.recipe is not None:
                log.info("auto: no quantized candidate is within tolerance: trying quantization-aware training (%s)",
                         candidate.name)
            attempt(candidate)
            best, rows = choose(records, limit, default, min_speedup)
        if best is None:
            raise FidelityError("--recipe auto: no candidate is within tolerance: "
                                + "; ".join(f"{r['name']}: {r['why']}" for r in rows))
        winner = results[best["name"]]
        measured = winner.manifest.metrics
        judged = verdicts(measured.fidelity, limit, default)
        bounds = {"metric": limit.metric, "max_drop": limit.max_drop, "worst": limit.worst, "relative": limit.relative}
        manifest = replace(
            winner.manifest,
            recipe={**winner.manifest.recipe, "evaluate": {**winner.manifest.recipe.get("evaluate", {}), **bounds}},
            metrics=replace(measured, verdict=deciding(judged).record(), judged=tuple(v.record() for v in judged),
                            bench=replace(measured.bench, package=str(output))),
            auto={"chosen": best["name"], "tolerance": {**bounds, "default": default, "min_speedup": min_speedup},
                  "rule": (f"the most precise candidate within tolerance, unless a less precise one is faster than "
                           f"every more precise one by at least {min_speedup:.0%} with non-overlapping 95% p50 "
                           "intervals; the fastest such wins"),
                  "candidates": rows},
        )
        path = _write(winner.package, Path(output), manifest)
        log.info("auto: chose %s", best["name"])
        return CompileResult(path, winner.plan, winner.records, manifest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class UnsupportedCandidates(UserError):
    """No candidate compiled: the message lists each with its reason."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records
        super().__init__("--recipe auto: no candidate compiled: " + "; ".join(f"{r['name']}: {r['reason']}" for r in records))


def _record(candidate: Candidate, status: str, reason: str) -> dict:
    precision = candidate.recipe.precision if candidate.recipe else ""
    return {"name": candidate.name, "precision": precision, "status": status, "reason": reason.splitlines()[0] if reason else ""}


def _measured(candidate: Candidate, manifest: Manifest) -> dict:
    metrics = manifest.metrics
    assert metrics is not None, "auto measures only targets that run here"
    bench = metrics.bench
    return {
        **_record(candidate, "ok", ""), "precision": manifest.precision,
        "p50_ms": bench.latency_ms.p50, "p50_low": bench.latency_ms.p50_low, "p50_high": bench.latency_ms.p50_high,
        "mean_ms": bench.latency_ms.mean, "size_bytes": manifest.file_bytes,
        "fidelity": {k: v for k, v in metrics.fidelity.items() if k in FIDELITY_KEYS},
        "conditions": {k: bench.conditions.get(k) for k in ("threads", "batch", "runs", "warmup", "cpu", "isa", "cpu_flags")},
        "fallback": manifest.fallback,
    }


def _write(package: Path, output: Path, manifest: Manifest) -> Path:
    """Copy the winning package to `output` (folder or .zip) with its new manifest, atomically."""
    with Staging(output) as staging:
        for entry in manifest.entries:
            target = staging.root / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(package / entry.path, target)
        staging.write_manifest(manifest)
        return staging.commit()
