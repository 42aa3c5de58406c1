"""Mixed precision under a budget (passes/mixed.py) on the outlier MLP, whose plain static int8 misses cosine ≥ 0.99:
fc2 reads an activation with one channel ~1000x the others."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgekit.data.dataset import Dataset
from edgekit.errors import FidelityError, UnsupportedOnTarget, UserError
from edgekit.ingest.onnx import read_onnx
from edgekit.passes.base import Context, get_pass

MAX_DROP = 0.01  # cosine ≥ 0.99 against the float model
MODELS = Path(__file__).resolve().parents[1] / "models.py"


def _quantize(outlier, tmp_path, pass_name="quantize-static", **budget):
    path, data, _ = outlier
    quantize = get_pass(pass_name)
    config = quantize.Config(budget=_budget(**budget))
    return quantize.run(read_onnx(path), config, Context(tmp_path, calibration=data, evaluation=data))


def _budget(**fields):
    from edgekit.intent import Budget

    return Budget(**fields)


def _cosines(path: Path, outlier) -> np.ndarray:
    _, data, reference = outlier
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"features": data.arrays["features"][:, 0]})[0]
    return (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)


def test_max_drop_promotes_the_outlier_layer_until_mean_and_worst_hold(outlier, tmp_path):
    mixed = _quantize(outlier, tmp_path, max_drop=MAX_DROP, worst=MAX_DROP, metric="cosine")
    cosines = _cosines(mixed.path, outlier)
    assert cosines.mean() >= 1 - MAX_DROP and cosines.min() >= 1 - MAX_DROP - 1e-4
    plan = mixed.meta["precision_plan"]
    first, chosen = plan["candidates"][0], plan["candidates"][plan["chosen"]]
    assert first["promoted"] == 0 and not first["ok"] and chosen["ok"]  # all-int8 missed; the choice holds
    # fc2 (node_linear_1) reads the outlier activation: it adds the most noise at int8, so it is promoted first
    layers = {layer["node"]: layer for layer in plan["layers"]}
    assert plan["layers"][0]["node"] == "node_linear_1" and "node_linear_1" in plan["promoted"]
    assert layers["node_linear_1"]["noise_added_at_base"] == max(layer["noise_added_at_base"] for layer in plan["layers"])
    # what each layer saved: 3/4 of its fp32 weight bytes in int8, nothing in fp32
    for layer in plan["layers"]:
        saved = layer["weight_bytes_saved"]
        assert saved == (0 if layer["precision"] == "fp32" else layer["weight_bytes_fp32"] - layer["weight_bytes_fp32"] // 4)
    assert layers["node_linear"]["weight_bytes_fp32"] == (16 * 32 + 32) * 4  # fc1's weight and bias
    assert plan["measured"]["size_mb"] == mixed.path.stat().st_size / 1e6
    json.dumps(plan)  # the manifest stores it as it is


def test_size_budget_promotes_only_what_fits(outlier, tmp_path):
    plain = get_pass("quantize-static")
    path, data, _ = outlier
    int8 = plain.run(read_onnx(path), plain.Config(), Context(tmp_path / "int8", calibration=data, evaluation=data))
    budget_mb = (int8.path.stat().st_size + 2000) / 1e6  # room for a promotion or two, not for every layer in float
    mixed = _quantize(outlier, tmp_path, size_mb=budget_mb, metric="cosine")
    assert mixed.path.stat().st_size <= budget_mb * 1e6
    plan = mixed.meta["precision_plan"]
    assert plan["promoted"] and max(candidate["size_mb"] for candidate in plan["candidates"]) > budget_mb  # one was refused
    assert _cosines(mixed.path, outlier).mean() > _cosines(int8.path, outlier).mean()


def test_a_budget_below_the_cheapest_plan_is_refused_with_what_was_measured(outlier, tmp_path):
    with pytest.raises(FidelityError, match=r"budget latency_ms 0\.001: even every layer at its cheapest precision "
                                            r"measures [0-9.]+ MB, [0-9.]+ ms here"):
        _quantize(outlier, tmp_path, latency_ms=0.001)


def test_an_unbounded_latency_promotes_every_layer_to_float(outlier, tmp_path):
    mixed = _quantize(outlier, tmp_path, latency_ms=1e6, metric="cosine")
    plan = mixed.meta["precision_plan"]
    assert plan["base"] == "int8-static" and set(plan["promoted"].values()) == {"fp32"}
    assert _cosines(mixed.path, outlier).min() > 0.99999  # every layer back in float


def test_budget_errors_are_one_line(outlier, tmp_path):
    with pytest.raises(UserError, match="budget: give exactly one of max_drop, size_mb, latency_ms"):
        _quantize(outlier, tmp_path, max_drop=0.01, size_mb=1.0)
    with pytest.raises(UserError, match="worst bounds the worst sample's drop together with max_drop"):
        _quantize(outlier, tmp_path, size_mb=1.0, worst=0.01)


def test_a_recipe_budget_reaches_the_target_quantizer_or_is_refused(outlier, tmp_path):
    from edgekit.intent import lower_intent, parse_intent
    from edgekit.target import load_target

    intent = parse_intent({"quantize": {"precision": "int8", "scheme": "static", "budget": {"max_drop": 0.01}}}, "recipe")
    steps, _ = lower_intent(intent, load_target("cpu-openvino"))
    assert steps[-1].config.budget.max_drop == 0.01
    with pytest.raises(UnsupportedOnTarget, match="has no per-layer mixed precision, so no budget"):
        lower_intent(intent, load_target("mobile-tflite"))


def test_openvino_mixed_compile_holds_the_budget(outlier, tmp_path, capsys):
    """End to end through compile on cpu-openvino: NNCF quantizes with the promoted ops in its ignored scope."""
    from edgekit import compile as compile_model
    from edgekit.package import read_package
    from edgekit.spec import parse_input_spec

    _, data, _ = outlier
    npz = tmp_path / "features.npz"
    np.savez(npz, features=data.arrays["features"][:, 0])
    recipe = tmp_path / "mixed.yaml"
    recipe.write_text("name: mixed\nprecision: int8\nsteps:\n  - quantize: {precision: int8, scheme: static, "
                      "budget: {max_drop: 0.01, metric: cosine}}\nevaluate: {metric: cosine, max_drop: 0.01}\n")
    compile_model(f"{MODELS}:outlier_mlp", "cpu-openvino", tmp_path / "pkg", recipe, calib=npz, eval=npz,
                  inputs=(parse_input_spec("features:batchx16:float32"),), bench_runs=5, cache_dir=tmp_path / "cache")
    manifest = read_package(tmp_path / "pkg").manifest
    plan = manifest.precision_plan
    assert plan["objective"] == "max_drop" and plan["promoted"] and set(plan["promoted"].values()) == {"fp32"}
    assert manifest.metrics.verdict.ok and manifest.metrics.verdict.value >= 1 - MAX_DROP
    from edgekit.console import show_precision_plan

    capsys.readouterr()
    show_precision_plan(plan)  # compile's summary line
    assert capsys.readouterr().out.startswith(f"mixed precision (max_drop 0.01, metric cosine): {len(plan['promoted'])} of "
                                              f"{len(plan['layers'])} quantized layers kept in fp32 after "
                                              f"{len(plan['candidates'])} candidates")


def test_dynamic_base_promotes_matmuls_to_float_and_records_the_saving(tmp_path):
    """A token MLP (3-D input: Linear exports as MatMul): dynamic int8 MatMuls, promoted while the latency allows."""
    from models import token_mlp

    module, _ = token_mlp()
    path = tmp_path / "tokens.onnx"
    torch.onnx.export(module, (torch.randn(1, 8, 64),), str(path), dynamo=True, input_names=["tokens"],
                      output_names=["out"], external_data=False)
    rows = np.random.default_rng(0).standard_normal((16, 1, 8, 64)).astype(np.float32)
    data = Dataset({"tokens": rows}, None, "seeded")
    quantize = get_pass("quantize-dynamic")
    model = read_onnx(path)
    mixed = quantize.run(model, quantize.Config(budget=_budget(latency_ms=1e6, metric="cosine")),
                         Context(tmp_path / "work", calibration=data, evaluation=data))
    plan = mixed.meta["precision_plan"]
    first = plan["candidates"][0]
    assert plan["base"] == "int8-dynamic" and first["promoted"] == 0 and first["worst"] < 1.0
    matmuls = [layer for layer in plan["layers"] if layer["op"] == "MatMul"]
    assert len(matmuls) == 2 and all(layer["precision"] == "fp32" and layer["weight_bytes_saved"] == 0 for layer in matmuls)
    session = ort.InferenceSession(str(mixed.path), providers=["CPUExecutionProvider"])
    assert {node.op_type for node in onnx.load(str(mixed.path)).graph.node}.isdisjoint({"MatMulInteger"})
    with torch.no_grad():
        expected = module(torch.from_numpy(rows[0])).numpy()
    np.testing.assert_allclose(session.run(None, {"tokens": rows[0]})[0], expected, rtol=1e-4, atol=1e-4)
