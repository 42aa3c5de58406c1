"""Accuracy-aware fallback of quantize-static on a model whose plain int8 misses cosine ≥ 0.99."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.errors import FidelityError
from edgekit.ingest.onnx import read_onnx
from edgekit.passes.base import Context, get_pass

MAX_DROP = 0.01  # cosine ≥ 0.99 against the float model


def _quantize(outlier, tmp_path, **params):
    path, data, _ = outlier
    quantize = get_pass("quantize-static")
    return quantize.run(read_onnx(path), quantize.Config(**params), Context(tmp_path, calibration=data, evaluation=data))


def _cosine(path: Path, outlier) -> float:
    _, data, reference = outlier
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": data.arrays["features"][:, 0]})[0]
    return float(((got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)).mean())


def test_plain_static_int8_breaks_the_outlier_model(outlier, tmp_path):
    plain = _quantize(outlier, tmp_path)
    assert _cosine(plain.path, outlier) < 1 - MAX_DROP
    assert "fallback" not in plain.meta


def test_fallback_reverts_the_outlier_layer_and_reports_it(outlier, tmp_path):
    fixed = _quantize(outlier, tmp_path, metric="cosine", max_drop=MAX_DROP)
    assert _cosine(fixed.path, outlier) >= 1 - MAX_DROP
    report = fixed.meta["fallback"]
    assert report["ok"] and report["quantized_value"] < 1 - MAX_DROP <= report["value"]
    reverted = [entry["node"] for entry in report["reverted"]]
    # fc2 (node_linear_1) reads the outlier activation: the most sensitive node, reverted first
    assert reverted[0] == "node_linear_1" and report["reverted"][0]["op_type"] == "Gemm"
    assert report["reverted"][-1]["value_after_revert"] == report["value"]
    import onnx

    graph = onnx.load(str(fixed.path)).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    nodes = {node.name: node for node in graph.node}
    for name in reverted:  # reverted nodes read float tensors; the last layer stays quantized
        assert not any(i in dequantized for i in nodes[name].input)
    assert any(i in dequantized for i in nodes["node_linear_2"].input)


def test_within_tolerance_needs_no_fallback(outlier, tmp_path):
    relaxed = _quantize(outlier, tmp_path, metric="cosine", max_drop=0.5)
    assert relaxed.meta["fallback"]["ok"] and relaxed.meta["fallback"]["reverted"] == []


def test_gives_up_with_a_clear_message_when_the_budget_is_too_small(outlier, tmp_path):
    with pytest.raises(FidelityError, match=r"cosine still drops .* with 1 of \d+ quantized nodes kept in float \(node_linear_1\)"):
        _quantize(outlier, tmp_path, metric="cosine", max_drop=MAX_DROP, max_reverted=1)
