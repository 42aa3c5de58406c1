"""Recipes: YAML lists of pass steps with optional evaluate/tolerance sections, validated up front."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekit.catalog import read_yaml, resolve
from edgekit.errors import UserError
from edgekit.intent import QuantizeIntent, parse_intent
from edgekit.metrics import BUILTIN_METRICS, Evaluation, is_builtin, load_metric
from edgekit.passes.base import Step, get_pass
from edgekit.schema import build, did_you_mean, to_dict


@dataclass(frozen=True, slots=True)
class Tolerance:
    """The `tolerance:` section of a recipe, merged into its Evaluation."""

    max_drop: float | None = field(default=None, metadata={"range": (0.0, 1e9)})
    relative: bool = False


def parse_evaluation(evaluate: object, tolerance: object, where: str, base: Path | None = None) -> Evaluation:
    """The `evaluate:` and `tolerance:` sections → a checked Evaluation (custom metric importable, data found)."""
    evaluation = build(Evaluation, evaluate, f"{where}, evaluate")  # type: ignore[arg-type]
    if tolerance is not None:
        bound = build(Tolerance, tolerance, f"{where}, tolerance")  # type: ignore[arg-type]
        if evaluation.max_drop is not None and bound.max_drop is not None:
            raise UserError(f"{where}: max_drop is given in both 'evaluate' and 'tolerance'; keep one")
        evaluation = replace(evaluation, max_drop=evaluation.max_drop if bound.max_drop is None else bound.max_drop,
                             relative=evaluation.relative or bound.relative)
    metric = evaluation.metric
    if not is_builtin(metric):
        if ":" not in metric:
            raise UserError(f"{where}, evaluate: unknown metric '{metric}'{did_you_mean(metric, BUILTIN_METRICS)}; "
                            f"use one of {', '.join(BUILTIN_METRICS)} or a custom file.py:function / module:function")
        evaluation = replace(evaluation, metric=load_metric(metric, base, where)[0])
    if evaluation.decode is not None:
        evaluation = replace(evaluation, decode=load_metric(evaluation.decode, base, f"{where}, evaluate: decode")[0])
    elif metric == "box-iou":
        raise UserError(f"{where}, evaluate: metric box-iou reads boxes through a decode hook: add decode: "
                        "file.py:function (a sample's outputs → boxes [M, 4] as x1 y1 x2 y2)")
    if evaluation.data is not None:
        data = Path(evaluation.data)
        if not data.is_absolute() and base is not None and not data.exists():
            data = base / data
        if not data.exists():
            raise UserError(f"{where}, evaluate: data {evaluation.data} not found")
        evaluation = replace(evaluation, data=str(data))
    return evaluation


@dataclass(frozen=True, slots=True)
class Recipe:
    name: str
    steps: tuple[Step | QuantizeIntent, ...]  # an intent is lowered by the target at plan time
    precision: str = "fp32"
    description: str = ""
    evaluation: Evaluation = Evaluation()
    source: str = ""
    runtime: dict[str, Any] = field(default_factory=dict)  # runtime options laid over the target's (e.g. a precision hint)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "source": self.source, "precision": self.precision, "runtime": self.runtime,
            "steps": [step.to_dict() for step in self.steps], "evaluate": to_dict(self.evaluation),
        }


RECIPE_KEYS = ("name", "description", "precision", "steps", "evaluate", "tolerance", "runtime")


def parse_recipe_step(raw: Any, where: str) -> Step | QuantizeIntent:
    """A recipe step: a pass (see parse_step) or a quantize intent `{quantize: {precision: int8, ...}}`."""
    if isinstance(raw, dict) and "quantize" in raw and "pass" not in raw:
        return parse_intent(raw, where)
    return parse_step(raw, where)


def parse_step(raw: Any, where: str) -> Step:
    """`{pass: NAME, with: {...}}` (or the parameters beside `pass`) → a validated Step."""
    if not isinstance(raw, dict) or "pass" not in raw:
        raise UserError(f"{where}: expected a mapping with 'pass' (a pass to run) or 'quantize' (an intent the target "
                        f"lowers), got {raw!r}")
    name = raw["pass"]
    params = raw.get("with", {k: v for k, v in raw.items() if k != "pass"})
    if "with" in raw and len(raw) > 2:
        extra = [k for k in raw if k not in ("pass", "with")]
        raise UserError(f"{where}: put parameters under 'with', not beside it: {', '.join(extra)}")
    try:
        selected = get_pass(str(name))
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    return Step(selected.name, build(selected.Config, params, f"{where} ({name})"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    path = resolve("recipes", name_or_path)
    data = read_yaml(path, "recipes")
    for key in data:
        if key not in RECIPE_KEYS:
            raise UserError(f"recipe {path}: unknown field '{key}'{did_you_mean(key, RECIPE_KEYS)}")
    raw_steps = data.get("steps") or []
    if not isinstance(raw_steps, list):
        raise UserError(f"recipe {path}: 'steps' must be a list")
    steps = tuple(parse_recipe_step(raw, f"recipe {path}, step {i + 1}") for i, raw in enumerate(raw_steps))
    precision = data.get("precision", "fp32")
    if not isinstance(precision, str):
        raise UserError(f"recipe {path}: 'precision' must be a string such as fp32 or int8")
    evaluation = parse_evaluation(data.get("evaluate"), data.get("tolerance"), f"recipe {path}", path.parent)
    runtime = data.get("runtime") or {}
    if not isinstance(runtime, dict):
        raise UserError(f"recipe {path}: 'runtime' must be a mapping of runtime options, e.g. config: {{INFERENCE_PRECISION_HINT: bf16}}")
    return Recipe(str(data.get("name", path.stem)), steps, precision, str(data.get("description", "")), evaluation, str(path),
                  runtime)
