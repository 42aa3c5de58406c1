"""distill: loss falls on a tiny task, an interrupted run resumes to the same weights, the compile wiring, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import MODELS
from models import tiny_mlp

from edgekit.compiler import compile
from edgekit.data import Dataset
from edgekit.errors import UserError
from edgekit.ingest.torch import _torch_model
from edgekit.model import Model
from edgekit.passes.base import Context, SilentProgress, get_pass
from edgekit.schema import build
from edgekit.spec import TensorSpec

SPEC = TensorSpec("features", ("batch", 16), "float32")


def _teacher() -> Model:
    module, _ = tiny_mlp()
    return _torch_model(module, None, (SPEC,), "tiny_mlp", "tiny_mlp")


def _student(teacher: Model) -> Model:
    """The teacher with its weights scrambled: it must learn the teacher's outputs back."""
    module, _ = tiny_mlp()
    torch.manual_seed(1)
    for parameter in module.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    return teacher.derive(module=module)


def _data(count: int = 64, labels: bool = False) -> Dataset:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((count, 1, 16)).astype(np.float32)
    return Dataset({"features": features}, rng.integers(0, 4, count) if labels else None, "test")


def _distill(student: Model, params: dict, ctx: Context) -> Model:
    chosen = get_pass("distill")
    return chosen.run(student, build(chosen.Config, params, "distill"), ctx)


def _agreement(model: Model, teacher: Model, data: Dataset) -> float:
    features = torch.from_numpy(data.arrays["features"][:, 0])
    with torch.no_grad():
        return float(torch.nn.functional.cosine_similarity(model.module(features), teacher.module(features)).mean())


def test_distill_reduces_loss_and_moves_towards_teacher(tmp_path):
    teacher, data = _teacher(), _data()
    student = _student(teacher)
    ctx = Context(tmp_path, calibration=data, evaluation=data, source=teacher)
    trained = _distill(student, {"epochs": 10, "batch_size": 16, "lr": 1e-2, "mse_weight": 1.0}, ctx)
    report = trained.meta["reports"][-1]
    assert report["steps"] == 40 and report["device"] == "cpu"
    assert report["final_loss"] < 0.5 * report["first_loss"]
    assert _agreement(trained, teacher, data) > _agreement(student, teacher, data) + 0.1
    assert report["evaluations"][-1]["name"] == "cosine"  # no labels: scored against the teacher
    assert all(torch.equal(a, b) for a, b in zip(student.module.parameters(), _student(teacher).module.parameters()))


class _Interrupt(SilentProgress):
    """Stops the run like Ctrl-C after `after` training steps."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.seen = 0

    def advance(self, amount: int = 1) -> None:
        self.seen += amount
        if self.seen > self.after:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    teacher, data = _teacher(), _data(labels=True)
    params = {"steps": 12, "batch_size": 16, "lr": 1e-2, "ce_weight": 0.5, "checkpoint_every": 2, "seed": 3}
    whole = _distill(_student(teacher), params, Context(tmp_path, calibration=data, source=teacher,
                                                         checkpoints=tmp_path / "whole"))
    resumable = Context(tmp_path, calibration=data, source=teacher, checkpoints=tmp_path / "parts",
                        progress=_Interrupt(after=7))
    with pytest.raises(KeyboardInterrupt):
        _distill(_student(teacher), params, resumable)
    resumable.progress = SilentProgress()
    resumed = _distill(_student(teacher), params, resumable)
    report = resumed.meta["reports"][-1]
    assert report["resumed_from"] == 6 and report["steps"] == 12
    for (name, a), (_, b) in zip(whole.module.state_dict().items(), resumed.module.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    again = _distill(_student(teacher), params, resumable)  # a finished run is not redone
    assert again.meta["reports"][-1]["resumed_from"] == 12


def test_a_corrupt_checkpoint_restarts_the_run(tmp_path, caplog):
    teacher, data = _teacher(), _data(labels=True)
    params = {"steps": 4, "batch_size": 16, "lr": 1e-2, "seed": 3}
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "checkpoint.pt").write_bytes(b"garbage" * 10)  # a disk error, a killed write of an old edgekit
    with caplog.at_level("WARNING", logger="edgekit"):
        trained = _distill(_student(teacher), params, Context(tmp_path, calibration=data, source=teacher,
                                                              checkpoints=tmp_path / "ck"))
    assert "is corrupt or does not fit this run (not a plain weights file): starting afresh" in caplog.text
    report = trained.meta["reports"][-1]
    assert report["steps"] == 4 and not report.get("resumed_from")


def test_early_stopping_and_student_factory(tmp_path):
    teacher, data = _teacher(), _data(labels=True)
    ctx = Context(tmp_path, calibration=data, evaluation=data, source=teacher)
    trained = _distill(teacher, {"epochs": 50, "batch_size": 32, "lr": 1e-6, "eval_every": 1, "patience": 2,
                                 "student": f"{MODELS}:tiny_mlp"}, ctx)
    report = trained.meta["reports"][-1]
    assert report["stopped_early"] and report["steps"] < 100
    assert report["evaluations"][0]["name"] == "accuracy"


def test_distill_errors(tmp_path):
    teacher, data = _teacher(), _data()
    with pytest.raises(UserError, match="no teacher"):
        _distill(teacher, {"steps": 1}, Context(tmp_path, calibration=data))
    with pytest.raises(UserError, match="all 0"):
        _distill(teacher, {"kl_weight": 0.0}, Context(tmp_path, calibration=data, source=teacher))
    with pytest.raises(UserError, match="only ce_weight is set but test has no labels"):
        _distill(teacher, {"ce_weight": 1.0, "kl_weight": 0.0}, Context(tmp_path, calibration=data, source=teacher))
    unlabelled = _distill(teacher, {"ce_weight": 1.0, "steps": 2}, Context(tmp_path, calibration=data, source=teacher))
    assert unlabelled.meta["reports"][-1]["steps"] == 2  # cross-entropy skipped without labels
    with pytest.raises(UserError, match="needs real training data"):
        _distill(teacher, {}, Context(tmp_path, source=teacher))
    with pytest.raises(UserError, match="did you mean 'adamw'"):
        build(get_pass("distill").Config, {"optimizer": "adam"}, "distill")


def test_prune_then_distill_in_compile(tmp_path, cnn_source, cnn_data):
    recipe = tmp_path / "pd.yaml"
    recipe.write_text("name: pd\nsteps:\n  - pass: prune-structured\n    with: {ratio: 0.5}\n"
                      "  - pass: distill\n    with: {epochs: 2, batch_size: 16, ce_weight: 1.0}\n")
    result = compile(cnn_source, "cpu-ort", tmp_path / "pkg", recipe=recipe, calib=cnn_data,
                     inputs=(TensorSpec("image", ("batch", 1, 8, 8), "float32"),), cache_dir=tmp_path / "cache", bench_runs=3)
    applied = [step["pass"] for step in result.manifest.recipe["applied"]]
    assert applied[:3] == ["prune-structured", "distill", "export-onnx"]
    assert (tmp_path / "cache" / "checkpoints").is_dir()
    assert result.manifest.metrics.fidelity["samples"] == 64
    reports = {report["pass"]: report for report in result.manifest.reports}
    assert reports["prune-structured"]["macs_after"] < reports["prune-structured"]["macs_before"]
    assert reports["distill"]["steps"] == 8
