"""`--recipe auto`: compile every candidate recipe the target supports, measure each, keep the fastest within tolerance."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekit.build import CompileResult, build_package
from edgekit.errors import EdgekitError, FidelityError, UserError
from edgekit.intent import QuantizeIntent, lower_intent
from edgekit.manifest import Manifest
from edgekit.metrics import Evaluation, resolve_metric, verdict
from edgekit.package import Staging, read_package
from edgekit.passes.base import get_pass
from edgekit.recipe import Recipe, load_recipe
from edgekit.scratch import owned_scratch
from edgekit.target import Target, load_target

log = logging.getLogger("edgekit")
# the tolerance when the user gives none: top-1 may drop by one point, cosine must stay ≥ 0.99
DEFAULT_MAX_DROP = {"top1": 0.01, "cosine": 0.01}
FIDELITY_KEYS = ("samples", "cosine_mean", "cosine_min", "max_abs", "mse", "top1_agreement", "accuracy",
                 "reference_accuracy", "custom")


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


def tolerance_for(given: Evaluation | None, fidelity: dict) -> tuple[Evaluation, bool]:
    """The tolerance to select with, and whether it is the default (metric auto resolved on `fidelity`)."""
    given = given or Evaluation()
    metric = resolve_metric(fidelity, given.metric)
    if given.max_drop is not None:
        return replace(given, metric=metric), False
    if metric not in DEFAULT_MAX_DROP:
        raise UserError(f"--recipe auto with metric {metric} needs a tolerance: give --max-drop")
    return replace(given, metric=metric, max_drop=DEFAULT_MAX_DROP[metric]), True


def choose(records: list[dict], tolerance: Evaluation) -> tuple[dict | None, list[dict]]:
    """Judge each measured record against `tolerance`; the fastest (p50, then size) within it wins.

    Records carry `name`, `status` ('ok', 'failed', 'skipped'), and for 'ok' `fidelity`, `p50_ms`,
    `size_bytes`. Returns the winner (None when nothing is within) and the records with `verdict`.
    """
    judged = []
    for record in records:
        row = dict(record)
        if row["status"] == "ok":
            check = verdict(row["fidelity"], tolerance)
            row["verdict"] = "within" if check.ok else "misses"
            row["metric"] = {"name": check.metric, "value": check.value, "reference": check.reference,
                             "drop": check.drop, "limit": check.limit}
        else:
            row["verdict"] = row["status"]
        judged.append(row)
    within = [row for row in judged if row["verdict"] == "within"]
    best = min(within, key=lambda row: (row["p50_ms"], row["size_bytes"]), default=None)
    for row in judged:
        row["chosen"] = row is best
    return best, judged


def compile_auto(source: str | Path, target: str | Path, output: str | Path, calib: str | Path | None = None,
                 eval: str | Path | None = None, inputs: tuple = (), cache_dir: Path | None = None,
                 bench_runs: int = 50, threads: int | None = None, progress: Any = None,
                 instruments: tuple = (), tolerance: Evaluation | None = None, keep_candidates: Path | None = None,
                 trust_remote_code: bool = False):
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
    try:
        for candidate in candidates(chosen_target):
            recipe = candidate.recipe
            if recipe is None:
                records.append(_record(candidate, "skipped", candidate.skipped))
                continue
            if candidate.transformer_only and records:
                fp32 = next((results[r["name"]] for r in records if r["status"] == "ok" and r["precision"] == "fp32"), None)
                suited, why = transformer_like(fp32.package) if fp32 else (False, "no fp32 candidate to inspect")
                if not suited:
                    records.append(_record(candidate, "skipped", f"not transformer-like: {why}"))
                    continue
            # candidates are judged by choose(), so none may fail compile on its own recipe's limit
            measured = replace(recipe, evaluation=replace(recipe.evaluation, max_drop=None,
                                                          metric=(tolerance or Evaluation()).metric))
            log.info("auto: compiling candidate %s", candidate.name)
            try:
                result = build_package(source, chosen_target.source, (keep_candidates or scratch) / candidate.name, measured,
                                     calib, eval, inputs,
                                     cache, bench_runs, threads, progress, instruments,
                                     trust_remote_code=trust_remote_code)
            except EdgekitError as error:
                records.append(_record(candidate, "failed", str(error)))
                continue
            except Exception as error:  # a backend crash on one candidate must not lose the others
                log.warning("auto: candidate %s crashed", candidate.name, exc_info=True)
                records.append(_record(candidate, "failed", f"{type(error).__name__}: {error}"))
                continue
            results[candidate.name] = result
            records.append(_measured(candidate, result.manifest))
        first = next((r for r in records if r["status"] == "ok"), None)
        if first is None:
            raise UnsupportedCandidates(records)
        limit, default = tolerance_for(tolerance, first["fidelity"])
        best, rows = choose(records, limit)
        if best is None:
            raise FidelityError(f"--recipe auto: no candidate is within {limit.metric} max_drop {limit.max_drop}: "
                                + "; ".join(f"{r['name']} {r['verdict']}" for r in rows))
        winner = results[best["name"]]
        measured = winner.manifest.metrics
        manifest = replace(
            winner.manifest,
            recipe={**winner.manifest.recipe,
                    "evaluate": {"metric": limit.metric, "max_drop": limit.max_drop, "relative": limit.relative}},
            metrics=replace(measured, verdict=verdict(measured.fidelity, limit).record(),
                            bench=replace(measured.bench, package=str(output))),
            auto={"chosen": best["name"], "tolerance": {"metric": limit.metric, "max_drop": limit.max_drop,
                                                        "relative": limit.relative, "default": default},
                  "rule": "fastest p50 latency (then smallest) among candidates within tolerance",
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
        "p50_ms": bench.latency_ms.p50, "mean_ms": bench.latency_ms.mean, "size_bytes": manifest.file_bytes,
        "fidelity": {k: v for k, v in metrics.fidelity.items() if k in FIDELITY_KEYS},
        "conditions": {k: bench.conditions[k] for k in ("threads", "batch", "runs", "warmup", "cpu")},
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
