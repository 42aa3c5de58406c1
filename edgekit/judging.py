"""Score a candidate's outputs against the source model's, sample by sample, with the metric each output calls for.

`auto` judges every output by the metric its values call for (edgekit.metric_inference) — with labels, a class
output by top-1 accuracy; a named built-in judges the output the evaluation names (else the first); `box-iou` judges
the boxes a decode hook reads off each sample's outputs. Each judgement keeps the mean and the worst sample, so a
tolerance can bound both (edgekit.metrics.verdicts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgekit.errors import UserError
from edgekit.functions import load_metric
from edgekit.metric_inference import Inferred, infer
from edgekit.task_metrics import MetricOptions, builtin, labelled_top_k, matched_box_iou, per_sample, top_k


@dataclass(frozen=True, slots=True)
class Judgement:
    """One output measured by one metric over the evaluation samples: mean, worst sample, and how many changed."""

    output: str
    metric: str
    reason: str
    kind: str  # agreement, similarity, error (edgekit.task_metrics.Kind)
    binary: bool  # each sample scores 0 or 1
    value: float  # mean over samples
    reference: float  # the source model's own value (1 for agreement with itself, its accuracy against labels)
    worst: float  # the worst sample's value
    worst_sample: int
    changed: int | None  # samples whose task reading differs from the source's (agreement metrics)
    samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def _options(evaluation, metric: str, axis: int) -> MetricOptions:
    decode = load_metric(evaluation.decode, where="decode")[1] if evaluation.decode else None
    return MetricOptions(axis=axis, blank=evaluation.blank, threshold=evaluation.threshold, k=top_k(metric),
                         decode=decode)


def _judgement(output: str, metric: str, reason: str, values: np.ndarray, reference: float | np.ndarray) -> Judgement:
    """`reference` is the ideal score, or the source's own score per sample (against labels): a sample changed where
    the candidate's score differs from the source's."""
    task = builtin(metric)
    assert task is not None
    worst_sample = int(np.argmax(values) if task.kind == "error" else np.argmin(values))
    changed = int(np.sum(values != reference)) if task.kind == "agreement" else None
    own = float(np.mean(reference))
    return Judgement(output, metric, reason, task.kind, task.binary, float(np.mean(values)), own,
                     float(values[worst_sample]), worst_sample, changed, len(values))


def judge(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]], labels: np.ndarray | None,
          evaluation, names: tuple[str, ...] = ()) -> list[Judgement]:
    """Per output (samples × outputs in), the metric's mean, worst sample and reference value. A custom metric
    (file.py:function) is judged elsewhere, as a whole (edgekit.metrics.compare)."""
    count = len(reference[0])
    names = tuple(names[:count]) + tuple(f"output {i}" for i in range(len(names), count))
    metric = evaluation.metric
    if metric == "box-iou":
        if not evaluation.decode:
            raise UserError("metric box-iou reads boxes through a decode hook: give decode: file.py:function "
                            "(a sample's outputs → boxes [M, 4] as x1 y1 x2 y2)")
        decode = _options(evaluation, metric, -1).decode
        values = np.array([matched_box_iou(_boxes(decode, want), _boxes(decode, got)) for want, got in zip(reference, candidate)])
        return [_judgement("decoded boxes", metric, f"named: boxes from {evaluation.decode}", values, 1.0)]
    if evaluation.output and evaluation.output not in names:
        raise UserError(f"output '{evaluation.output}' is not one of the model's outputs: {', '.join(names)}")
    chosen = [names.index(evaluation.output)] if evaluation.output else (range(count) if metric == "auto" else [0])
    judged, labels_used = [], labels is None
    for index in chosen:
        want = [sample[index] for sample in reference]
        got = [sample[index] for sample in candidate]
        found = infer(names[index], want, labels is not None) if metric == "auto" else Inferred(
            metric, evaluation.axis, "named by the evaluation")
        task = builtin(found.metric)
        if task is None:
            raise UserError(f"unknown metric '{found.metric}'")
        options = _options(evaluation, found.metric, found.axis)
        if not labels_used and found.metric.startswith("top") and task.kind == "agreement":
            labels_used = True
            values = labelled_top_k(got, labels, options)
            judged.append(_judgement(names[index], found.metric, found.reason + "; against the labels", values,
                                     labelled_top_k(want, labels, options)))
            continue
        values = per_sample(task, want, got, options)
        judged.append(_judgement(names[index], found.metric, found.reason, values, task.ideal))
    return judged


def _boxes(decode, outputs: list[np.ndarray]) -> np.ndarray:
    try:
        boxes = np.asarray(decode([np.asarray(output) for output in outputs]), dtype=np.float64)
    except Exception as error:
        raise UserError(f"decode hook failed: {type(error).__name__}: {error}") from None
    if boxes.size and (boxes.ndim != 2 or boxes.shape[1] < 4):
        raise UserError(f"decode hook returned shape {list(boxes.shape)}; it must return boxes [M, 4] (x1 y1 x2 y2)")
    return boxes.reshape(-1, boxes.shape[1] if boxes.size else 4)[:, :4]
