"""Each ingest kind: ONNX, file.py:factory, TorchScript, torch.export .pt2; and their errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.errors import UserError
from edgekit.ingest import ingest
from edgekit.model import Format
from edgekit.spec import TensorSpec, parse_input_spec


def test_onnx_specs_come_from_the_graph(cnn_onnx):
    model = ingest(cnn_onnx)
    assert model.format is Format.ONNX
    assert model.inputs == (TensorSpec("image", ("batch", 1, 8, 8), "float32"),)
    assert model.outputs[0].name == "logits" and model.outputs[0].shape == ("batch", 4)
    assert model.files == (cnn_onnx,)
    assert len(model.content_hash) == 64


def test_onnx_input_override_by_name_and_unknown_name(cnn_onnx):
    model = ingest(cnn_onnx, (parse_input_spec("image:2x1x8x8"),))
    assert model.inputs[0].shape == (2, 1, 8, 8)
    with pytest.raises(UserError, match="--input names pixels, but the model's inputs are image"):
        ingest(cnn_onnx, (parse_input_spec("pixels:2x1x8x8"),))


def test_factory_with_examples(cnn_source):
    model = ingest(cnn_source)
    assert model.format is Format.TORCH
    assert model.inputs == (TensorSpec("image", (1, 1, 8, 8), "float32"),)
    assert model.outputs == (TensorSpec("output", (1, 4), "float32"),)
    symbolic = ingest(cnn_source, (parse_input_spec("image:batchx1x8x8"),))
    assert symbolic.outputs[0].shape == ("batch", 4)
    assert symbolic.content_hash == model.content_hash  # same file, same weights


def test_torchscript_needs_input_specs_and_loads(tmp_path):
    from models import tiny_cnn

    module, examples = tiny_cnn()
    path = tmp_path / "cnn.pt"
    torch.jit.trace(module, examples).save(str(path))
    with pytest.raises(UserError, match="give them with --input"):
        ingest(path)
    model = ingest(path, (parse_input_spec("image:batchx1x8x8"),))
    assert model.format is Format.TORCH
    x = torch.randn(3, 1, 8, 8)
    np.testing.assert_allclose(model.module(x).detach().numpy(), module(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_pickled_module_is_refused(tmp_path):
    from models import tiny_cnn

    path = tmp_path / "whole.pt"
    torch.save(tiny_cnn()[0], path)
    with pytest.raises(UserError, match="does not unpickle arbitrary objects"):
        ingest(path)


def test_exported_program(tmp_path):
    from models import tiny_cnn

    module, _ = tiny_cnn()
    program = torch.export.export(module, (torch.randn(2, 1, 8, 8),),
                                  dynamic_shapes={"image": {0: torch.export.Dim("batch")}})
    path = tmp_path / "cnn.pt2"
    torch.export.save(program, str(path))
    model = ingest(path)
    assert model.format is Format.EXPORTED
    assert model.inputs[0].name == "image"
    assert isinstance(model.inputs[0].shape[0], str) and model.inputs[0].shape[1:] == (1, 8, 8)


class _Touch:
    """A pickle that creates a file when unpickled: the stand-in for code hidden in a model archive."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_exported_program_with_pickled_code_is_refused_unrun(tmp_path):
    import pickle
    import zipfile

    from models import tiny_cnn

    program = torch.export.export(tiny_cnn()[0], (torch.randn(2, 1, 8, 8),))
    clean, hostile, marker = tmp_path / "clean.pt2", tmp_path / "hostile.pt2", tmp_path / "ran"
    torch.export.save(program, str(clean))
    with zipfile.ZipFile(clean) as source, zipfile.ZipFile(hostile, "w") as target:
        for name in source.namelist():
            payload = pickle.dumps(_Touch(marker)) if name.endswith("sample_inputs/model.pt") else source.read(name)
            target.writestr(name, payload)
    with pytest.raises(UserError, match=r"sample_inputs/model.pt holds pickled objects beyond tensors"):
        ingest(hostile)
    assert not marker.exists()


def test_missing_file():
    with pytest.raises(UserError, match="model not found: nowhere.onnx"):
        ingest("nowhere.onnx")


def test_corrupt_and_truncated_onnx(tmp_path, cnn_onnx):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not a protobuf at all" * 10)
    with pytest.raises(UserError, match="is not a valid ONNX model"):
        ingest(garbage)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(cnn_onnx.read_bytes()[: cnn_onnx.stat().st_size // 2])
    with pytest.raises(UserError, match="is not a valid ONNX model"):
        ingest(truncated)


def test_factory_errors(tmp_path):
    from conftest import MODELS

    with pytest.raises(UserError, match=r"broken_factory\(\) raised RuntimeError: weights file is gone"):
        ingest(f"{MODELS}:broken_factory")
    with pytest.raises(UserError, match="has no callable 'nope'"):
        ingest(f"{MODELS}:nope")
    with pytest.raises(UserError, match="model not found"):
        ingest(f"{tmp_path}/absent.py:build")
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_module_anywhere\n")
    with pytest.raises(UserError, match="importing it raised ModuleNotFoundError"):
        ingest(f"{bad}:build")


def test_unknown_kind_and_model_failing_on_given_shape(tmp_path, cnn_source):
    weird = tmp_path / "model.caffemodel"
    weird.write_bytes(b"x")
    with pytest.raises(UserError, match="unknown model kind '.caffemodel'"):
        ingest(weird)
    with pytest.raises(UserError, match="the model failed on inputs image:1x3x8x8:float32"):
        ingest(cnn_source, (parse_input_spec("image:1x3x8x8"),))
