"""OpenVINO IR (.xml + .bin) as a source model: specs, overrides, broken files, compile for its own target."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from extras import require

from edgekit import compiler
from edgekit.errors import UnsupportedOnTarget, UserError
from edgekit.ingest import ingest
from edgekit.model import Format
from edgekit.passes.base import Context
from edgekit.passes.openvino import ConvertOpenvino, ConvertOpenvinoConfig
from edgekit.runtime import load
from edgekit.spec import TensorSpec, parse_input_spec

require("openvino", "openvino")


@pytest.fixture(scope="module")
def ir_xml(cnn_onnx, tmp_path_factory):
    """The tiny CNN as an IR on disk (from its ONNX export: input 'image', output 'logits')."""
    model = ConvertOpenvino().run(ingest(cnn_onnx), ConvertOpenvinoConfig(), Context(tmp_path_factory.mktemp("ir")))
    return model.path


def test_reads_specs_from_the_ir(ir_xml):
    model = ingest(ir_xml)
    assert model.format is Format.OPENVINO
    assert model.files == (ir_xml, ir_xml.with_suffix(".bin"))
    assert model.inputs[0].name == "image" and model.inputs[0].shape[1:] == (1, 8, 8)
    assert isinstance(model.inputs[0].shape[0], str)  # the dynamic batch is a symbolic dim
    assert model.outputs[0].name == "logits" and model.outputs[0].dtype == "float32"
    assert model.meta["source_hash"] == model.content_hash


def test_input_override_by_name(ir_xml):
    model = ingest(ir_xml, (parse_input_spec("image:4x1x8x8:float32"),))
    assert model.inputs == (TensorSpec("image", (4, 1, 8, 8)),)
    with pytest.raises(UserError, match="--input names pixels, but the model's inputs are image"):
        ingest(ir_xml, (parse_input_spec("pixels:1x1x8x8"),))


def test_missing_weights_and_corrupt_xml(ir_xml, tmp_path):
    lonely = tmp_path / "lonely.xml"
    shutil.copy(ir_xml, lonely)
    with pytest.raises(UserError, match="its weights file lonely.bin is missing beside it"):
        ingest(lonely)
    broken = tmp_path / "broken.xml"
    broken.write_text("<net><layers>")
    (tmp_path / "broken.bin").write_bytes(b"")
    with pytest.raises(UserError, match="broken.xml is not a valid OpenVINO IR"):
        ingest(broken)


def test_compiles_for_cpu_openvino_without_conversion(ir_xml, cnn_onnx, tmp_path):
    result = compiler.compile(ir_xml, "cpu-openvino", tmp_path / "pkg", "fp32", bench_runs=3)
    assert result.plan.steps == ()
    images = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    got = load(result.package).run({"image": images})["logits"]
    import onnxruntime

    expected = onnxruntime.InferenceSession(str(cnn_onnx)).run(None, {"image": images})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_no_path_from_ir_to_onnx(ir_xml):
    with pytest.raises(UnsupportedOnTarget, match="no conversion leads from openvino to onnx"):
        compiler.plan(ir_xml, "cpu-ort")
