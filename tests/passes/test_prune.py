"""prune-structured, prune-unstructured, prune-nm on tiny seeded models: shapes, MACs, sparsity, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import small_convnet, tiny_bert, tiny_mlp

from edgekit.data import Dataset
from edgekit.errors import UserError
from edgekit.evaluate import runner_for
from edgekit.ingest.torch import _torch_model
from edgekit.macs import count_macs
from edgekit.model import Model
from edgekit.passes.base import Context, get_pass
from edgekit.schema import build
from edgekit.spec import TensorSpec

ONNX_TOLERANCE = 1e-4  # ONNX Runtime fp32 vs PyTorch, relative to the largest output


def _model(factory, *specs: TensorSpec) -> Model:
    module, _ = factory()
    return _torch_model(module, None, specs, factory.__name__, factory.__name__)


def _cnn() -> Model:
    return _model(small_convnet, TensorSpec("image", ("batch", 1, 16, 16), "float32"))


def _run(name: str, model: Model, params: dict, tmp_path, calibration: Dataset | None = None) -> Model:
    chosen = get_pass(name)
    return chosen.run(model, build(chosen.Config, params, name), Context(tmp_path, calibration=calibration))


def _images(count: int = 32) -> Dataset:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((count, 1, 16, 16)).astype(np.float32)
    return Dataset({"image": images[:, None]}, rng.integers(0, 4, count), "test")


def _assert_onnx_matches(model: Model, tmp_path) -> None:
    """The pruned module exports, and ONNX Runtime gives its outputs."""
    exported = _run("export-onnx", model, {}, tmp_path)
    feed = {spec.name: np.asarray(t) for spec, t in zip(model.inputs, model.example_inputs)}
    want = runner_for(model)(feed)[0]
    got = runner_for(exported)(feed)[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= ONNX_TOLERANCE * np.abs(want).max()


def test_structured_halves_channels_keeps_outputs_and_exports(tmp_path):
    source = _cnn()
    before = {k: v.clone() for k, v in source.module.state_dict().items()}
    pruned = _run("prune-structured", source, {"ratio": 0.5}, tmp_path)
    report = pruned.meta["reports"][-1]
    assert report["layers"]["stem.0"] == {"before": [1, 32], "after": [1, 16]}
    assert report["layers"]["depthwise"]["after"] == [16, 16]  # grouped conv follows its input
    assert pruned.module.depthwise.groups == 16
    assert pruned.module.head.out_features == 4  # the classifier's outputs are kept
    assert report["macs_after"] == count_macs(pruned.module, pruned.example_inputs) < report["macs_before"]
    assert report["params_after"] < report["params_before"] and report["bytes_after"] < report["bytes_before"]
    assert all(torch.equal(before[k], v) for k, v in source.module.state_dict().items())  # input untouched
    _assert_onnx_matches(pruned, tmp_path)


@pytest.mark.parametrize("scope", ["per-layer", "global"])
def test_structured_meets_macs_target(tmp_path, scope):
    source = _cnn()
    pruned = _run("prune-structured", source, {"target_macs_ratio": 0.5, "scope": scope}, tmp_path)
    ratio = count_macs(pruned.module, pruned.example_inputs) / count_macs(source.module, source.example_inputs)
    assert abs(ratio - 0.5) <= 0.05
    assert pruned.meta["reports"][-1]["macs_ratio"] == pytest.approx(ratio, abs=1e-3)


def _kept_stem_channels(source: Model, pruned: Model) -> frozenset[int]:
    """Which of the source stem's output channels the pruned stem kept (matched by their weights)."""
    before = source.module.stem[0].weight.detach().flatten(1)
    after = pruned.module.stem[0].weight.detach().flatten(1)
    return frozenset(int((before - row).abs().sum(dim=1).argmin()) for row in after)


def test_structured_importances_run_iteratively_and_choose_differently(tmp_path):
    kept = {}
    for importance in ("l1", "bn-scale", "taylor"):
        source = _cnn()
        pruned = _run("prune-structured", source, {"ratio": 0.25, "importance": importance, "iterative_steps": 2},
                      tmp_path, _images())
        assert pruned.module.stem[0].out_channels == 24
        assert runner_for(pruned)({"image": np.zeros((3, 1, 16, 16), np.float32)})[0].shape == (3, 4)
        kept[importance] = _kept_stem_channels(source, pruned)
    assert len(set(kept.values())) >= 2  # an ignored option would prune the same channels every time


def test_structured_leaves_ignored_and_unlisted_layers(tmp_path):
    pruned = _run("prune-structured", _cnn(), {"ratio": 0.5, "layers": ["expand"]}, tmp_path)
    assert pruned.module.expand.out_channels == 32
    assert pruned.module.stem[0].out_channels == 32
    kept = _run("prune-structured", _cnn(), {"ratio": 0.5, "ignore": ["pointwise"]}, tmp_path)
    assert kept.module.pointwise.out_channels == 32  # and with it the residual group
    assert kept.module.expand.out_channels == 32


def test_structured_transformer_heads_and_mlp_width(tmp_path):
    source = _model(tiny_bert, TensorSpec("input_ids", ("batch", 8), "int64"))
    pruned = _run("prune-structured", source, {"ratio": 0.5, "heads_ratio": 0.5, "layers": ["*intermediate.dense"]}, tmp_path)
    layer = pruned.module.bert.encoder.layer[0]
    assert layer.intermediate.dense.out_features == 32
    assert layer.attention.self.num_attention_heads == 2
    assert layer.attention.self.query.out_features == 16
    assert layer.attention.output.dense.in_features == 16
    ids = torch.randint(0, 100, (3, 8))
    with torch.no_grad():
        assert pruned.module(ids).shape == source.module(ids).shape == (3, 32)


def test_structured_errors(tmp_path):
    chosen = get_pass("prune-structured")
    with pytest.raises(UserError, match=r"'ratio' = 1.5 is outside \[0.0, 0.95\]"):
        build(chosen.Config, {"ratio": 1.5}, "prune-structured")
    with pytest.raises(UserError, match="did you mean 'taylor'"):
        build(chosen.Config, {"importance": "tayler"}, "prune-structured")
    with pytest.raises(UserError, match="'taylor' needs data"):
        _run("prune-structured", _cnn(), {"importance": "taylor"}, tmp_path)
    with pytest.raises(UserError, match="no layer matches 'nothing'"):
        _run("prune-structured", _cnn(), {"ignore": ["nothing"]}, tmp_path)
    with pytest.raises(UserError, match="no attention"):
        _run("prune-structured", _cnn(), {"heads_ratio": 0.5}, tmp_path)


@pytest.mark.parametrize("scope", ["global", "per-layer"])
def test_unstructured_reaches_sparsity_permanently(tmp_path, scope):
    source = _cnn()
    before = {k: v.clone() for k, v in source.module.state_dict().items()}
    sparse = _run("prune-unstructured", source, {"sparsity": 0.6, "scope": scope, "steps": 3}, tmp_path)
    report = sparse.meta["reports"][-1]
    weights = [m.weight for m in sparse.module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.6, abs=0.01) and report["sparsity"] == pytest.approx(zeros, abs=1e-4)
    if scope == "per-layer":
        assert all(value == pytest.approx(0.6, abs=0.05) for value in report["layer_sparsity"].values())
    assert "no speed" in report["note"]
    assert not any(name.endswith("_orig") for name, _ in sparse.module.named_parameters())  # made permanent
    assert all(torch.equal(before[k], v) for k, v in source.module.state_dict().items())  # input untouched
    _assert_onnx_matches(sparse, tmp_path)


def test_nm_masks_hold_exactly_and_export(tmp_path):
    for source in (_cnn(), _model(tiny_mlp, TensorSpec("features", ("batch", 16), "float32"))):
        sparse = _run("prune-nm", source, {}, tmp_path)
        report = sparse.meta["reports"][-1]
        assert report["pattern"] == "2:4" and "TensorRT" in report["note"]
        layers = dict(sparse.module.named_modules())
        assert report["layer_sparsity"] and set(report["layer_sparsity"]) <= set(layers)
        for name, sparsity in report["layer_sparsity"].items():
            groups = layers[name].weight.detach().movedim(1, -1).reshape(-1, 4)
            assert int((groups != 0).sum(dim=1).max()) <= 2, name
            assert sparsity >= 0.5
        _assert_onnx_matches(sparse, tmp_path)
    assert set(_run("prune-nm", _cnn(), {}, tmp_path).meta["reports"][-1]["skipped"]) == {"stem.0", "depthwise"}


def test_nm_error(tmp_path):
    with pytest.raises(UserError, match="n \\(4\\) must be smaller than m \\(4\\)"):
        _run("prune-nm", _cnn(), {"n": 4, "m": 4}, tmp_path)


def test_reconstruct_refits_the_layer_after_the_pruned_width(tmp_path):
    """Least-squares refit of fc2 on calibration data: held-out MSE falls by over a quarter (measured 0.016 → 0.009)."""
    source = _model(tiny_mlp, TensorSpec("features", ("batch", 16), "float32"))
    rng = np.random.default_rng(0)
    calibration = Dataset({"features": rng.standard_normal((256, 1, 16)).astype(np.float32)}, None, "test")
    held_out = torch.from_numpy(rng.standard_normal((64, 16)).astype(np.float32))
    params = {"ratio": 0.5, "layers": ["fc1"], "calibration_batches": 16}
    plain = _run("prune-structured", source, params, tmp_path, calibration)
    refit = _run("prune-structured", source, {**params, "reconstruct": True}, tmp_path, calibration)
    assert refit.module.fc2.in_features == plain.module.fc2.in_features == 16
    assert torch.equal(refit.module.fc1.weight, plain.module.fc1.weight)  # only the consumer is refit
    with torch.no_grad():
        want = source.module(held_out)
        plain_error = (plain.module(held_out) - want).pow(2).mean()
        refit_error = (refit.module(held_out) - want).pow(2).mean()
    assert refit_error < 0.75 * plain_error
    residual = refit.meta["reports"][-1]["reconstructed"]["fc2"]
    assert 0 <= residual < 1
    with pytest.raises(UserError, match="reconstruct needs data"):
        _run("prune-structured", source, {**params, "reconstruct": True}, tmp_path)
