"""The built-in metrics, each scoring every evaluation sample of a candidate's output against the source model's.

A sample is one feed. Agreement metrics score what the task reads off an output — the class, each position's class,
the greedy CTC text, the mask, the boxes — 1.0 when the candidate's reading equals the source's; `cosine` and the
error metrics score the numbers themselves. Per-sample scores give both the mean and the worst sample.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from edgekit.errors import UserError

Kind = Literal["agreement", "similarity", "error"]
TOP_K = re.compile(r"top(\d+)")
# per-position readings: a position whose best classes the source separates by less than this share of the output's
# range is a tie (fp16 rounds at 4.9e-4): float noise between two exact conversions (LiteRT vs ONNX Runtime on
# MediaPipe's face detector) flips such arg-maxes, and either class is the source's reading
TIE = 1e-3


@dataclass(frozen=True, slots=True)
class MetricOptions:
    """How a metric reads an output: its class axis, the CTC blank class, a mask's threshold, a box decoder."""

    axis: int = -1
    blank: int = 0
    threshold: float | None = None  # a single-channel map is a mask where it exceeds this (default 0.5)
    k: int = 1
    decode: Callable[[list[np.ndarray]], np.ndarray] | None = None  # a sample's outputs → boxes [M, 4] x1 y1 x2 y2


@dataclass(frozen=True, slots=True)
class TaskMetric:
    """A built-in metric: how it scores one sample, whether higher is better, and whether a sample's score is 0 or 1
    (its task output changed or not: the mean is then the share of samples kept, and bounds the flips)."""

    name: str
    kind: Kind
    binary: bool
    what: str  # what one sample's score is, for messages and the README
    score: Callable[[np.ndarray, np.ndarray, MetricOptions], float]

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "error"

    @property
    def ideal(self) -> float:
        """The score of the source model against itself."""
        return 0.0 if self.kind == "error" else 1.0


def _classes(array: np.ndarray, axis: int) -> np.ndarray:
    return np.asarray(array).argmax(axis=axis)


def _top_k(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    """Rows whose candidate top-1 class is among the reference's top-k (k = 1: the same top-1)."""
    axis = options.axis % reference.ndim
    want = np.moveaxis(np.asarray(reference), axis, -1).reshape(-1, reference.shape[axis])
    got = np.moveaxis(np.asarray(candidate), axis, -1).reshape(-1, reference.shape[axis]).argmax(-1)
    top = np.argsort(-want, axis=-1, kind="stable")[:, : options.k]
    return float(np.mean((top == got[:, None]).any(-1)))


def position_agrees(reference: np.ndarray, candidate: np.ndarray, axis: int) -> np.ndarray:
    """Per position: the candidate's arg-max class is the source's, or one the source scores within a tie of its best
    (TIE of the output's range: classes the source itself cannot tell apart beyond half-precision rounding)."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate)
    picked = np.expand_dims(_classes(candidate, axis), axis)
    tie = TIE * float(reference.max() - reference.min())
    return np.squeeze(np.take_along_axis(reference, picked, axis), axis) >= reference.max(axis=axis) - tie


def _agreement(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    return float(np.mean(position_agrees(reference, candidate, options.axis)))


def _sequence(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    """1 when every position's arg-max class is the source's: a tag sequence or CTC path read unchanged."""
    return float(np.all(position_agrees(reference, candidate, options.axis)))


def _exact(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    return float(np.mean(np.asarray(reference) == np.asarray(candidate)))


def ctc_sequences(scores: np.ndarray, options: MetricOptions) -> list[list[int]]:
    """Greedy CTC decoding of per-step class scores: arg-max per step, repeats merged, blanks dropped.

    Batch-major [N, T, C] and time-major [T, N, C] outputs both decode: after the arg-max, a size-1 axis is the
    batch; otherwise rows are sequences.
    """
    best = _classes(scores, options.axis)
    best = best.reshape(1, -1) if best.ndim < 2 else best.reshape(-1, best.shape[-1]) if best.ndim > 2 else best
    if best.shape[1] == 1 and best.shape[0] > 1:  # time-major with one sequence
        best = best.T
    sequences = []
    for row in best:
        keep = (row != options.blank) & np.concatenate(([True], row[1:] != row[:-1]))
        sequences.append(row[keep].tolist())
    return sequences


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (class indices, or text): insertions, deletions, substitutions."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _ctc_exact(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    pairs = zip(ctc_sequences(reference, options), ctc_sequences(candidate, options))
    return float(np.mean([want == got for want, got in pairs]))


def _ctc_edit(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    pairs = zip(ctc_sequences(reference, options), ctc_sequences(candidate, options))
    return float(np.mean([1.0 - edit_distance(want, got) / max(len(want), len(got), 1) for want, got in pairs]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _mask_iou(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    """A single-channel map thresholded (default 0.5): IoU of the masks; class scores: mean IoU of each class's
    arg-max mask over the classes either output shows."""
    axis = options.axis % reference.ndim
    if reference.shape[axis] == 1 or options.threshold is not None:
        threshold = 0.5 if options.threshold is None else options.threshold
        return _iou(reference > threshold, candidate > threshold)
    want, got = _classes(reference, axis), _classes(candidate, axis)
    present = np.union1d(np.unique(want), np.unique(got))
    return float(np.mean([_iou(want == c, got == c) for c in present]))


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` [M, 4] with every box of `b` [K, 4], boxes as x1 y1 x2 y2."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=-1)
    area = lambda boxes: np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-30), 0.0)


def matched_box_iou(reference: np.ndarray, candidate: np.ndarray) -> float:
    """How well two box sets agree: the mean best IoU of each box with the other set, both ways (a missed or an extra
    box scores 0); two empty sets agree."""
    reference, candidate = np.asarray(reference).reshape(-1, 4), np.asarray(candidate).reshape(-1, 4)
    if not len(reference) and not len(candidate):
        return 1.0
    if not len(reference) or not len(candidate):
        return 0.0
    ious = box_iou_matrix(reference, candidate)
    return float((ious.max(axis=1).sum() + ious.max(axis=0).sum()) / (len(reference) + len(candidate)))


def _cosine(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    want, got = (np.asarray(a, np.float64).reshape(-1) for a in (reference, candidate))
    norms = np.linalg.norm(want) * np.linalg.norm(got)
    return float(want @ got / norms) if norms > 0 else float(np.array_equal(want, got))


def _relative_error(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    want, got = (np.asarray(a, np.float64).reshape(-1) for a in (reference, candidate))
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12))


def _mse(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    return float(np.mean((np.asarray(candidate, np.float64) - np.asarray(reference, np.float64)) ** 2))


def _max_abs(reference: np.ndarray, candidate: np.ndarray, options: MetricOptions) -> float:
    return float(np.max(np.abs(np.asarray(candidate, np.float64) - np.asarray(reference, np.float64)), initial=0.0))


METRICS = {metric.name: metric for metric in (
    TaskMetric("top1", "agreement", True, "the candidate's top-1 class is the source's", _top_k),
    TaskMetric("agreement", "agreement", False, "share of positions whose arg-max class is the source's", _agreement),
    TaskMetric("sequence", "agreement", True, "every position's arg-max class is the source's (or tied with it there)", _sequence),
    TaskMetric("ctc", "agreement", True, "the greedy CTC text equals the source's", _ctc_exact),
    TaskMetric("ctc-edit", "agreement", False, "1 - edit distance of the greedy CTC text to the source's, normalised",
               _ctc_edit),
    TaskMetric("mask-iou", "agreement", False, "IoU of the mask with the source's", _mask_iou),
    TaskMetric("box-iou", "agreement", False, "mean best IoU of the decoded boxes with the source's, both ways",
               lambda reference, candidate, options: matched_box_iou(reference, candidate)),
    TaskMetric("exact", "agreement", False, "share of elements equal to the source's", _exact),
    TaskMetric("cosine", "similarity", False, "cosine of the output to the source's", _cosine),
    TaskMetric("rel-error", "error", False, "L2 norm of the difference over the source output's", _relative_error),
    TaskMetric("mse", "error", False, "mean squared difference", _mse),
    TaskMetric("max_abs", "error", False, "largest absolute difference", _max_abs),
)}
NAMES = (*METRICS, "topK")  # as offered to users: topK is top1 with k classes of the source's allowed


def builtin(name: str) -> TaskMetric | None:
    """The built-in metric called `name` (`top5` is top1 with k = 5), or None for a custom one."""
    match = TOP_K.fullmatch(name)
    if match and int(match.group(1)) >= 1:
        k = int(match.group(1))
        return METRICS["top1"] if k == 1 else TaskMetric(
            name, "agreement", True, f"the candidate's top-1 class is among the source's top {k}",
            lambda reference, candidate, options: _top_k(reference, candidate, replace(options, k=k)))
    return METRICS.get(name)


def top_k(name: str) -> int:
    match = TOP_K.fullmatch(name)
    return int(match.group(1)) if match else 1


def per_sample(metric: TaskMetric, reference: list[np.ndarray], candidate: list[np.ndarray],
               options: MetricOptions) -> np.ndarray:
    """The metric on each sample (one feed's output), as an array."""
    if metric.name == "box-iou":
        raise UserError("box-iou scores decoded boxes: give `decode: file.py:function` (outputs → boxes [M, 4])")
    return np.array([metric.score(np.asarray(want), np.asarray(got), options) for want, got in zip(reference, candidate)])


def labelled_top_k(scores: list[np.ndarray], labels: np.ndarray, options: MetricOptions) -> np.ndarray:
    """Per sample: the label is among the output's top-k classes (accuracy against labels)."""
    values = []
    flat = np.asarray(labels).reshape(len(scores), -1)
    for output, label in zip(scores, flat):
        rows = np.moveaxis(np.asarray(output), options.axis % output.ndim, -1).reshape(-1, output.shape[options.axis])
        top = np.argsort(-rows, axis=-1, kind="stable")[:, : options.k]
        values.append(float(np.mean((top == label[: len(rows), None]).any(-1))))
    return np.array(values)
