"""Build one package: ingest, plan, run the passes with their checks, evaluate, measure, compare layer by layer,
write the manifest."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from edgekit import __version__
from edgekit.catalog import builtin_names
from edgekit.data import Dataset, load_data, synthetic_data
from edgekit.data.report import data_report
from edgekit.data.specfile import is_described
from edgekit.distributed import is_writer
from edgekit.errors import FidelityError, UnsupportedOnTarget, UserError
from edgekit.evaluate import FIDELITY_FEEDS, FidelityCheck, collect, runner_for
from edgekit.golden import GOLDEN_SAMPLES, write_golden
from edgekit.ingest import ingest
from edgekit.instruments import Instrument, StepRecord, library_versions
from edgekit.isa import host_cpu
from edgekit.layers.at_build import layers_at_build
from edgekit.layers.reference import BeforeLossy
from edgekit.manifest import SCHEMA_VERSION, CpuRecord, FileEntry, Golden, Manifest, Metrics, TargetRecord
from edgekit.metrics import Evaluation, compare, deciding, verdicts
from edgekit.model import Model
from edgekit.package import Staging, file_entries
from edgekit.passes.base import Context, Progress, SilentProgress, get_pass
from edgekit.pipeline import Plan, run, trained_together
from edgekit.pipeline import plan as make_plan
from edgekit.recipe import Recipe, load_recipe
from edgekit.schema import build
from edgekit.scratch import owned_scratch
from edgekit.spec import TensorSpec
from edgekit.target import Target, load_target

log = logging.getLogger("edgekit")
PRECISION_NAME = re.compile(r"(fp|int|bf)\d+")  # `--recipe int8` means the target's recipe for that precision
SYNTHETIC_SAMPLES = 32


@dataclass
class CompileResult:
    package: Path
    plan: Plan
    records: list[StepRecord]
    manifest: Manifest


def with_tolerance(recipe: Recipe, tolerance: Evaluation | None) -> Recipe:
    """`recipe` judged by `tolerance`'s metric, options and allowed drops instead of its own (its evaluation data
    kept, and its own limits where `tolerance` gives none)."""
    if tolerance is None:
        return recipe
    own = recipe.evaluation
    return replace(recipe, evaluation=replace(tolerance, data=own.data,
                                              max_drop=own.max_drop if tolerance.max_drop is None else tolerance.max_drop,
                                              worst=own.worst if tolerance.worst is None else tolerance.worst))


def _like_calibration(specs: tuple[TensorSpec, ...], calibration: Dataset | None) -> tuple[TensorSpec, ...]:
    """Token inputs with their sequence length fixed to the calibration data's: text is padded to its own longest
    sample, and a target with static shapes takes them from the calibration data, so the evaluation text must
    come out just as long."""
    if calibration is None:
        return specs
    fixed = []
    for spec in specs:
        length = calibration.arrays[spec.name].shape[-1] if spec.name in calibration.arrays else None
        if len(spec.shape) == 2 and not isinstance(spec.shape[1], int) and length is not None:
            spec = replace(spec, shape=(spec.shape[0], int(length)))
        fixed.append(spec)
    return tuple(fixed)


def recipe_for(target: Target, recipe: str | Path | Recipe | None) -> Recipe:
    """The recipe a name means on this target: a precision (`int8`) picks the target's own recipe for it."""
    if isinstance(recipe, Recipe):
        return recipe
    name = str(recipe or target.default_recipe)
    if name not in target.recipes and PRECISION_NAME.fullmatch(name) and name not in builtin_names("recipes"):
        offered = ", ".join(f"{precision} ({chosen})" for precision, chosen in target.recipes.items())
        raise UnsupportedOnTarget(f"target {target.name} has no {name} recipe; it offers {offered}")
    return load_recipe(target.recipes.get(name, name))


def build_package(source: str | Path, target: str | Path, output: str | Path, recipe: str | Path | Recipe | None = None,
                  calib: str | Path | None = None, eval: str | Path | None = None,
                  inputs: tuple[TensorSpec, ...] = (), cache_dir: Path | None = None, bench_runs: int = 50,
                  threads: int | None = None, progress: Progress | None = None,
                  instruments: tuple[Instrument, ...] = (), tolerance: Evaluation | None = None,
                  trust_remote_code: bool = False, adapters: tuple[str | Path, ...] = ()) -> CompileResult | None:
    """Compile `source` for `target` with one recipe into the package folder (or .zip) `output`.

    `tolerance` (metric, max_drop, relative) replaces the recipe's own. Nothing is left at `output`
    unless every step, the evaluation and the tolerance check pass. Under torchrun, ranks besides 0
    run the steps through the last one that trains across processes, silently, and return None:
    rank 0 alone writes the package (and the cache, checkpoints, instruments' output).
    """
    chosen_recipe = with_tolerance(recipe_for(load_target(target), recipe), tolerance)
    chosen_target = load_target(target).with_runtime(chosen_recipe.runtime)
    unavailable = chosen_target.availability()
    if unavailable:
        log.warning("target %s cannot run on this machine (%s): the package is built but not measured",
                    chosen_target.name, unavailable)
    model = ingest(source, inputs, trust_remote_code, adapters)
    judged_output = chosen_recipe.evaluation.output
    if judged_output and judged_output not in (names := [spec.name for spec in model.outputs]):
        raise UserError(f"evaluate: output '{judged_output}' is not one of the model's outputs: {', '.join(names)}")
    the_plan = make_plan(model, chosen_recipe, chosen_target)
    calibration = load_data(calib, model.inputs, model.meta.get("tokenizer")) if calib else None
    eval = eval or chosen_recipe.evaluation.data
    evaluation = load_data(eval, _like_calibration(model.inputs, calibration) if is_described(str(eval)) else model.inputs,
                           model.meta.get("tokenizer")) if eval else calibration
    needs_calibration = any(get_pass(s.step.pass_name).uses_calibration for s in the_plan.steps)
    if calibration is None and needs_calibration:
        calibration = synthetic_data(model.inputs, SYNTHETIC_SAMPLES)
    if evaluation is None:
        evaluation = calibration or synthetic_data(model.inputs, SYNTHETIC_SAMPLES, seed=1)
    data_checks = data_report(calibration, evaluation)
    work_dir = owned_scratch(tempfile.gettempdir(), "edgekit-work-")
    try:
        if not is_writer():
            run(trained_together(the_plan), model, Context(work_dir, chosen_target, calibration, evaluation, log,
                                                           SilentProgress(), source=model), cache_dir)
            return None
        with Staging(output) as staging:
            ctx = Context(work_dir, chosen_target, calibration, evaluation, log, progress or SilentProgress(), source=model)
            # judged with the target's runtime options where it runs here; else on this CPU with exact defaults
            judge = chosen_target if unavailable is None else None
            kept = BeforeLossy(model)  # the float model before the first lossy step, for the layers section
            checks = (FidelityCheck(list(evaluation.feeds(FIDELITY_FEEDS)), judge), kept, *instruments)
            final, records = run(the_plan, model, ctx, cache_dir, checks)
            files = _place_files(final, staging.root)
            manifest = _manifest(model, final, the_plan, records, calibration, evaluation, data_checks, files)
            staging.write_manifest(manifest)
            if unavailable is None:
                manifest = replace(manifest, golden=_record_golden(staging.root, evaluation, threads))
                staging.write_manifest(manifest)
                manifest = replace(manifest, metrics=_measure(model, staging.root, output, evaluation, chosen_recipe,
                                                              bench_runs, threads))
                staging.write_manifest(manifest)
                check = manifest.metrics.verdict
                if not check.ok:
                    raise FidelityError(f"{failure(check)}: no package written")
                layers, skipped = layers_at_build(kept, staging.root, evaluation, work_dir)
                if layers or skipped:
                    manifest = replace(manifest, layers=layers, layers_skipped=skipped)
                    staging.write_manifest(manifest)
            path = staging.commit()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return CompileResult(path, the_plan, records, manifest)


def _place_files(model: Model, root: Path) -> tuple[FileEntry, ...]:
    placed = []
    for path in model.files:
        shutil.copy2(path, root / path.name)
        placed.append(root / path.name)
    return file_entries(root, placed)


def _record_golden(root: Path, evaluation: Dataset, threads: int | None) -> Golden:
    """The package's self-test: its outputs here on the first evaluation samples, stored in the package."""
    from edgekit.runtime import load

    session = load(root, threads=threads)
    feeds = list(evaluation.feeds(GOLDEN_SAMPLES))
    outputs = collect(lambda feed: list(session.run(feed).values()), feeds)
    return write_golden(root, feeds, outputs, session.inputs, session.execution_precision)


def _measure(source: Model, root: Path, output: str | Path, evaluation: Dataset, recipe: Recipe, bench_runs: int,
             threads: int | None) -> Metrics:
    from edgekit.bench.harness import measure
    from edgekit.runtime import load

    feeds = list(evaluation.feeds())
    session = load(root, threads=threads)
    reference = collect(runner_for(source, threads), feeds)
    candidate = collect(lambda feed: list(session.run(feed).values()), feeds)
    names = tuple(spec.name for spec in source.outputs)  # the source's names: what the user sees and names
    fidelity = compare(reference, candidate, evaluation.labels, recipe.evaluation, names)
    fidelity["data"] = evaluation.origin
    fidelity["executed_precision"] = session.execution_precision
    bench = measure(root, threads=threads, runs=bench_runs, warmup=max(bench_runs // 10, 1))
    judged = verdicts(fidelity, recipe.evaluation)
    return Metrics(fidelity, deciding(judged).record(), replace(bench, package=str(output)),
                   tuple(v.record() for v in judged))


def failure(check) -> str:
    """Why a verdict failed, in one line: the mean's drop or the worst sample's, against its limit."""
    where = f" on {check.output}" if check.output else ""
    if check.limit is not None and check.drop > check.limit:
        return (f"{check.metric}{where} dropped by {check.drop:.4f} (from {check.reference:.4g} to {check.value:.4f}), "
                f"over max_drop {check.limit}")
    return (f"{check.metric}{where}: sample {check.worst_sample} dropped by {check.worst_drop:.4f} "
            f"(to {check.worst:.4f}), over the worst-sample limit {check.worst_limit}")


def _manifest(source: Model, final: Model, the_plan: Plan, records: list[StepRecord], calibration: Dataset | None,
              evaluation: Dataset, data_checks: dict, files: tuple[FileEntry, ...]) -> Manifest:
    target = the_plan.target
    return Manifest(
        schema=SCHEMA_VERSION,
        edgekit=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        target=build(TargetRecord, target.to_dict(), "target record"),
        cpu=build(CpuRecord, host_cpu().to_dict(), "cpu record"),  # the machine the figures were measured on
        runtime=target.runtime,
        format=final.format.value,
        precision=final.meta.get("precision", the_plan.recipe.precision),
        files=files,
        inputs=final.inputs,
        outputs=final.outputs,
        recipe={**the_plan.recipe.to_dict(), "applied": final.meta.get("passes", [])},
        reports=tuple(final.meta.get("reports", [])),
        fallback=final.meta.get("fallback"),
        precision_plan=final.meta.get("precision_plan"),
        isa_choice=final.meta.get("isa_choice"),
        float_ops=final.meta.get("float_ops"),
        steps=tuple({"pass": r.pass_name, "origin": r.origin, "seconds": round(r.seconds, 3), "cached": r.cached,
                     **({"fidelity": r.details["fidelity"]} if "fidelity" in r.details else {})} for r in records),
        provenance={
            "source": source.meta.get("source"), "source_hash": source.meta.get("source_hash"),
            **({"adapters": source.meta["adapters"]} if source.meta.get("adapters") else {}),  # PEFT, merged in order
            "source_format": source.format.value, "exporter": final.meta.get("exporter"),
            "export_fallback_reason": final.meta.get("export_fallback_reason"),
            "delegate": final.meta.get("delegate"),  # ExecuTorch: xnnpack, or why the program runs on portable kernels
            "versions": library_versions(),
        },
        data={
            "calibration": calibration.statistics() if calibration else None,
            "calibration_origin": calibration.origin if calibration else None,
            "evaluation": evaluation.statistics(),
            "evaluation_origin": evaluation.origin,
            "report": data_checks,
        },
    )

