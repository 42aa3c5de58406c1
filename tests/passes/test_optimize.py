"""optimize-onnx: both engines keep outputs within 1e-4 and fold BatchNorm into the convolutions."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekit.ingest import ingest
from edgekit.passes.base import Context, get_pass


@pytest.mark.parametrize("engine", ["onnxslim", "ort-basic"])
def test_optimize_keeps_numerics_and_folds_batchnorm(cnn_onnx, tmp_path, engine):
    source = ingest(cnn_onnx)
    pass_ = get_pass("optimize-onnx")
    optimized = pass_.run(source, pass_.Config(engine=engine), Context(tmp_path))
    before = Counter(n.op_type for n in onnx.load(str(cnn_onnx)).graph.node)
    after = Counter(n.op_type for n in onnx.load(str(optimized.path)).graph.node)
    assert before["BatchNormalization"] == 2 and after["BatchNormalization"] == 0
    assert optimized.content_hash != source.content_hash
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(optimized.path), run(cnn_onnx), rtol=1e-4, atol=1e-5)
