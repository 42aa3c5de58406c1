"""export-onnx: numerics vs PyTorch within its 1e-4 tolerance, dynamic batch, and the fallback."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgekit.ingest import ingest
from edgekit.model import Format
from edgekit.passes.base import Context, get_pass
from edgekit.spec import parse_input_spec


def _export(source, tmp_path, **params):
    pass_ = get_pass("export-onnx")
    model = ingest(source, (parse_input_spec("image:batchx1x8x8"),))
    return model, pass_.run(model, pass_.Config(**params), Context(tmp_path))


def test_dynamo_export_matches_torch_with_dynamic_batch(cnn_source, tmp_path):
    model, exported = _export(cnn_source, tmp_path)
    assert exported.format is Format.ONNX and exported.meta["exporter"] == "dynamo"
    assert exported.meta["export_fallback_reason"] is None
    assert exported.inputs[0].shape[0] == "batch"
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8)).astype(np.float32)
        got = session.run(None, {"image": x})[0]
        want = model.module(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_scripted_module_falls_back_and_says_why(tmp_path):
    from models import tiny_cnn

    module, examples = tiny_cnn()
    path = tmp_path / "cnn.pt"
    torch.jit.trace(module, examples).save(str(path))
    pass_ = get_pass("export-onnx")
    model = ingest(path, (parse_input_spec("image:batchx1x8x8"),))
    exported = pass_.run(model, pass_.Config(), Context(tmp_path))
    assert exported.meta["exporter"] == "torchscript"
    assert exported.meta["export_fallback_reason"].startswith("dynamo:")
    x = np.ones((2, 1, 8, 8), np.float32)
    got = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, module(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_no_fallback_gives_one_clear_error(tmp_path):
    from models import tiny_cnn

    from edgekit.errors import UserError

    module, examples = tiny_cnn()
    path = tmp_path / "cnn.pt"
    torch.jit.trace(module, examples).save(str(path))
    pass_ = get_pass("export-onnx")
    model = ingest(path, (parse_input_spec("image:1x1x8x8"),))
    with pytest.raises(UserError, match="export-onnx failed: dynamo: "):
        pass_.run(model, pass_.Config(fallback=False), Context(tmp_path))
