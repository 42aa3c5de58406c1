"""Score a model against its source: fidelity (cosine, errors, top-1 agreement) and task accuracy."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from edgekit.errors import FidelityError
from edgekit.model import Format, Model
from edgekit.recipe import Evaluation

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]

# which runtime backend runs a model file of each format
RUNTIME_OF_FORMAT = {Format.ONNX: "onnxruntime", Format.OPENVINO: "openvino"}


def runner_for(model: Model, threads: int | None = None) -> Runner:
    """A function feed → outputs (in the order of `model.outputs`) for any model format."""
    if model.format.in_memory:
        return _torch_runner(model)
    from edgekit.runtime import open_model

    session = open_model(RUNTIME_OF_FORMAT[model.format], model.files, model.inputs, model.outputs, {}, threads)
    return lambda feed: list(session.run(feed).values())


def _torch_runner(model: Model) -> Runner:
    import torch

    module = model.module.module() if model.format is Format.EXPORTED else model.module

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(feed[spec.name])) for spec in model.inputs]
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
            labels: np.ndarray | None = None) -> dict:
    """Fidelity of `candidate` to `reference` (samples × outputs), on the first output; accuracy when labelled."""
    ref = np.concatenate([_rows(sample[0]) for sample in reference])
    got = np.concatenate([_rows(sample[0]) for sample in candidate])
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cosine = np.where(norms > 0, (ref * got).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
    metrics = {
        "samples": int(len(ref)),
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
    return metrics


def _rows(array: np.ndarray) -> np.ndarray:
    """Per-sample rows: a batch's leading axis stays, the rest is flattened."""
    array = np.asarray(array, dtype=np.float64)
    return array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)


@dataclass(frozen=True)
class Verdict:
    metric: str
    value: float
    reference: float | None
    drop: float
    limit: float | None

    @property
    def ok(self) -> bool:
        return self.limit is None or self.drop <= self.limit

    def to_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value, "reference": self.reference,
                "drop": self.drop, "limit": self.limit, "ok": self.ok}


def verdict(metrics: dict, evaluation: Evaluation) -> Verdict:
    """The recipe's metric and how far the compiled model fell from the source on it."""
    metric = evaluation.metric
    if metric == "auto":
        metric = "top1" if "top1_agreement" in metrics else "cosine"
    if metric == "top1":
        if "accuracy" in metrics:
            value, reference = metrics["accuracy"], metrics["reference_accuracy"]
        else:
            value, reference = metrics.get("top1_agreement", 0.0), 1.0
    elif metric == "cosine":
        value, reference = metrics["cosine_mean"], 1.0
    else:
        value, reference = metrics[metric], 0.0
    drop = (reference - value) if metric in ("top1", "cosine") else value
    limit = evaluation.max_drop
    if limit is not None and evaluation.relative and reference:
        limit = limit * abs(reference)
    return Verdict(metric, value, reference, drop, limit)


class FidelityCheck:
    """Instrument: a step whose pass promises a tolerance must keep outputs within it."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds

    def before_step(self, step, model: Model) -> None:
        pass

    def after_step(self, step, before: Model, after: Model, record) -> None:
        from edgekit.passes.base import get_pass

        tolerance = get_pass(step.step.pass_name).tolerance
        if tolerance is None or record.cached or not self.feeds:
            return
        metrics = compare(collect(runner_for(before), self.feeds), collect(runner_for(after), self.feeds))
        record.details["fidelity"] = metrics
        if metrics["max_rel"] > tolerance:
            raise FidelityError(
                f"step '{step.step.pass_name}' changed the outputs by {metrics['max_rel']:.2e} relative "
                f"(max abs {metrics['max_abs']:.2e}), over its tolerance {tolerance:.0e}: the result would be wrong"
            )
