"""Accuracy-aware fallback: revert the most sensitive quantized nodes to float until within tolerance."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit.errors import FidelityError
from edgekit.evaluate import collect, runner_for
from edgekit.ingest.onnx import load_graph, onnx_files
from edgekit.metrics import Evaluation, Verdict, compare, verdict
from edgekit.model import Model

if TYPE_CHECKING:
    from edgekit.target import Target

# quantize(excluded node names, only these nodes or None for all) → path of the quantized model
Quantizer = Callable[[Sequence[str], Sequence[str] | None], Path]


@dataclass(frozen=True)
class Scorer:
    """Scores a quantized file against the float model's outputs on fixed feeds."""

    model: Model
    feeds: list[dict[str, np.ndarray]]
    labels: np.ndarray | None
    evaluation: Evaluation
    reference: list[list[np.ndarray]]
    target: Target | None = None  # candidates are opened with its options: scored as the package will run

    @classmethod
    def of(cls, model: Model, feeds: list[dict[str, np.ndarray]], labels: np.ndarray | None,
           evaluation: Evaluation, target: Target | None = None) -> Scorer:
        return cls(model, feeds, labels, evaluation, collect(runner_for(model, target=target), feeds), target)

    def __call__(self, path: Path) -> Verdict:
        candidate = collect(runner_for(self.model.derive(files=onnx_files(path)), target=self.target), self.feeds)
        names = tuple(spec.name for spec in self.model.outputs)
        return verdict(compare(self.reference, candidate, self.labels, self.evaluation, names), self.evaluation)


def quantized_nodes(float_path: Path, quantized_path: Path, excluded: Sequence[str]) -> list[tuple[str, str]]:
    """(name, op type) of the float graph's nodes that quantization touched.

    A node counts when it is gone from the quantized graph (QOperator replaced it, or a QDQ
    pattern absorbed it) or, still there, reads a DequantizeLinear output (QDQ).
    """
    source = load_graph(float_path).graph
    result = load_graph(quantized_path).graph
    dequantized = {out for node in result.node if node.op_type == "DequantizeLinear" for out in node.output}
    kept = {node.name: node for node in result.node}
    touched = []
    for node in source.node:
        if node.name in excluded or not node.name:
            continue
        after = kept.get(node.name)
        if after is None or any(name in dequantized for name in after.input):
            touched.append((node.name, node.op_type))
    return touched


def within_tolerance(model: Model, quantize: Quantizer, score: Scorer, max_reverted: int | None,
                     log: logging.Logger) -> tuple[Path, dict]:
    """Quantize everything; if the metric misses, revert nodes (most sensitive first) until it holds.

    Sensitivity of a node = the metric's drop when only that node is quantized. Returns the
    chosen file and a report: the metric before and after, and each reverted node with its cost.
    Raises FidelityError when `max_reverted` nodes (default: half of them) in float still miss.
    """
    full = quantize((), None)
    first = score(full)
    report = {"metric": first.metric, "limit": first.limit, "reference": first.reference, "quantized_value": first.value,
              "value": first.value, "ok": first.ok, "reverted": [], "ranked": 0}
    if first.ok:
        return full, report
    candidates = quantized_nodes(model.path, full, ())
    budget = max(1, len(candidates) // 2) if max_reverted is None else max_reverted
    log.warning("quantize-static: %s dropped %.4g (limit %s); ranking %d quantized nodes by sensitivity",
                first.metric, first.drop, first.limit, len(candidates))
    sensitivity = [(score(quantize((), (name,))).drop, name, op) for name, op in candidates]
    ranked = sorted(sensitivity, key=lambda item: -item[0])
    report["ranked"] = len(ranked)
    reverted: list[str] = []
    previous, current = first, first
    path = full
    for drop_alone, name, op in ranked[:budget]:
        reverted.append(name)
        path = quantize(tuple(reverted), None)
        current = score(path)
        report["reverted"].append({"node": name, "op_type": op, "drop_when_only_this_quantized": drop_alone,
                                   "value_after_revert": current.value, "gain": previous.drop - current.drop})
        previous = current
        if current.ok:
            break
    report.update(value=current.value, ok=current.ok)
    if not current.ok:
        raise FidelityError(
            f"quantize-static: {current.metric} still drops {current.drop:.4g} (limit {current.limit}) with "
            f"{len(reverted)} of {len(candidates)} quantized nodes kept in float ({', '.join(reverted)}); "
            f"raise max_reverted, loosen max_drop, or use a float/dynamic recipe"
        )
    log.warning("quantize-static: kept %d node(s) in float to stay within tolerance: %s", len(reverted), ", ".join(reverted))
    return path, report
