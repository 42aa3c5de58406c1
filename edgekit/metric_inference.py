"""What an output is, read from its shape and the source model's values on the evaluation data, and so which metric
judges it when the user names none — said out loud: each choice carries the reason.

Class scores [N, C] → top1; per-position class scores [N, T, C] (sequence labelling, CTC) → `sequence`: a sample
keeps its reading only when every position's arg-max is the source's (one flipped step can change a decoded text);
per-pixel class probabilities [N, C, H, W] → the arg-max masks' IoU; L2-normalised rows → cosine; a single-channel
map in [0, 1] → mask IoU; integers → exact equality; anything else → relative error. Probabilities and
log-probabilities are found on the last axis or axis 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNIT = 1e-3  # how close to 1 a row's sum (probabilities) or L2 norm (embedding) must be


@dataclass(frozen=True, slots=True)
class Inferred:
    """The metric for one output, the axis its classes lie on, and why."""

    metric: str
    axis: int
    reason: str


def _describe(name: str, shape: tuple[int, ...]) -> str:
    return f"output `{name}` [{', '.join(map(str, shape))}]"


def _sums_to_one(values: np.ndarray, axis: int) -> bool:
    return bool(values.min() >= -UNIT and np.all(np.abs(values.sum(axis=axis) - 1) <= UNIT * values.shape[axis] ** 0.5))


def _log_probabilities(values: np.ndarray, axis: int) -> bool:
    if values.max() > UNIT:
        return False
    top = values.max(axis=axis, keepdims=True)
    total = np.log(np.exp(values - top).sum(axis=axis)) + np.squeeze(top, axis)
    return bool(np.all(np.abs(total) <= UNIT * values.shape[axis] ** 0.5))


def _class_axis(stacked: np.ndarray) -> tuple[int, str] | None:
    """The axis of one sample's output (last, else 1) that probabilities or log-probabilities lie on, and which;
    `stacked` is every sample's output along a new first axis."""
    ndim = stacked.ndim - 1
    for axis in dict.fromkeys((ndim - 1, 1 if ndim >= 3 else ndim - 1)):
        if stacked.shape[axis + 1] >= 2:
            if _sums_to_one(stacked, axis + 1):
                return axis, "probabilities"
            if _log_probabilities(stacked, axis + 1):
                return axis, "log-probabilities"
    return None


def infer(name: str, samples: list[np.ndarray], labelled: bool = False) -> Inferred:
    """The metric for output `name` from the source model's values on every evaluation sample (one array each)."""
    first = np.asarray(samples[0])
    shape = first.shape
    where = _describe(name, shape)
    if first.dtype.kind in "biu":
        return Inferred("exact", -1, f"{where} holds {first.dtype} values: compared element by element")
    if first.size <= 1:
        return Inferred("rel-error", -1, f"{where} is one number per sample: judged by relative error")
    same = all(np.shape(sample) == shape for sample in samples)
    stacked = np.stack([np.asarray(sample, np.float64) for sample in (samples if same else samples[:1])])
    with_labels = " (with labels: top-1 accuracy)" if labelled else ""
    found = _class_axis(stacked)
    if found is not None:
        axis, kind = found
        if first.ndim <= 2 and axis == first.ndim - 1:
            return Inferred("top1", -1, f"{where} looks like class {kind}: judged by top-1{with_labels}")
        if first.ndim == 3 and axis == 2:
            return Inferred("sequence", -1, f"{where} looks like per-position class {kind}: a sample keeps its "
                            "reading when every position's arg-max is the source's")
        return Inferred("mask-iou", axis, f"{where} looks like per-pixel class {kind} (axis {axis}): judged by the "
                        "IoU of each class's arg-max mask")
    rows = stacked.reshape(-1, shape[-1])
    if shape[-1] >= 2 and np.all(np.abs(np.linalg.norm(rows, axis=-1) - 1) <= UNIT):
        return Inferred("cosine", -1, f"{where} rows have unit L2 norm: an embedding, judged by cosine")
    if first.ndim >= 3 and 1 in (shape[1], shape[-1]) and stacked.min() >= 0 and stacked.max() <= 1:
        return Inferred("mask-iou", -1, f"{where} is a single-channel map in [0, 1]: judged as a mask (> 0.5) by IoU")
    if first.ndim == 2 and shape[-1] >= 2:
        return Inferred("top1", -1, f"{where} looks like class scores [batch, classes]: judged by top-1{with_labels}")
    if first.ndim == 3 and shape[-1] >= 2:
        return Inferred("sequence", -1, f"{where} looks like per-position class scores: a sample keeps its reading "
                        "when every position's arg-max is the source's")
    return Inferred("rel-error", -1, f"{where} has no class or embedding structure: judged by relative error")
