"""Mixed precision under a budget: every layer starts at the cheapest precision the target runs it in; the layers that
lose the most SNR against the float graph (measured layer by layer, edgekit.layers) are promoted a rung at a time —
until the budget's fidelity holds (`max_drop`), or for as long as its size or latency allows (`size_mb`,
`latency_ms`). Every candidate is built by the target's quantizer and measured on the target's runtime here.

A backend (ONNX Runtime: passes/mixed_ort.py; OpenVINO: passes/mixed_openvino.py) says which rungs a layer has and
builds the model for a plan (node → rung); this module searches and writes the manifest's `precision_plan`."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgekit.errors import FidelityError, UnsupportedOnTarget, UserError
from edgekit.intent import Budget
from edgekit.model import Model
from edgekit.passes.base import Context

Plan = dict[str, str]  # float node name → its rung; a node absent is at its first rung
LATENCY_RUNS = 30  # timed runs per candidate (after 5 warm-up): the median decides


class Backend(Protocol):
    """A target's quantizer seen per layer."""

    format_module: str  # edgekit.layers backend: match_layers, ExposedRun

    def rungs(self, node: str) -> tuple[str, ...]:
        """The precisions `node` can run in here, cheapest first (fp32 last); one rung: not promotable."""

    def build(self, plan: Plan, index: int) -> Model:
        """The model with every layer at its plan's rung (written to a fresh folder)."""

    def weight_bytes(self) -> dict[str, int]:
        """Float node name → bytes of its fp32 weights (0 or absent: none)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    plan: Plan
    model: Model
    value: float
    worst: float | None
    drop: float
    worst_drop: float | None
    ok: bool
    bytes: int
    latency_ms: float
    gaps: tuple[Any, ...]  # LayerGap of its quantized layers, worst loss first

    def summary(self, index: int) -> dict[str, Any]:
        return {"candidate": index, "promoted": len(self.plan), "value": self.value, "worst": self.worst,
                "drop": self.drop, "worst_drop": self.worst_drop, "ok": self.ok, "size_mb": self.bytes / 1e6,
                "latency_ms": self.latency_ms}


def search(float_model: Model, backend: Backend, budget: Budget, ctx: Context, base: str) -> tuple[Model, dict]:
    """The cheapest plan within `budget` (see the module doc), and the precision_plan record of the manifest."""
    from edgekit.evaluate import collect, runner_for
    from edgekit.metrics import Evaluation

    objective = budget.objective()
    if ctx.target is not None and ctx.target.format is not float_model.format:
        raise UnsupportedOnTarget(f"a quantization budget is measured on the target's runtime, and {ctx.target.name} "
                                  f"runs {ctx.target.format.value}, not the {float_model.format.value} being quantized")
    data = ctx.evaluation or ctx.calibration
    if data is None:
        raise UserError("a quantization budget needs evaluation data: give --eval DATA (or --calib DATA)")
    feeds = list(data.feeds(budget.eval_samples))
    labels = None if data.labels is None else data.labels[: budget.eval_samples]
    evaluation = Evaluation(budget.metric, max_drop=budget.max_drop if objective == "max_drop" else None,
                            worst=budget.worst)
    float_run = runner_for(float_model, target=ctx.target)
    reference = collect(float_run, feeds)
    float_ms = _latency(float_run, feeds[0])
    float_bytes = _bytes(float_model)
    weights = backend.weight_bytes()

    def measure(plan: Plan) -> Candidate:
        model = backend.build(plan, len(tried))
        run = runner_for(model, target=ctx.target)
        judged = _verdict(reference, collect(run, feeds), labels, evaluation, float_model)
        gaps = _quantized_gaps(backend, float_model, model, feeds[: budget.layer_samples], ctx)
        candidate = Candidate(dict(plan), model, judged.value, judged.worst, judged.drop, judged.worst_drop, judged.ok,
                              _bytes(model), _latency(run, feeds[0]), gaps)
        ctx.logger.info("mixed precision: candidate %d (%d layer(s) promoted%s): %s %.4f (worst %s), %.2f MB, %.2f ms",
                        len(tried), len(plan), _newly(plan, tried), judged.metric, judged.value,
                        "-" if judged.worst is None else f"{judged.worst:.4f}", candidate.bytes / 1e6, candidate.latency_ms)
        tried.append(candidate)
        return candidate

    tried: list[Candidate] = []
    ctx.progress.start(f"mixed precision ({objective})", None)
    first = measure({})
    limit = {"size_mb": lambda c: c.bytes / 1e6 <= budget.size_mb,
             "latency_ms": lambda c: c.latency_ms <= budget.latency_ms}.get(objective)
    if limit is not None and not limit(first):
        raise FidelityError(f"budget {objective} {getattr(budget, objective)}: even every layer at its cheapest "
                            f"precision measures {first.bytes / 1e6:.2f} MB, {first.latency_ms:.2f} ms here")
    chosen = _climb(first, measure, backend, budget, limit)
    ctx.progress.finish()
    if objective == "max_drop" and not chosen.ok:
        raise FidelityError(
            f"budget max_drop {budget.max_drop}: {len(tried)} candidates measured; the best keeps {len(chosen.plan)} "
            f"layer(s) promoted and still drops {chosen.drop:.4g} (worst sample {chosen.worst_drop}); raise max_rounds "
            f"or loosen the budget")
    record = _record(chosen, tried, first, budget, objective, base, backend, weights, float_bytes, float_ms, data.origin)
    return chosen.model, record


def _newly(plan: Plan, tried: list[Candidate]) -> str:
    """The nodes this plan promotes beyond the last candidate's, for the log."""
    added = [node for node in plan if not tried or plan[node] != tried[-1].plan.get(node)]
    return f", now {', '.join(added[:4])}{' …' if len(added) > 4 else ''}" if added and tried else ""


def _climb(first: Candidate, measure: Callable[[Plan], Candidate], backend: Backend, budget: Budget,
           fits: Callable[[Candidate], bool] | None) -> Candidate:
    """Promote the worst-losing layers a rung, doubling the batch while it helps (and fits), halving it on a miss; a
    single layer whose promotion does not fit is passed over for the next one."""
    current, batch, refused = first, 1, set()
    for _ in range(budget.max_rounds):
        if fits is None and current.ok:
            break
        order = [gap.node for gap in current.gaps if gap.node not in refused and _next_rung(backend, current.plan, gap.node)]
        if not order:
            break
        plan = dict(current.plan)
        for node in order[:batch]:
            plan[node] = _next_rung(backend, plan, node)
        trial = measure(plan)
        if fits is not None and not fits(trial):
            if batch == 1:
                refused.add(order[0])
            batch = max(batch // 2, 1)
            continue
        if fits is None and trial.ok and batch > 1:
            current = _narrow(current, trial, order[:batch], measure, backend)  # fewer promotions may do
            break
        current, batch = trial, batch * 2
    return current


def _narrow(before: Candidate, after: Candidate, batch: list[str], measure: Callable[[Plan], Candidate],
            backend: Backend) -> Candidate:
    """The shortest prefix of the last batch that holds the fidelity (bisection; the full batch, `after`, does)."""
    low, high, best = 0, len(batch), after
    while high - low > 1:
        middle = (low + high) // 2
        plan = dict(before.plan)
        for node in batch[:middle]:
            plan[node] = _next_rung(backend, plan, node)
        trial = measure(plan)
        if trial.ok:
            high, best = middle, trial
        else:
            low = middle
    return best


def _next_rung(backend: Backend, plan: Plan, node: str) -> str | None:
    rungs = backend.rungs(node)
    position = rungs.index(plan[node]) if node in plan else 0
    return rungs[position + 1] if position + 1 < len(rungs) else None


def _verdict(reference, candidate, labels, evaluation, float_model: Model):
    from edgekit.metrics import compare, verdict

    names = tuple(spec.name for spec in float_model.outputs)
    return verdict(compare(reference, candidate, labels, evaluation, names), evaluation)


def _quantized_gaps(backend: Backend, float_model: Model, model: Model, feeds, ctx: Context) -> tuple[Any, ...]:
    """The candidate's layers still below fp32 (in graph terms: reading integers), the ones adding most noise first."""
    from edgekit.layers.gap import gaps_between

    gaps = gaps_between(backend.format_module, float_model.path, model.path, feeds, ctx.work_dir,
                        ctx.target.options if ctx.target else {})
    quantized = [gap for gap in gaps if gap.precision not in ("fp32", "fp16", None)]
    return tuple(sorted(quantized, key=lambda gap: (-added_noise(gap), gap.position)))


def added_noise(gap) -> float:
    """The noise the layer itself adds, as a fraction of its output's power: 10^(-SNR/10) less its inputs' share.
    Ranking by it rather than by the dB lost (which favours early layers, whose inputs are nearly exact) follows
    what reaches the output: MiniLM's attention-mask Add (23 dB → 0 dB) first, then the GELUs of the late blocks."""
    def share(snr: float) -> float:
        return 0.0 if snr == math.inf else 10 ** (-snr / 10) if math.isfinite(snr) else math.inf

    return max(share(gap.snr_db) - share(gap.input_snr_db), 0.0)


def _bytes(model: Model) -> int:
    return sum(Path(path).stat().st_size for path in model.files)


def _latency(run: Callable[[dict[str, np.ndarray]], Any], feed: dict[str, np.ndarray]) -> float:
    """Median ms of one run at batch 1 with the runtime's default threads (as `edgekit bench`), on this CPU."""
    for _ in range(5):
        run(feed)
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        run(feed)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _record(chosen: Candidate, tried: list[Candidate], first: Candidate, budget: Budget, objective: str, base: str,
            backend: Backend, weights: dict[str, int], float_bytes: int, float_ms: float, data: str) -> dict[str, Any]:
    """The manifest's precision_plan: the budget, each quantizable layer's precision with what it cost (the SNR it
    loses) and saved (weight bytes against fp32), and every candidate measured."""
    from edgekit.isa import resolve_isa

    first_loss = {gap.node: (gap.loss_db, added_noise(gap)) for gap in first.gaps}
    final_loss = {gap.node: (gap.loss_db, added_noise(gap)) for gap in chosen.gaps}
    layers = []
    for gap in first.gaps:
        precision = chosen.plan.get(gap.node, backend.rungs(gap.node)[0])
        fp32 = weights.get(gap.node, 0)
        stored = fp32 if precision.startswith("fp32") else fp32 // (2 if precision.startswith("fp16") else
                                                                    8 if precision.startswith("int4") else 4)
        at_base, now = first_loss[gap.node], final_loss.get(gap.node, (None, 0.0))
        layers.append({"node": gap.node, "op": gap.op, "module": gap.module, "precision": precision,
                       "noise_added_at_base": _finite(at_base[1]), "loss_db_at_base": _finite(at_base[0]),
                       "noise_added": _finite(now[1]), "loss_db": _finite(now[0]),
                       "weight_bytes_fp32": fp32, "weight_bytes_saved": fp32 - stored})
    index = tried.index(chosen)
    return {
        "budget": {key: value for key, value in _budget_dict(budget).items() if value is not None},
        "objective": objective, "base": base, "data": data,
        "chosen": index, "candidates": [candidate.summary(position) for position, candidate in enumerate(tried)],
        "measured": {"size_mb": chosen.bytes / 1e6, "latency_ms": chosen.latency_ms, "value": chosen.value,
                     "worst": chosen.worst, "drop": chosen.drop, "worst_drop": chosen.worst_drop,
                     "float_size_mb": float_bytes / 1e6, "float_latency_ms": float_ms,
                     "conditions": f"batch 1, runtime default threads, median of {LATENCY_RUNS} runs, "
                                   f"on this CPU ({resolve_isa('host').name})"},
        "promoted": {node: rung for node, rung in chosen.plan.items()},
        "layers": layers,
    }


def _finite(value: float | None) -> float | None:
    """JSON-ready: None stays None, an infinity becomes None, the rest 4 significant digits."""
    return None if value is None or not math.isfinite(value) else float(f"{value:.4g}")


def _budget_dict(budget: Budget) -> dict[str, Any]:
    return {name: getattr(budget, name) for name in ("max_drop", "worst", "size_mb", "latency_ms", "metric")}
