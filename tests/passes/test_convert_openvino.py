"""convert-openvino and compress-fp16-openvino on the tiny CNN, run in real OpenVINO."""

from __future__ import annotations

import numpy as np
import pytest
from extras import require

from edgekit.ingest import ingest
from edgekit.model import Format
from edgekit.passes.base import Context
from edgekit.passes.openvino import CompressFp16Openvino, ConvertOpenvino, ConvertOpenvinoConfig, read_ir
from edgekit.runtime import open_model
from edgekit.spec import parse_input_spec

require("openvino", "openvino")

CNN_SPEC = parse_input_spec("image:batchx1x8x8:float32")


def _images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, 8, 8)).astype(np.float32)


def _torch_outputs(source, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return source.module(torch.from_numpy(images)).numpy()


def _run_ir(model, images: np.ndarray) -> np.ndarray:
    session = open_model("openvino", model.files, model.inputs, model.outputs)
    return next(iter(session.run({"image": images}).values()))


def _max_rel(reference: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(reference - got).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def source(cnn_source):
    return ingest(cnn_source, (CNN_SPEC,))


def test_convert_from_torch_matches_source_within_1e4(source, tmp_path):
    ir = ConvertOpenvino().run(source, ConvertOpenvinoConfig(), Context(tmp_path))
    assert ir.format is Format.OPENVINO
    assert [p.suffix for p in ir.files] == [".xml", ".bin"]
    assert ir.inputs == source.inputs and ir.outputs == source.outputs
    ov_model = read_ir(ir)
    assert [port.get_any_name() for port in ov_model.inputs] == ["image"]
    assert [port.get_any_name() for port in ov_model.outputs] == ["output"]
    assert str(ov_model.inputs[0].get_partial_shape()) == "[?,1,8,8]"  # the symbolic batch stays dynamic
    for batch in (1, 5):
        images = _images(batch)
        assert _max_rel(_torch_outputs(source, images), _run_ir(ir, images)) < 1e-4


def test_convert_from_onnx_keeps_the_onnx_names(cnn_onnx, source, tmp_path):
    onnx_model = ingest(cnn_onnx)
    ir = ConvertOpenvino().run(onnx_model, ConvertOpenvinoConfig(), Context(tmp_path))
    assert [port.get_any_name() for port in read_ir(ir).outputs] == ["logits"]
    images = _images(3)
    assert _max_rel(_torch_outputs(source, images), _run_ir(ir, images)) < 1e-4


def test_convert_fixes_the_dims_the_specs_fix(cnn_source, tmp_path):
    static = ingest(cnn_source, (parse_input_spec("image:2x1x8x8:float32"),))
    ir = ConvertOpenvino().run(static, ConvertOpenvinoConfig(), Context(tmp_path))
    assert str(read_ir(ir).inputs[0].get_partial_shape()) == "[2,1,8,8]"


def test_compress_fp16_halves_the_weights_and_stays_within_1e2(source, tmp_path):
    ir = ConvertOpenvino().run(source, ConvertOpenvinoConfig(), Context(tmp_path / "fp32"))
    half = CompressFp16Openvino().run(ir, None, Context(tmp_path / "fp16"))
    assert half.meta["precision"] == "fp16"
    constants = [op for op in read_ir(half).get_ordered_ops() if op.get_type_name() == "Constant"]
    assert any(op.get_element_type().get_type_name() == "f16" for op in constants)
    assert half.files[1].stat().st_size < 0.6 * ir.files[1].stat().st_size
    images = _images(16)
    rel = _max_rel(_torch_outputs(source, images), _run_ir(half, images))
    assert 0 < rel < CompressFp16Openvino.tolerance
