"""quantize-nncf (with accuracy control) and compress-weights-nncf on tiny models in real OpenVINO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from extras import require

from edgekit.data import load_data
from edgekit.errors import UserError
from edgekit.ingest import ingest
from edgekit.passes.base import Context
from edgekit.passes.openvino import ConvertOpenvino, ConvertOpenvinoConfig, read_ir
from edgekit.passes.quantize_nncf import (
    CompressWeightsNncf,
    CompressWeightsNncfConfig,
    QuantizeNncf,
    QuantizeNncfConfig,
    quantized_ops,
)
from edgekit.recipe import parse_step
from edgekit.runtime import open_model
from edgekit.spec import parse_input_spec

require("nncf", "nncf")

HEAD = "__module.head/aten::linear/MatMul"  # the tiny CNN's Linear head as OpenVINO names it


def _ir(source: str, spec: str, tmp: Path):
    model = ingest(source, (parse_input_spec(spec),))
    return ConvertOpenvino().run(model, ConvertOpenvinoConfig(), Context(tmp))


@pytest.fixture(scope="module")
def cnn_ir(cnn_source, tmp_path_factory):
    return _ir(cnn_source, "image:batchx1x8x8:float32", tmp_path_factory.mktemp("cnn-ir"))


@pytest.fixture(scope="module")
def mlp_ir(mlp_source, tmp_path_factory):
    return _ir(mlp_source, "features:batchx16:float32", tmp_path_factory.mktemp("mlp-ir"))


@pytest.fixture(scope="module")
def cnn_dataset(cnn_data, cnn_ir):
    return load_data(cnn_data, cnn_ir.inputs)


def _outputs(model, arrays: dict[str, np.ndarray]) -> np.ndarray:
    session = open_model("openvino", model.files, model.inputs, model.outputs)
    return next(iter(session.run(arrays).values()))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _quantize(ir, dataset, tmp_path: Path, **config):
    return QuantizeNncf().run(ir, QuantizeNncfConfig(**config), Context(tmp_path, calibration=dataset, evaluation=dataset))


def test_int8_keeps_top1_and_cosine_099(cnn_ir, cnn_dataset, tmp_path):
    quantized = _quantize(cnn_ir, cnn_dataset, tmp_path)
    assert quantized.meta["precision"] == "int8"
    ops = read_ir(quantized).get_ordered_ops()
    assert sum(op.get_type_name() == "FakeQuantize" for op in ops) >= 4
    assert HEAD in quantized_ops(read_ir(quantized))
    images = cnn_dataset.arrays["image"][:, 0]  # 64 single-image feeds as one batch
    reference, got = _outputs(cnn_ir, {"image": images}), _outputs(quantized, {"image": images})
    assert (reference.argmax(axis=1) == got.argmax(axis=1)).mean() >= 0.95
    assert _cosine(reference, got).mean() >= 0.99


def test_ignored_types_stay_float(cnn_ir, cnn_dataset, tmp_path):
    quantized = _quantize(cnn_ir, cnn_dataset, tmp_path, ignored_types=("MatMul",))
    assert HEAD not in quantized_ops(read_ir(quantized))
    assert quantized_ops(read_ir(quantized))  # the convolutions still are int8


def test_unknown_ignored_name_is_a_user_error(cnn_ir, cnn_dataset, tmp_path):
    with pytest.raises(UserError, match="ignored_names: no node named 'conv9'"):
        _quantize(cnn_ir, cnn_dataset, tmp_path, ignored_names=("conv9",))
    with pytest.raises(UserError, match=r"ignored_types: no Convolutions op in the model \(did you mean 'Convolution'\?\); it has Add"):
        _quantize(cnn_ir, cnn_dataset, tmp_path, ignored_types=("Convolutions",))


def test_needs_calibration_data(cnn_ir, tmp_path):
    with pytest.raises(UserError, match="quantize-nncf needs calibration data"):
        QuantizeNncf().run(cnn_ir, QuantizeNncfConfig(), Context(tmp_path))


def test_accuracy_control_keeps_a_model_that_fits(cnn_ir, cnn_dataset, tmp_path):
    quantized = _quantize(cnn_ir, cnn_dataset, tmp_path, max_drop=0.05, metric="cosine")
    report = quantized.meta["fallback"]
    assert report["reverted"] == [] and report["ok"] and report["value"] == report["quantized_value"] >= 0.99


def test_accuracy_control_reverts_the_harmful_op_and_names_it(cnn_ir, cnn_dataset, tmp_path):
    """A budget of half what plain int8 loses on this CPU forces ops back to float (plain int8 lost 0.006 cosine on
    an AVX2 EPYC, 0.0009 on an AVX-512 VNNI Xeon: the budget follows the CPU's own int8 kernels)."""
    plain = _quantize(cnn_ir, cnn_dataset, tmp_path / "plain", max_drop=1.0, metric="cosine").meta["fallback"]
    lost = plain["reference"] - plain["quantized_value"]
    assert plain["reverted"] == [] and lost > 1e-5
    quantized = _quantize(cnn_ir, cnn_dataset, tmp_path, max_drop=lost / 2, metric="cosine")
    report = quantized.meta["fallback"]
    assert report["quantized_value"] == pytest.approx(plain["quantized_value"], abs=1e-6)
    assert report["reference"] - report["value"] <= lost / 2 and report["ok"]
    reverted = {entry["node"] for entry in report["reverted"]}
    assert reverted and reverted.isdisjoint(quantized_ops(read_ir(quantized)))
    assert {entry["op_type"] for entry in report["reverted"]} <= {"MatMul", "Convolution", "Add", "ReduceMean"}
    assert quantized_ops(read_ir(quantized))  # the rest stays int8


def _weight_types(model) -> set[str]:
    ops = read_ir(model).get_ordered_ops()
    return {op.get_element_type().get_type_name() for op in ops if op.get_type_name() == "Constant"}


def test_compress_weights_int8(mlp_ir, tmp_path):
    compressed = CompressWeightsNncf().run(mlp_ir, CompressWeightsNncfConfig(), Context(tmp_path))
    assert compressed.meta["precision"] == "int8"
    assert "u8" in _weight_types(compressed)
    features = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    reference, got = _outputs(mlp_ir, {"features": features}), _outputs(compressed, {"features": features})
    assert np.abs(reference - got).max() / np.abs(reference).max() < 0.02


def test_compress_weights_int4_groups(mlp_ir, tmp_path):
    config = CompressWeightsNncfConfig(mode="int4_sym", group_size=16)
    compressed = CompressWeightsNncf().run(mlp_ir, config, Context(tmp_path))
    assert compressed.meta["precision"] == "int4"
    assert "i4" in _weight_types(compressed)  # fc1; the last layer stays int8 (all_layers false)
    features = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    reference, got = _outputs(mlp_ir, {"features": features}), _outputs(compressed, {"features": features})
    assert _cosine(reference, got).mean() >= 0.98


def test_recipe_step_validation():
    with pytest.raises(UserError, match="parameter 'mode' = 'int3'.*one of"):
        parse_step({"pass": "compress-weights-nncf", "mode": "int3"}, "recipe r.yaml, step 1")
    with pytest.raises(UserError, match=r"'max_drop' = 2 is outside \[0.0, 1.0\]"):
        parse_step({"pass": "quantize-nncf", "max_drop": 2}, "recipe r.yaml, step 1")
    with pytest.raises(UserError, match="unknown parameter 'presets'.*did you mean 'preset'"):
        parse_step({"pass": "quantize-nncf", "presets": "mixed"}, "recipe r.yaml, step 1")
