"""qat: fake int8 while training (weights on their per-channel grid, inputs rounded to their range), the loss falls,
nothing of it is left in the module handed on, an interrupted run resumes, qat-int8 compiles for cpu-ort, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CNN_INPUT, MODELS
from models import tiny_mlp

from edgekit.compiler import compile
from edgekit.data import Dataset
from edgekit.errors import UserError
from edgekit.ingest.torch import _torch_model
from edgekit.model import Model
from edgekit.passes.base import Context, SilentProgress, get_pass
from edgekit.passes.qat import INPUT_QUANT, Scheme, calibrate, prepare, strip
from edgekit.schema import build
from edgekit.spec import TensorSpec, parse_input_spec

SPEC = TensorSpec("features", ("batch", 16), "float32")


def _teacher() -> Model:
    module, _ = tiny_mlp()
    return _torch_model(module, None, (SPEC,), "tiny_mlp", "tiny_mlp")


def _student(teacher: Model) -> Model:
    """The teacher with its weights perturbed: training must pull it back (as after pruning)."""
    module, _ = tiny_mlp()
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return teacher.derive(module=module)


def _data(count: int = 64) -> Dataset:
    features = np.random.default_rng(0).standard_normal((count, 1, 16)).astype(np.float32)
    return Dataset({"features": features}, None, "test")


def _qat(model: Model, params: dict, ctx: Context) -> Model:
    chosen = get_pass("qat")
    return chosen.run(model, build(chosen.Config, params, "qat"), ctx)


def _on_grid(weight: torch.Tensor, weight_max: int) -> None:
    """Each output channel is an integer multiple of its absmax / weight_max, the absmax itself ±weight_max steps."""
    flat = weight.detach().reshape(len(weight), -1)
    steps = flat / (flat.abs().amax(dim=1, keepdim=True) / weight_max)
    assert torch.allclose(steps, steps.round(), atol=1e-3)
    assert torch.equal(steps.abs().amax(dim=1).round(), torch.full((len(flat),), float(weight_max)))


def test_fake_quantization_rounds_weights_and_inputs():
    module, _ = tiny_mlp()
    reference = module(torch.from_numpy(_data().arrays["features"][:, 0])).detach()
    float_weight = module.fc1.weight.detach().clone()
    prepared = prepare(module, Scheme(127, False, "test"))
    calibrate(module, _data(), _teacher(), build(get_pass("qat").Config, {}, "qat"), torch.device("cpu"))
    _on_grid(module.fc1.weight, 127)  # the layer computes with rounded weights
    step = float_weight.abs().amax(dim=1, keepdim=True) / 127
    assert 0 < (module.fc1.weight - float_weight).abs().max() and ((module.fc1.weight - float_weight).abs() <= step / 2 + 1e-7).all()
    quant = getattr(module.fc1, INPUT_QUANT)
    features = torch.from_numpy(_data().arrays["features"][:, 0])
    assert features.min() < 0 < features.max()  # asymmetric range from the data: zero point inside
    rounded = quant(features)
    assert float(quant.scale) == pytest.approx(float(features.max() - features.min()) / 255, rel=1e-5)
    assert 0 < (rounded - features).abs().max() <= float(quant.scale) / 2 + 1e-6
    out = module(features).detach()  # under fake quant: off the float outputs by about the int8 rounding
    error = float((out - reference).abs().max() / reference.abs().max())
    assert 1e-4 < error < 0.05
    strip(prepared)
    assert type(module.fc1) is torch.nn.Linear and not hasattr(module.fc1, INPUT_QUANT)
    assert not module.fc1._forward_pre_hooks and "parametrizations" not in dict(module.named_modules())
    _on_grid(module.fc1.weight, 127)


def test_qat_trains_under_fake_quant_and_hands_on_a_plain_module(tmp_path):
    teacher, data = _teacher(), _data()
    student = _student(teacher)
    ctx = Context(tmp_path, calibration=data, evaluation=data, source=teacher)
    trained = _qat(student, {"steps": 40, "lr": 3e-3, "eval_every": 20, "weight_bits": 7}, ctx)
    report = trained.meta["reports"][-1]
    assert report["pass"] == "qat" and report["steps"] == 40 and report["layers"] == 2
    assert report["final_loss"] < 0.5 * report["first_loss"]
    fidelity = report["fake_quant_fidelity"]
    assert fidelity["before"]["step"] == 0 and fidelity["after"]["step"] == 40
    assert fidelity["after"]["value"] > fidelity["before"]["value"] + 0.005
    assert report["scheme"]["weights"] == "per-channel symmetric [-64, 64]" and "weight_bits 7 set" in report["scheme"]["why"]
    features = torch.from_numpy(data.arrays["features"][:, 0])
    with torch.no_grad():  # the before score was taken under fake quantization, not on the float student
        floats = torch.nn.functional.cosine_similarity(student.module(features), teacher.module(features)).mean()
    assert abs(float(floats) - fidelity["before"]["value"]) > 1e-5
    module = trained.module
    assert {type(layer) for layer in module.modules()} == {type(module), torch.nn.Linear}
    assert not any(layer._forward_pre_hooks for layer in module.modules())
    assert set(module.state_dict()) == set(student.module.state_dict())
    _on_grid(module.fc1.weight, 64)
    _on_grid(module.fc2.weight, 64)
    assert not hasattr(student.module.fc1, "parametrizations")  # the input model is untouched


class _Interrupt(SilentProgress):
    def __init__(self, after: int) -> None:
        self.after, self.seen = after, 0

    def advance(self, amount: int = 1) -> None:
        self.seen += amount
        if self.seen > self.after:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    teacher, data = _teacher(), _data()
    params = {"steps": 8, "lr": 3e-3, "checkpoint_every": 2, "seed": 3}
    whole = _qat(_student(teacher), params, Context(tmp_path, calibration=data, source=teacher,
                                                     checkpoints=tmp_path / "whole"))
    resumable = Context(tmp_path, calibration=data, source=teacher, checkpoints=tmp_path / "parts",
                        progress=_Interrupt(after=5))
    with pytest.raises(KeyboardInterrupt):
        _qat(_student(teacher), params, resumable)
    resumable.progress = SilentProgress()
    resumed = _qat(_student(teacher), params, resumable)
    assert resumed.meta["reports"][-1]["resumed_from"] == 4
    for (name, a), (_, b) in zip(whole.module.state_dict().items(), resumed.module.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def _requantization_error(dump: Path) -> float:
    """The largest change quantize-static made to a weight (its int8 × scale vs the float it was given, relative to
    the tensor's absmax), from the steps a DumpSteps instrument wrote (BN already folded into the float ones)."""
    import onnx
    from onnx import numpy_helper

    given, quantized = (onnx.load(next(dump.glob(f"*-{step}")) / "model.onnx") for step in ("optimize-onnx", "quantize-static"))
    floats = {init.name: numpy_helper.to_array(init) for init in given.graph.initializer}
    stored = {init.name: numpy_helper.to_array(init) for init in quantized.graph.initializer}
    worst = []
    for node in quantized.graph.node:
        if node.op_type == "DequantizeLinear" and stored.get(node.input[0], np.zeros(0)).dtype == np.int8:
            weight, scale = stored[node.input[0]], stored[node.input[1]]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * weight.ndim
            shape[axis] = -1
            original = floats[node.output[0].removesuffix("_DequantizeLinear_Output")]
            worst.append(float(np.abs(weight * scale.reshape(shape) - original).max() / np.abs(original).max()))
    assert len(worst) == 3  # conv1, conv2, head
    return max(worst)


def test_qat_int8_on_cpu_ort_keeps_what_plain_int8_keeps(tmp_path, cnn_source, cnn_data):
    from edgekit.instruments import DumpSteps

    recipe = tmp_path / "qat-short.yaml"  # the recipe's own, fewer steps
    text = (MODELS.parents[1] / "recipes" / "qat-int8.yaml").read_text()
    recipe.write_text(text.replace("name: qat-int8", "name: qat-short").replace("steps: 300", "steps: 30"))
    built = {}
    for name in ("int8", str(recipe)):
        built[name] = compile(cnn_source, "cpu-ort", tmp_path / f"pkg-{len(built)}", name, cnn_data, cnn_data,
                              (parse_input_spec(CNN_INPUT),), cache_dir=tmp_path / "cache", bench_runs=2,
                              instruments=(DumpSteps(tmp_path / f"steps-{len(built)}"),)).package
    # qat's weights lie on the grid ORT's per-channel int8 computes from them (through BN folding): kept to float
    # rounding, where plain int8 rounds each by up to half a step (1/254 of the absmax)
    assert _requantization_error(tmp_path / "steps-1") < 1e-5 < 1e-3 < _requantization_error(tmp_path / "steps-0")
    plain, qat = (json.loads((built[name] / "manifest.json").read_text()) for name in ("int8", str(recipe)))
    report = next(r for r in qat["reports"] if r["pass"] == "qat")
    assert report["steps"] == 30 and report["scheme"]["why"].startswith("target cpu-ort: quantize-static on ")
    passes = [step["pass"] for step in qat["steps"]]
    assert passes[0] == "qat" and passes[-1] == "quantize-static" and qat["precision"] == "int8"
    # 64 samples: one changed prediction is 1/64; the cosine may move by int8 noise either way
    assert qat["metrics"]["fidelity"]["top1_agreement"] >= plain["metrics"]["fidelity"]["top1_agreement"] - 2 / 64
    assert qat["metrics"]["fidelity"]["cosine_mean"] >= plain["metrics"]["fidelity"]["cosine_mean"] - 0.01


def test_bad_config_and_missing_inputs_are_one_line(tmp_path):
    chosen = get_pass("qat")
    with pytest.raises(UserError, match="parameter 'weight_bits'.*one of 'auto', 8, 7"):
        build(chosen.Config, {"weight_bits": 6}, "recipe r, step 1 (qat)")
    with pytest.raises(UserError, match="unknown parameter 'student'"):
        build(chosen.Config, {"student": "x.py:f"}, "recipe r, step 1 (qat)")
    teacher = _teacher()
    with pytest.raises(UserError, match="^qat needs real training data: give --calib DATA"):
        _qat(teacher, {}, Context(tmp_path, source=teacher))
    with pytest.raises(UserError, match="^qat: kl_weight, mse_weight and ce_weight are all 0"):
        _qat(teacher, {"mse_weight": 0.0}, Context(tmp_path, calibration=_data(), source=teacher))
    pooled = teacher.derive(module=torch.nn.Sequential(torch.nn.ReLU()))
    with pytest.raises(UserError, match="^qat: the model has no Linear or Conv layer to quantize$"):
        _qat(pooled, {}, Context(tmp_path, calibration=_data(), source=teacher))
