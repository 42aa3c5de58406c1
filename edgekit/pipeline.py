"""Plan a recipe for a model and target (type-check, insert conversions), then run it with caching."""

from __future__ import annotations

import tempfile
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekit.distributed import is_writer
from edgekit.errors import EdgekitError, PassFailed, UnsupportedOnTarget
from edgekit.instruments import Instrument, Origin, Provenance, StepCache, StepRecord, Timer
from edgekit.intent import QuantizeIntent, lower_intent
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, Step, conversions, get_pass
from edgekit.recipe import Recipe
from edgekit.schema import to_dict
from edgekit.spec import TensorSpec
from edgekit.target import Target


@dataclass(frozen=True, slots=True)
class PlannedStep:
    step: Step
    origin: Origin
    accepts: Format
    produces: Format
    reason: str = ""

    def describe(self) -> dict:
        return {"pass": self.step.pass_name, "origin": self.origin, "from": self.accepts.value,
                "to": self.produces.value, "config": to_dict(self.step.config), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Plan:
    source_format: Format
    target: Target
    recipe: Recipe
    steps: tuple[PlannedStep, ...]

    def describe(self) -> list[dict]:
        return [step.describe() for step in self.steps]


def plan(model: Model, recipe: Recipe, target: Target) -> Plan:
    """Check every step's formats, insert conversions, and enforce the target's constraints."""
    if recipe.precision not in target.precisions:
        raise UnsupportedOnTarget(
            f"target {target.name} does not support precision {recipe.precision} "
            f"(recipe {recipe.name}); it supports {', '.join(target.precisions)}"
        )
    if recipe.precision == "bf16" and not target.instruction_set.bf16:
        raise UnsupportedOnTarget(
            f"recipe {recipe.name} computes in bf16, which target {target.name}'s ISA {target.instruction_set.name} "
            "does not run natively (it needs AVX512_BF16, AMX or ARM BF16); emulated bf16 would be slower than fp32"
        )
    if target.constraints.static_shapes:
        _require_static(model.inputs, target)
    opset = int(model.meta.get("opset") or 0) if model.format is Format.ONNX else 0
    if target.format is Format.ONNX and opset > target.constraints.opset_max:
        raise UnsupportedOnTarget(f"the model has ONNX opset {opset}; target {target.name} takes opsets "
                                  f"{target.constraints.opset_min} to {target.constraints.opset_max} (edgekit does not "
                                  "downgrade opsets: export the model at a lower one)")
    steps: list[PlannedStep] = []
    current = model.format
    recipe_steps = lowered_steps(recipe, target)
    recipe_passes = {step.pass_name for step, _ in recipe_steps}
    lowering = [(step, "") for step in target.lowering if step.pass_name not in recipe_passes]
    steps += _opset_upgrade(model, [step for step, _ in [*recipe_steps, *lowering]], target)
    for origin, (step, reason) in [("recipe", s) for s in recipe_steps] + [("lowering", s) for s in lowering]:
        chosen = get_pass(step.pass_name)
        if current not in chosen.accepts:
            wanted = ", ".join(sorted(f.value for f in chosen.accepts))
            where = (f"step '{step.pass_name}' of recipe {recipe.name}" if origin == "recipe"
                     else f"lowering step '{step.pass_name}' of target {target.name}")
            steps += _conversion_steps(current, chosen.accepts, f"{where} takes {wanted}")
            current = steps[-1].produces
        steps.append(PlannedStep(step, origin, current, chosen.produces, reason))
        current = chosen.produces
    if current is not target.format:
        steps += _conversion_steps(current, frozenset({target.format}), f"target {target.name} runs {target.format.value}")
    return Plan(model.format, target, recipe, tuple(steps))


def trained_together(plan_to_cut: Plan) -> Plan:
    """The steps every process of a torchrun run takes: through the last one whose pass trains across processes
    (distill); none when no pass does. Rank 0 goes on alone with the rest."""
    together = max((number for number, step in enumerate(plan_to_cut.steps, 1)
                    if get_pass(step.step.pass_name).trains_across_processes), default=0)
    return replace(plan_to_cut, steps=plan_to_cut.steps[:together])


def lowered_steps(recipe: Recipe, target: Target) -> list[tuple[Step, str]]:
    """The recipe's steps with each quantize intent replaced by the target's steps for it (and why they are there)."""
    steps: list[tuple[Step, str]] = []
    for step in recipe.steps:
        if isinstance(step, QuantizeIntent):
            lowered, key = lower_intent(step, target)
            steps += [(concrete, f"quantize {key} on {target.name}") for concrete in lowered]
        else:
            steps.append((step, ""))
    return steps


def _opset_upgrade(model: Model, planned: list[Step], target: Target) -> list[PlannedStep]:
    """An upgrade-onnx-opset step when an ONNX source is older than a pass or the target needs, else none."""
    have = int(model.meta.get("opset") or 0)
    if model.format is not Format.ONNX or not have:
        return []
    needs = {f"target {target.name}": target.constraints.opset_min} if target.format is Format.ONNX else {}
    for step in planned:
        chosen = get_pass(step.pass_name)
        if Format.ONNX in chosen.accepts and chosen.min_opset:
            needs[step.pass_name] = max(needs.get(step.pass_name, 0), chosen.min_opset)
    wanted = max(needs.values(), default=0)
    if wanted <= have:
        return []
    from edgekit.passes.opset import UpgradeOnnxOpsetConfig

    who = ", ".join(name for name, opset in needs.items() if opset > have)
    return [PlannedStep(Step("upgrade-onnx-opset", UpgradeOnnxOpsetConfig(opset=wanted)), "inserted", Format.ONNX, Format.ONNX,
                        f"the model has opset {have}; {who} needs {wanted}")]


def _require_static(inputs: tuple[TensorSpec, ...], target: Target) -> None:
    for spec in inputs:
        symbolic = [d for d in spec.shape if isinstance(d, str)]
        if symbolic:
            fixed = "x".join(str(d) if isinstance(d, int) else "1" for d in spec.shape)
            raise UnsupportedOnTarget(
                f"target {target.name} needs static shapes, but input '{spec.name}' has symbolic dim "
                f"'{symbolic[0]}'; fix it with --input {spec.name}:{fixed}:{spec.dtype}"
            )


def _conversion_steps(start: Format, goals: frozenset[Format], why: str) -> list[PlannedStep]:
    """The shortest chain of conversion passes from `start` to any format in `goals`."""
    edges: list[Pass] = conversions()
    queue: deque[tuple[Format, list[Pass]]] = deque([(start, [])])
    seen = {start}
    while queue:
        current, path = queue.popleft()
        if current in goals:
            steps, fmt = [], start
            for conversion in path:
                config = conversion.Config()
                steps.append(PlannedStep(Step(conversion.name, config), "inserted", fmt, conversion.produces, why))
                fmt = conversion.produces
            return steps
        for conversion in edges:
            if current in conversion.accepts and conversion.produces not in seen:
                seen.add(conversion.produces)
                queue.append((conversion.produces, path + [conversion]))
    goal_text = " or ".join(sorted(f.value for f in goals))
    sources = _sources_of(goals, edges) - goals
    hint = (f"; {goal_text} can be made from {', '.join(sorted(f.value for f in sources))}: give the model in one of those"
            if sources else "")
    raise UnsupportedOnTarget(f"{why}, but no conversion leads from {start.value} to {goal_text}{hint}")


def _sources_of(goals: frozenset[Format], edges: list[Pass]) -> set[Format]:
    """Every format from which some chain of conversions reaches `goals`."""
    reached = set(goals)
    grew = True
    while grew:
        before = len(reached)
        reached |= {fmt for conversion in edges if conversion.produces in reached for fmt in conversion.accepts}
        grew = len(reached) > before
    return reached


def run(plan_to_run: Plan, model: Model, ctx: Context, cache_dir: Path | None,
        instruments: tuple[Instrument, ...] = ()) -> tuple[Model, list[StepRecord]]:
    """Execute the plan with the built-in instruments (provenance, the step cache when `cache_dir` is given, timing)
    and then `instruments` around each step. Under torchrun only rank 0 reads or writes the cache; the others run
    every step, with the same keys (so a training step finds rank 0's checkpoints)."""
    chain = (Provenance(), *((StepCache(cache_dir, ctx, is_writer()),) if cache_dir else ()), Timer(), *instruments)
    records = []
    try:
        for step in plan_to_run.steps:
            record = StepRecord(step.step.pass_name, step.origin, 0.0, False, None)
            for instrument in chain:
                instrument.before_step(step, model, record)
            result = next((found for instrument in chain if (found := instrument.should_run(step, model, record))),
                          None)
            if result is None:
                checkpoints = cache_dir / "checkpoints" / record.cache_key if cache_dir and record.cache_key else None
                result = _run_step(get_pass(step.step.pass_name), step, model, ctx, checkpoints)
            for instrument in chain:
                result = instrument.after_step(step, model, result, record) or result
            records.append(record)
            model = result
    finally:
        for instrument in chain:
            instrument.finish()
    return model, records


class Reads:
    """The target or a dataset as a pass sees it: every attribute read (and len) is recorded, so a use the pass does
    not declare is caught. Truth (is there data?) is not a read."""

    def __init__(self, wrapped: Any) -> None:
        object.__setattr__(self, "_wrapped", wrapped)
        object.__setattr__(self, "reads", set())

    def __getattr__(self, name: str) -> Any:
        self.reads.add(name)
        return getattr(self._wrapped, name)

    def __len__(self) -> int:
        self.reads.add("__len__")
        return len(self._wrapped)

    def __bool__(self) -> bool:
        return bool(self._wrapped)


def allowed_target_reads(chosen: Pass) -> set[str]:
    """What a pass may read of its target: what it declares, the ISA when it uses it, its name (for messages) and
    whether it runs here (this machine's cache holds this machine's answers)."""
    return {*chosen.uses_target, "name", "availability", *(("instruction_set", "isa") if chosen.uses_isa else ())}


def _run_step(chosen: Pass, step: PlannedStep, model: Model, ctx: Context, checkpoints: Path | None) -> Model:
    target, calibration, evaluation = (None if value is None else Reads(value)
                                       for value in (ctx.target, ctx.calibration, ctx.evaluation))
    step_ctx = Context(Path(tempfile.mkdtemp(prefix=f"{chosen.name}-", dir=ctx.work_dir)), target,  # type: ignore[arg-type]
                       calibration, evaluation, ctx.logger, ctx.progress, ctx.source, checkpoints)  # type: ignore[arg-type]
    try:
        result = chosen.run(model, step.step.config, step_ctx)
    except EdgekitError:
        raise
    except Exception as error:
        raise PassFailed(chosen.name, error) from error
    # a bug in the pass: its cached output would be reused where what it read differs
    undeclared = [f"target field(s) {', '.join(sorted(target.reads - allowed_target_reads(chosen)))} that its "
                  "uses_target does not declare"] if target is not None and target.reads - allowed_target_reads(chosen) else []
    for data, declared, flag in ((calibration, chosen.uses_calibration, "uses_calibration"),
                                 (evaluation, chosen.uses_evaluation, "uses_evaluation")):
        if data is not None and data.reads and not declared:
            undeclared.append(f"{'calibration' if flag == 'uses_calibration' else 'evaluation'} data without {flag}")
    if undeclared:
        raise PassFailed(chosen.name, TypeError(f"it read {'; '.join(undeclared)} (the step cache would mix what "
                                                "it was not keyed by)"))
    return result
