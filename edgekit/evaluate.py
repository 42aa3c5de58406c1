"""Score a model against its source: fidelity (cosine, errors, top-1 agreement) and task accuracy."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgekit.errors import EdgekitError, FidelityError, PassFailed, UserError, gist
from edgekit.instruments import Instrument
from edgekit.manifest import VerdictRecord
from edgekit.metrics import BUILTIN_METRICS, Evaluation, MetricFunction, load_metric
from edgekit.model import Format, Model
from edgekit.runtime import BACKENDS

if TYPE_CHECKING:
    from edgekit.target import Target

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]

# which runtime backend runs a model file of each format
RUNTIME_OF_FORMAT = {Format(backend.format): name for name, backend in BACKENDS.items()}


def runner_for(model: Model, threads: int | None = None, target: Target | None = None) -> Runner:
    """A function feed → outputs (in the order of `model.outputs`) for any model format.

    A model in the format `target` runs is opened with the target's options — measured the way
    the package will run; any other file opens with its runtime's exact defaults (f32 OpenVINO).
    The runner's `precision` attribute says what the runtime computes in.
    """
    if model.format.in_memory:
        return _torch_runner(model)
    from edgekit.runtime import open_model

    options = target.options if target is not None and target.format is model.format else {}
    session = open_model(RUNTIME_OF_FORMAT[model.format], model.files, model.inputs, model.outputs, options, threads)

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(session.run(feed).values())

    run.precision = session.execution_precision  # type: ignore[attr-defined]
    return run


def execution_precision(run: Runner) -> str:
    return getattr(run, "precision", "fp32")


def _torch_runner(model: Model) -> Runner:
    import torch

    module = model.module.module() if model.format is Format.EXPORTED else model.module

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.require(feed[spec.name], requirements="C")) for spec in model.inputs]
        with torch.no_grad():
            result = module(*tensors)
        if isinstance(result, dict):
            result = tuple(result.values())
        results = result if isinstance(result, (tuple, list)) else (result,)
        return [r.detach().cpu().numpy() for r in results]

    return run


def collect(run: Runner, feeds: Iterable[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    return [run(feed) for feed in feeds]


def compare(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
            labels: np.ndarray | None = None, metric: str = "auto") -> dict:
    """Fidelity of `candidate` to `reference` (samples × outputs), on the first output; accuracy when labelled.

    A custom `metric` (file.py:function) is also computed, on candidate and on the reference itself.
    """
    ref = np.concatenate([_rows(sample[0]) for sample in reference])
    got = np.concatenate([_rows(sample[0]) for sample in candidate])
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cosine = np.where(norms > 0, (ref * got).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
    metrics = {
        "samples": len(reference),  # feeds; rows below are each output's leading axis (a time-major output has T rows)
        "rows": int(len(ref)),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "mse": float((diff ** 2).mean()),
        "max_rel": float(diff.max() / max(np.abs(ref).max(), 1e-12)),
    }
    if ref.shape[1] > 1 and reference[0][0].ndim == 2:
        ref_top = ref.argmax(axis=1)
        got_top = got.argmax(axis=1)
        metrics["top1_agreement"] = float((ref_top == got_top).mean())
        if labels is not None:
            flat = np.asarray(labels).reshape(-1)[: len(ref_top)]
            metrics["reference_accuracy"] = float((ref_top == flat).mean())
            metrics["accuracy"] = float((got_top == flat).mean())
    if metric not in BUILTIN_METRICS:
        function = load_metric(metric)[1]
        ref_outputs, got_outputs = _by_output(reference), _by_output(candidate)
        metrics["custom"] = {"metric": metric, "value": _call(function, metric, ref_outputs, got_outputs, labels),
                             "reference": _call(function, metric, ref_outputs, ref_outputs, labels)}
    return metrics


def _by_output(samples: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Samples × outputs → one array per output, samples joined along the batch axis."""
    return [np.concatenate([np.atleast_1d(sample[i]) for sample in samples]) for i in range(len(samples[0]))]


def _call(function: MetricFunction, name: str, reference: list[np.ndarray], candidate: list[np.ndarray],
          labels: np.ndarray | None) -> float:
    try:
        value = float(function(reference, candidate, labels))
    except Exception as error:
        raise UserError(f"custom metric {name} failed: {type(error).__name__}: {error}") from None
    if not np.isfinite(value):
        raise UserError(f"custom metric {name} returned {value}; it must return a finite number")
    return value


def _rows(array: np.ndarray) -> np.ndarray:
    """Per-sample rows: a batch's leading axis stays, the rest is flattened."""
    array = np.asarray(array, dtype=np.float64)
    return array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)


@dataclass(frozen=True)
class Verdict:
    """The value of the metric, the source's value, the drop (worse = positive) and the limit on it."""

    metric: str
    value: float
    reference: float | None
    drop: float
    limit: float | None

    @property
    def ok(self) -> bool:
        return self.limit is None or self.drop <= self.limit

    def record(self) -> VerdictRecord:
        """As the manifest stores it."""
        return VerdictRecord(self.metric, self.value, self.reference, self.drop, self.limit, self.ok)


def resolve_metric(metrics: dict, metric: str) -> str:
    """`auto` → top1 when labelled data scored a classifier (batch × classes), else cosine to the source.

    Without labels a 2-D output may as well be an embedding ([batch, 384] for MiniLM), where
    arg-max agreement means nothing; cosine fits both.
    """
    if metric == "auto":
        return "top1" if "accuracy" in metrics else "cosine"
    return metric


def verdict(metrics: dict, evaluation: Evaluation) -> Verdict:
    """The recipe's metric and how far the compiled model fell from the source on it."""
    metric = resolve_metric(metrics, evaluation.metric)
    higher = True
    if metric == "top1":
        if "accuracy" in metrics:
            value, reference = metrics["accuracy"], metrics["reference_accuracy"]
        else:
            value, reference = metrics.get("top1_agreement", 0.0), 1.0
    elif metric == "cosine":
        value, reference = metrics["cosine_mean"], 1.0
    elif metric in ("mse", "max_abs"):
        value, reference, higher = metrics[metric], 0.0, False
    else:
        if metrics.get("custom", {}).get("metric") != metric:
            raise UserError(f"custom metric {metric} was not computed for these results")
        value, reference = metrics["custom"]["value"], metrics["custom"]["reference"]
        higher = evaluation.higher_is_better
    drop = (reference - value) if higher else (value - reference)
    limit = evaluation.max_drop
    if limit is not None and evaluation.relative and reference:
        limit = limit * abs(reference)
    return Verdict(metric, value, reference, drop, limit)


QUANTIZED_MIN_COSINE = 0.99  # FidelityCheck's bound for conversions of an int-quantized model
# the relative error a step may show when the runtime computes in a narrower float than fp32: a few
# units of that format's rounding (bf16 keeps 8 mantissa bits: 2^-8 ≈ 3.9e-3; fp16 11 bits: 4.9e-4),
# grown over a deep graph's accumulated rounding
EXECUTED_TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2}
FIDELITY_FEEDS = 8  # samples of the evaluation data every step's fidelity is measured on
# An fp32 step over its tolerance is judged again against the model's `float_noise` (edgekit.conditioning): its fp32
# outputs' distance from the same graph in float64. Runtimes' fast kernels (MLAS's and XNNPACK's tanh/exp/sigmoid
# approximations, reordered sums) stray up to this many times farther than PyTorch's fp32 (measured on magika:
# ONNX Runtime 8.5x, LiteRT 8.8x), so two correct fp32 implementations may differ by that much.
NOISE_MARGIN = 16


def executed_tolerance(tolerance: float, *precisions: str) -> float:
    """A pass's promised tolerance, widened to what the narrowest executed float precision allows."""
    return max([tolerance, *(EXECUTED_TOLERANCE.get(p, 0.0) for p in precisions)])


def _produced(pass_name: str, model: Model, target: Target | None,
              feeds: list[dict[str, np.ndarray]] | None) -> tuple[list[list[np.ndarray]], str]:
    """A step's output opened (and run on `feeds`, if given); a model its runtime refuses or fails on is the
    pass's error, naming the runtime's complaint."""
    try:
        run = runner_for(model, target=target)
        return (collect(run, feeds) if feeds else []), execution_precision(run)
    except EdgekitError:
        raise
    except Exception as error:  # the runtime's own parse/validation error names the node
        refusal = RuntimeError(f"produced a model {RUNTIME_OF_FORMAT.get(model.format, 'torch')} refuses: {gist(error)}")
        raise PassFailed(pass_name, refusal) from None


class FidelityCheck(Instrument):
    """Instrument: a step whose pass promises a tolerance must keep outputs within it.

    Models are opened as the target runs them (`runner_for`), and the tolerance follows the
    float precision the runtime actually executed.
    """

    def __init__(self, feeds: list[dict[str, np.ndarray]], target: Target | None = None) -> None:
        self.feeds = feeds
        self.target = target
        self._last: tuple[Model, list[list[np.ndarray]], str] | None = None  # the last checked output: the next step's input
        self._noise: float | None = None  # the computed function's fp32 rounding noise, probed when a step needs it

    def _float_noise(self, *models: Model) -> float | None:
        """The fp32 rounding noise of the function the steps compute, probed once on the first model that allows it."""
        from edgekit.conditioning import float_noise

        if self._noise is None:
            for model in models:
                self._noise = float_noise(model, self.feeds)
                if self._noise is not None:
                    break
        return self._noise

    def _outputs(self, model: Model) -> tuple[list[list[np.ndarray]], str]:
        if self._last is not None and self._last[0] is model:
            return self._last[1], self._last[2]
        run = runner_for(model, target=self.target)
        return collect(run, self.feeds), execution_precision(run)

    def after_step(self, step, before: Model, after: Model, record) -> None:  # type: ignore[override]
        from edgekit.passes.base import get_pass

        tolerance = get_pass(step.step.pass_name).tolerance
        if not self.feeds:  # a cached step is measured too: its manifest entry must not lose the figures
            return
        produced, precision = _produced(step.step.pass_name, after, self.target, self.feeds if tolerance else None)
        if tolerance is None:
            return
        reference, reference_precision = self._outputs(before)
        metrics = compare(reference, produced)
        self._last = (after, produced, precision)
        metrics["executed_precision"] = precision
        record.details["fidelity"] = metrics
        if str(before.meta.get("precision", "fp32")).startswith("int"):
            # converting a quantized model swaps PyTorch's float emulation of Q/DQ for the runtime's integer
            # kernels (their rounding differs): require the outputs' direction, which a wrong graph loses
            if metrics["cosine_min"] < QUANTIZED_MIN_COSINE:
                raise FidelityError(
                    f"step '{step.step.pass_name}' turned the quantized model's outputs by cosine {metrics['cosine_min']:.4f}, "
                    f"under {QUANTIZED_MIN_COSINE}: the result would be wrong"
                )
            return
        allowed = executed_tolerance(tolerance, precision, reference_precision)
        noise = None
        if metrics["max_rel"] > allowed and precision == reference_precision == "fp32":
            noise = self._float_noise(after, before)
            if noise:
                metrics["float_noise"] = noise
                allowed = max(allowed, NOISE_MARGIN * noise)
        if metrics["max_rel"] > allowed:
            why = f", {NOISE_MARGIN}x the model's fp32 rounding noise {noise:.1e}" if noise else ""
            raise FidelityError(
                f"step '{step.step.pass_name}' changed the outputs by {metrics['max_rel']:.2e} relative "
                f"(max abs {metrics['max_abs']:.2e}, run in {precision}), over its tolerance {allowed:.0e}{why}: "
                "the result would be wrong"
            )
