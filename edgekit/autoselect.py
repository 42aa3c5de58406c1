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
from edgekit.evaluate import resolve_metric, verdict
from edgekit.metrics import Evaluation
from edgekit.model import Format
from edgekit.package import Staging, read_package
from edgekit.passes.quantize_ort import isa_choice
from edgekit.recipe import Recipe, load_recipe
from edgekit.target import Target, load_target

log = logging.getLogger("edgekit")
# the tolerance when the user gives none: top-1 may drop by one point, cosine must stay ≥ 0.99
DEFAULT_MAX_DROP = {"top1": 0.01, "cosine": 0.01}
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
FIDELITY_KEYS = ("samples", "cosine_mean", "cosine_min", "max_abs", "mse", "top1_agreement", "accuracy",
                 "reference_accuracy", "custom")


@dataclass(frozen=True)
class Candidate:
    """One recipe to try, or one that was not tried (`skipped` says why)."""

    name: str
    recipe: Recipe | None
    skipped: str = ""


def candidates(target: Target, source_format: Format | None = None) -> list[Candidate]:
    """The target's recipes (its `recipes:` mapping) plus variants: dynamic int8, each static calibration method,
    the activation type the ISA does not favour, the target's transformer preset, and bf16 where the ISA runs it.

    int4 weight-only and transformer presets are kept here and judged by `transformer_like` once
    the fp32 candidate shows the graph.
    """
    found: dict[str, Candidate] = {}
    expanded: set[str] = set()  # recipes tried as their calibration variants
    isa = target.instruction_set

    def add(name: str, recipe: Recipe | None, skipped: str = "") -> None:
        found.setdefault(name, Candidate(name, recipe, skipped))

    for precision in ("fp32", *[p for p in target.precisions if p != "fp32"]):
        name = target.recipes.get(precision, precision if precision == "fp32" else None)
        if name is None:
            continue
        recipe = load_recipe(name)
        if precision == "bf16" and not isa.bf16:
            add(recipe.name, None, f"ISA {isa.name} has no native bf16")
            continue
        static = next((i for i, step in enumerate(recipe.steps) if step.pass_name == "quantize-static"), None)
        if static is not None:
            expanded.add(recipe.name)
            for method in CALIBRATION_METHODS:
                add(f"{recipe.name}-{method}", _with_static(recipe, static, f"{recipe.name}-{method}", calibrate_method=method))
            other = "int8" if isa_choice(isa)["activation_type"] == "uint8" else "uint8"
            variant = f"{recipe.name}-minmax-{'s8' if other == 'int8' else 'u8'}"
            add(variant, _with_static(recipe, static, variant, calibrate_method="minmax", activation_type=other))
        else:
            add(recipe.name, recipe)
        if precision == "int8" and target.format.value == "onnx":
            add("int8-dynamic", load_recipe("int8-dynamic"))
        if precision == "int8" and target.runtime == "openvino":
            add("int8-nncf-transformer", load_recipe("int8-nncf-transformer"))
        tflite_step = next((i for i, step in enumerate(recipe.steps) if step.pass_name == "quantize-tflite"), None)
        # LiteRT's quantizer on a .tflite source: integer kernels may not pay there, so weight-only and dynamic too
        if tflite_step is not None and recipe.steps[tflite_step].config.mode == "int8":
            for scheme in TFLITE_SCHEMES:
                name = f"{recipe.name}-{scheme}"
                if source_format is Format.TFLITE:
                    steps = list(recipe.steps)
                    steps[tflite_step] = replace(steps[tflite_step], config=replace(steps[tflite_step].config, scheme=scheme))
                    add(name, replace(recipe, name=name, steps=tuple(steps)))
                else:
                    add(name, None, f"scheme {scheme} quantizes .tflite sources only")
    for name in target.recipes.values():
        recipe = load_recipe(name)
        if recipe.name not in expanded:
            add(recipe.name, recipe)
    return list(found.values())


def _with_static(recipe: Recipe, index: int, name: str, **changes: Any) -> Recipe:
    """`recipe` renamed, its quantize-static step (at `index`) with `changes` to its config."""
    steps = list(recipe.steps)
    steps[index] = replace(steps[index], config=replace(steps[index].config, **changes))
    return replace(recipe, name=name, steps=tuple(steps))


TFLITE_SCHEMES = ("weight-only", "dynamic")
TRANSFORMER_ONLY = ("int4", "int8-nncf-transformer")  # candidates tried only on MatMul-heavy graphs


def transformer_like(package: Path) -> tuple[bool, str]:
    """Whether a compiled ONNX or OpenVINO graph is MatMul-heavy (weight-only int4 pays off), with the counts."""
    main = read_package(package, verify=False).main_file
    if main.suffix == ".onnx":
        from edgekit.ingest.onnx import load_graph

        ops = [node.op_type for node in load_graph(main).graph.node]
    elif main.suffix == ".xml":
        from edgekit.runtime.openvino import core

        ops = [op.get_type_name() for op in core().read_model(str(main)).get_ordered_ops()]
    else:
        return False, f"not an ONNX or OpenVINO graph ({main.suffix})"
    matmuls, convs = ops.count("MatMul"), ops.count("Conv") + ops.count("Gemm") + ops.count("Convolution")
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
                 instruments: tuple = (), tolerance: Evaluation | None = None, keep_candidates: Path | None = None):
    """Compile each candidate into a scratch folder, measure, choose, and write the winner to `output`.

    `keep_candidates`: a folder to keep every candidate's package in (`<folder>/<candidate>`), else they are removed.

    The winner's manifest gains `auto`: the tolerance, whether it was the default, and every candidate row.
    """
    chosen_target = load_target(target)
    unavailable = chosen_target.availability()
    if unavailable:
        raise UserError(f"--recipe auto measures on this machine, but target {chosen_target.name} cannot run here: {unavailable}")
    scratch = Path(tempfile.mkdtemp(prefix="edgekit-auto-"))
    cache = cache_dir or scratch / "cache"  # shared steps (export, optimize) are computed once
    results: dict[str, Any] = {}
    records: list[dict] = []
    try:
        from edgekit.ingest import ingest

        for candidate in candidates(chosen_target, ingest(source, inputs).format):
            recipe = candidate.recipe
            if recipe is None:
                records.append(_record(candidate, "skipped", candidate.skipped))
                continue
            if (recipe.precision in TRANSFORMER_ONLY or recipe.name in TRANSFORMER_ONLY) and records:
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
                                     cache, bench_runs, threads, progress, instruments)
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
        manifest = winner.manifest
        manifest["recipe"]["evaluate"] = {"metric": limit.metric, "max_drop": limit.max_drop, "relative": limit.relative}
        manifest["metrics"]["verdict"] = verdict(manifest["metrics"]["fidelity"], limit).to_dict()
        manifest["metrics"]["bench"]["package"] = str(output)
        manifest["auto"] = {
            "chosen": best["name"], "tolerance": {"metric": limit.metric, "max_drop": limit.max_drop,
                                                  "relative": limit.relative, "default": default},
            "rule": "fastest p50 latency (then smallest) among candidates within tolerance",
            "candidates": rows,
        }
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


def _measured(candidate: Candidate, manifest: dict) -> dict:
    metrics = manifest.get("metrics") or {}
    bench = metrics["bench"]
    return {
        **_record(candidate, "ok", ""), "precision": manifest["precision"],
        "p50_ms": bench["latency_ms"]["p50"], "mean_ms": bench["latency_ms"]["mean"],
        "size_bytes": sum(entry["bytes"] for entry in manifest["files"]),
        "fidelity": {k: v for k, v in metrics["fidelity"].items() if k in FIDELITY_KEYS},
        "conditions": {k: bench["conditions"][k] for k in ("threads", "batch", "runs", "warmup", "cpu")},
        "fallback": manifest.get("fallback"),
    }


def _write(package: Path, output: Path, manifest: dict) -> Path:
    """Copy the winning package to `output` (folder or .zip) with its new manifest, atomically."""
    with Staging(output) as staging:
        for entry in manifest["files"]:
            target = staging.root / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(package / entry["path"], target)
        staging.write_manifest(manifest)
        return staging.commit()
