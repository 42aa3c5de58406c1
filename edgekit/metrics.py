"""What a model is judged by, in one place: the Evaluation (metric, allowed drop, data), the figures of a candidate's
outputs against the reference's (`compare`), the verdict on them, and the per-sample `score` that accuracy-aware
quantization (fallback, NNCF accuracy control, INC autotune) and distillation rank candidates with."""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from edgekit.errors import UserError
from edgekit.manifest import VerdictRecord

MetricFunction = Callable[[list[np.ndarray], list[np.ndarray], "np.ndarray | None"], float]

BUILTIN_METRICS = ("auto", "top1", "cosine", "mse", "max_abs")

QUANTIZED_MIN_COSINE = 0.99  # FidelityCheck's bound for conversions of an int-quantized model
# the relative error a step may show when the runtime computes in a narrower float than fp32: a few
# units of that format's rounding (bf16 keeps 8 mantissa bits: 2^-8 ≈ 3.9e-3; fp16 11 bits: 4.9e-4),
# grown over a deep graph's accumulated rounding
EXECUTED_TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2}


def executed_tolerance(tolerance: float, *precisions: str) -> float:
    """A pass's promised tolerance, widened to what the narrowest executed float precision allows."""
    return max([tolerance, *(EXECUTED_TOLERANCE.get(p, 0.0) for p in precisions)])


@dataclass(frozen=True, slots=True)
class Evaluation:
    """How to score a compiled model against its source: the metric, the allowed drop, the data.

    `metric` is a built-in (auto: top1 for classifier outputs, else cosine) or a custom
    `path/to/file.py:function` / `package.module:function` called as
    `function(reference_outputs, candidate_outputs, labels) -> float`.
    """

    metric: str = "auto"
    max_drop: float | None = field(default=None, metadata={"range": (0.0, 1e9)})
    relative: bool = False  # max_drop as a fraction of the reference value
    higher_is_better: bool = True  # only read for a custom metric; built-ins know their direction
    data: str | None = None  # evaluation data used when --eval is not given


def load_metric(spec: str, base: Path | None = None, where: str = "metric") -> tuple[str, MetricFunction]:
    """A custom metric `file.py:function` (relative to the cwd, else to `base`) or `module:function`.

    Returns the spec with the file made absolute, and the function.
    """
    location, _, name = spec.rpartition(":")
    if not location or not name.isidentifier():
        raise UserError(f"{where}: metric '{spec}' is not file.py:function or package.module:function")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file() and base is not None and (base / path).is_file():
            path = base / path
        if not path.is_file():
            raise UserError(f"{where}: metric file {location} not found")
        path = path.resolve()
        module = _module_from_file(str(path))
        location = str(path)
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise UserError(f"{where}: cannot import metric module '{location}': {error}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(f"{where}: {location} has no function '{name}'")
    return f"{location}:{name}", function


@functools.cache
def _module_from_file(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"edgekit_metric_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as error:
        raise UserError(f"metric file {path} failed to import: {type(error).__name__}: {error}") from None
    return module


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


def auto_metric(reference: np.ndarray, labelled: bool) -> str:
    """What `auto` means for one output: top1 for a labelled classifier ([batch, classes]), else cosine to the
    reference (an unlabelled 2-D output may as well be an embedding) — the rule `resolve_metric` applies to figures."""
    return "top1" if labelled and reference.ndim == 2 and reference.shape[1] > 1 else "cosine"


def sample_score(metric: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> float:
    """A batch's score, higher is better, for ranking candidates: top1 is accuracy against `labels` (else agreement
    with the reference's arg-max), cosine the mean cosine of each row to the reference's."""
    if metric == "top1":
        wanted = np.asarray(labels).reshape(-1) if labels is not None else reference.argmax(axis=1)
        return float(np.mean(candidate.reshape(len(wanted), -1).argmax(axis=1) == wanted))
    if metric != "cosine":
        raise UserError(f"metric {metric} cannot rank candidates sample by sample; use top1 or cosine")
    got, want = (np.asarray(a, dtype=np.float64).reshape(len(a), -1) for a in (candidate, reference))
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    return float(np.mean(np.where(norms > 0, (got * want).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)))
