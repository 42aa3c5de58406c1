"""The sweep's grid without Ray: models and their per-model options, the cells, and what changes a cell's key."""

from __future__ import annotations

import pytest
from conftest import CNN_INPUT

from edgekit.errors import UserError
from edgekit.sweep.grid import Cell, ModelEntry, Settings, cell_key, expand, model_entries

HOST = {"cpu": "some CPU", "isa": "avx2"}


def test_models_with_shared_and_per_model_options(cnn_source):
    entries = model_entries((f"cnn={cnn_source}", "other/model.onnx"), ("all.npz", "cnn=mine.npz"), ("text:e.txt",),
                            (CNN_INPUT, "model=ids:1x8:int64"))
    cnn, other = entries
    assert (cnn.name, cnn.source, cnn.calib, cnn.eval, cnn.inputs) == ("cnn", cnn_source, "mine.npz", "text:e.txt",
                                                                       (CNN_INPUT,))
    assert (other.name, other.calib, other.inputs) == ("model", "all.npz", (CNN_INPUT, "ids:1x8:int64"))
    assert model_entries((cnn_source,), (), (), ())[0].name == "models"  # file.py:factory → the file's stem
    with pytest.raises(UserError, match="two models are named cnn"):
        model_entries((f"cnn={cnn_source}", f"cnn={cnn_source}"), (), (), ())


def test_cells_and_their_ids():
    model = ModelEntry("m", "m.onnx")
    cells = expand([model], ("cpu-ort", "cpu-openvino"), ("fp32", "auto"), ("local", "pi 5"))
    assert len(cells) == 8
    assert [c.id for c in cells[:2]] == ["m/cpu-ort/fp32", "m/cpu-ort/fp32@pi 5"]
    assert cells[1].slug == "m-cpu-ort-fp32-on-pi-5"
    with pytest.raises(UserError, match="at least one model"):
        expand([model], (), ("fp32",), ("local",))


def test_the_key_follows_contents_not_names(tmp_path, cnn_source, cnn_data):
    data = tmp_path / "d.npz"
    data.write_bytes(cnn_data.read_bytes())
    cell = Cell(ModelEntry("cnn", cnn_source, str(data), None, (CNN_INPUT,)), "cpu-ort", "int8")
    key = cell_key(cell, Settings(), HOST)
    renamed = Cell(ModelEntry("other-name", cnn_source, str(data), None, (CNN_INPUT,)), "cpu-ort", "int8")
    assert cell_key(renamed, Settings(), HOST) == key  # the name is a label
    assert cell_key(cell, Settings(runs=51), HOST) != key
    assert cell_key(cell, Settings(), {"cpu": "another CPU", "isa": "avx2"}) != key  # measured here: this CPU
    remote = Cell(cell.model, "cpu-ort", "int8", "pi5")
    assert cell_key(remote, Settings(), HOST) == cell_key(remote, Settings(), {"cpu": "x", "isa": "y"})
    assert cell_key(Cell(cell.model, "cpu-ort", "fp32"), Settings(), HOST) != key
    data.write_bytes(data.read_bytes() + b"\0")  # new contents, same path
    assert cell_key(cell, Settings(), HOST) != key
    auto = Cell(cell.model, "cpu-ort", "auto")
    assert cell_key(auto, Settings(), HOST) != key
    with pytest.raises(UserError, match="data .*missing.npz not found"):
        cell_key(Cell(ModelEntry("cnn", cnn_source, str(tmp_path / "missing.npz")), "cpu-ort", "int8"), Settings(), HOST)
