"""What a model is judged by, in one place: the Evaluation (metric, allowed drop of the mean and of the worst sample,
data), the figures of a candidate's outputs against the reference's (`compare`), the verdicts on them, and the
per-sample `score` that accuracy-aware quantization (fallback, NNCF accuracy control, INC autotune) and distillation
rank candidates with."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import UserError
from edgekit.functions import MetricFunction, load_metric
from edgekit.judging import judge
from edgekit.manifest import VerdictRecord
from edgekit.task_metrics import NAMES, MetricOptions, builtin

BUILTIN_METRICS = ("auto", *NAMES)
# the tolerance a metric gets when the user gives none (--recipe auto): a task reading (class, text, mask) may change
# on at most 1% of the samples (and, per sample, on at most 1% of its positions), cosine stays ≥ 0.99, the relative
# L2 error ≤ 5%
DEFAULT_MAX_DROP = {"agreement-kind": 0.01, "cosine": 0.01, "rel-error": 0.05}
DROP_SLACK = 1e-9  # 1 - 0.99 is 0.010000000000000009 in floats: a drop equal to its limit is within it

QUANTIZED_MIN_COSINE = 0.99  # FidelityCheck's bound for conversions of an int-quantized model
# the relative error a step may show when the runtime computes in a narrower float than fp32: a few
# units of that format's rounding (bf16 keeps 8 mantissa bits: 2^-8 ≈ 3.9e-3; fp16 11 bits: 4.9e-4),
# grown over a deep graph's accumulated rounding
EXECUTED_TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2}


def executed_tolerance(tolerance: float, *precisions: str) -> float:
    """A pass's promised tolerance, widened to what the narrowest executed float precision allows."""
    return max([tolerance, *(EXECUTED_TOLERANCE.get(p, 0.0) for p in precisions)])


def is_builtin(metric: str) -> bool:
    return metric == "auto" or builtin(metric) is not None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """How to score a compiled model against its source: the metric, the allowed drops, the data.

    `metric` is `auto` (each output judged by what its values are: edgekit.metric_inference), a built-in
    (edgekit.task_metrics: top1/topK, agreement, sequence, ctc, ctc-edit, mask-iou, box-iou, exact, cosine, rel-error, mse,
    max_abs) judging `output` (default the first), or a custom `path/to/file.py:function` /
    `package.module:function` called as `function(reference_outputs, candidate_outputs, labels) -> float`.
    `max_drop` bounds the mean over samples, `worst` the worst sample (default: `max_drop` for agreement metrics
    whose samples score between 0 and 1, else unbounded).
    """

    metric: str = "auto"
    max_drop: float | None = field(default=None, metadata={"range": (0.0, 1e9)})
    relative: bool = False  # max_drop as a fraction of the reference value
    higher_is_better: bool = True  # only read for a custom metric; built-ins know their direction
    data: str | None = None  # evaluation data used when --eval is not given
    worst: float | None = field(default=None, metadata={"range": (0.0, 1e9)})
    output: str | None = None  # judge only this output (by name)
    axis: int = -1  # the class axis of a named agreement/top-k/mask metric
    blank: int = 0  # the CTC blank class (ctc, ctc-edit)
    threshold: float | None = None  # mask-iou on a single-channel map: the mask is where it exceeds this (0.5)
    decode: str | None = None  # box-iou: file.py:function turning a sample's outputs into boxes [M, 4]


def compare(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]],
            labels: np.ndarray | None = None, evaluation: Evaluation | None = None, names: tuple[str, ...] = ()) -> dict:
    """Fidelity of `candidate` to `reference` (samples × outputs): cosine and errors on the first output, and with an
    `evaluation` its judgements (`judged`: per output, the metric's mean and worst sample) or its custom metric's
    value, computed on the candidate and on the reference itself."""
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
        ref_top, got_top = ref.argmax(axis=1), got.argmax(axis=1)
        metrics["top1_agreement"] = float((ref_top == got_top).mean())
        if labels is not None:
            flat = np.asarray(labels).reshape(-1)[: len(ref_top)]
            metrics["reference_accuracy"] = float((ref_top == flat).mean())
            metrics["accuracy"] = float((got_top == flat).mean())
    if evaluation is None:
        return metrics
    if is_builtin(evaluation.metric):
        metrics["judged"] = [j.to_dict() for j in judge(reference, candidate, labels, evaluation, names)]
    else:
        function = load_metric(evaluation.metric)[1]
        ref_outputs, got_outputs = _by_output(reference), _by_output(candidate)
        metrics["custom"] = {"metric": evaluation.metric,
                             "value": _call(function, evaluation.metric, ref_outputs, got_outputs, labels),
                             "reference": _call(function, evaluation.metric, ref_outputs, ref_outputs, labels)}
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
    """One output's metric: the mean's value, the source's value, the drop (worse = positive) and the limit on it;
    the worst sample's drop and its limit; how many samples' task reading changed."""

    metric: str
    value: float
    reference: float | None
    drop: float
    limit: float | None
    output: str = ""
    reason: str = ""
    worst: float | None = None
    worst_drop: float | None = None
    worst_limit: float | None = None
    worst_sample: int | None = None
    changed: int | None = None
    samples: int = 0

    @property
    def ok(self) -> bool:
        return ((self.limit is None or self.drop <= self.limit + DROP_SLACK)
                and (self.worst_limit is None or self.worst_drop is None or self.worst_drop <= self.worst_limit + DROP_SLACK))

    @property
    def strain(self) -> float:
        """How close to its limits (1.0 = at a limit): the verdict that decides is the most strained."""
        ratios = [drop / limit if limit else (0.0 if drop <= 0 else float("inf"))
                  for drop, limit in ((self.drop, self.limit), (self.worst_drop, self.worst_limit))
                  if limit is not None and drop is not None]
        return max(ratios, default=0.0)

    def record(self) -> VerdictRecord:
        """As the manifest stores it."""
        return VerdictRecord(self.metric, self.value, self.reference, self.drop, self.limit, self.ok, self.output,
                             self.reason, self.worst, self.worst_drop, self.worst_limit, self.worst_sample,
                             self.changed, self.samples)


def default_max_drop(metric: str) -> float | None:
    """The allowed drop of `metric` when the user gives none (None: the metric needs one given)."""
    task = builtin(metric)
    if task is not None and task.kind == "agreement":
        return DEFAULT_MAX_DROP["agreement-kind"]
    return DEFAULT_MAX_DROP.get(metric)


def verdicts(metrics: dict, evaluation: Evaluation, default_limits: bool = False) -> list[Verdict]:
    """Every judged output's verdict under `evaluation`'s limits; `default_limits`: a metric without a given max_drop
    gets its default (DEFAULT_MAX_DROP), as `--recipe auto` judges."""
    if "custom" in metrics:
        custom = metrics["custom"]
        if custom.get("metric") != evaluation.metric:
            raise UserError(f"custom metric {evaluation.metric} was not computed for these results")
        value, reference, higher = custom["value"], custom["reference"], evaluation.higher_is_better
        limit = evaluation.max_drop
        if limit is not None and evaluation.relative and reference:
            limit = limit * abs(reference)
        return [Verdict(evaluation.metric, value, reference, (reference - value) if higher else (value - reference),
                        limit, reason="custom metric, named by the evaluation")]
    found = []
    for judged in metrics["judged"]:
        if evaluation.metric not in ("auto", judged["metric"]):
            raise UserError(f"metric {evaluation.metric} was not computed for these results ({judged['metric']} was)")
        higher = judged["kind"] != "error"
        reference = judged["reference"]
        limit = evaluation.max_drop
        if limit is None and default_limits:
            limit = default_max_drop(judged["metric"])
            if limit is None:
                raise UserError(f"metric {judged['metric']} has no default tolerance: give --max-drop")
        elif limit is not None and evaluation.relative and reference:
            limit = limit * abs(reference)
        worst_limit = evaluation.worst
        if worst_limit is None and judged["kind"] == "agreement" and not judged["binary"]:
            worst_limit = limit  # no sample may change more than the tolerance allows
        ideal = 0.0 if judged["kind"] == "error" else 1.0
        worst_drop = (ideal - judged["worst"]) if higher else (judged["worst"] - ideal)
        drop = (reference - judged["value"]) if higher else (judged["value"] - reference)
        found.append(Verdict(judged["metric"], judged["value"], reference, drop, limit, judged["output"],
                             judged["reason"], judged["worst"], worst_drop, worst_limit, judged["worst_sample"],
                             judged["changed"], judged["samples"]))
    return found


def deciding(found: list[Verdict]) -> Verdict:
    """The verdict that decides: a failing one first, else the one nearest its limits."""
    return max(found, key=lambda v: (not v.ok, v.strain))


def verdict(metrics: dict, evaluation: Evaluation, default_limits: bool = False) -> Verdict:
    """The recipe's metric and how far the compiled model fell from the source on it (the deciding output's)."""
    return deciding(verdicts(metrics, evaluation, default_limits))


def auto_metric(reference: np.ndarray, labelled: bool) -> str:
    """What `auto` means for one output (edgekit.metric_inference) — the rule compile's judgement applies."""
    from edgekit.metric_inference import infer

    return infer("output 0", [reference], labelled).metric


def sample_score(metric: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> float:
    """A batch's score, higher is better, for ranking candidates: each row (leading axis) scored by the built-in
    `metric` against the reference's row — top-k against `labels` where given; error metrics count negative."""
    task = builtin(metric)
    if task is None:
        raise UserError(f"metric {metric} cannot rank candidates sample by sample; use a built-in metric")
    options = MetricOptions(k=int(metric[3:]) if metric.startswith("top") else 1)
    if labels is not None and metric.startswith("top"):
        from edgekit.task_metrics import labelled_top_k

        rows = [np.asarray(row)[None] for row in candidate]
        return float(np.mean(labelled_top_k(rows, np.asarray(labels).reshape(len(rows), -1), options)))
    values = [task.score(np.asarray(want), np.asarray(got), options) for want, got in zip(reference, candidate)]
    return float(np.mean(values)) * (1.0 if task.higher_is_better else -1.0)
