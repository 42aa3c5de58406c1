"""The OpenVINO Session: outputs, feed checks, threads, static reshape, device probing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from extras import require

from edgekit.errors import UnsupportedOnTarget, UserError
from edgekit.ingest import ingest
from edgekit.passes.base import Context
from edgekit.passes.openvino import ConvertOpenvino, ConvertOpenvinoConfig
from edgekit.runtime import open_model
from edgekit.runtime.openvino import core, probe
from edgekit.spec import TensorSpec, parse_input_spec

require("openvino", "openvino")


@pytest.fixture(scope="module")
def cnn_ir(cnn_source, tmp_path_factory):
    model = ingest(cnn_source, (parse_input_spec("image:batchx1x8x8:float32"),))
    return ConvertOpenvino().run(model, ConvertOpenvinoConfig(), Context(tmp_path_factory.mktemp("ir")))


def _session(model, inputs=None, threads=None, options=None):
    return open_model("openvino", model.files, inputs or model.inputs, model.outputs, options or {}, threads)


def _images(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 1, 8, 8)).astype(np.float32)


def test_outputs_by_spec_name_and_dynamic_batch(cnn_ir):
    session = _session(cnn_ir)
    for batch in (1, 4):
        result = session.run({"image": _images(batch, 0)})
        assert list(result) == ["output"]
        assert result["output"].shape == (batch, 4) and result["output"].dtype == np.float32


def test_feed_errors_name_the_input(cnn_ir):
    session = _session(cnn_ir)
    with pytest.raises(UserError, match="feeds: missing image; unknown x"):
        session.run({"x": _images(1, 0)})
    with pytest.raises(UserError, match="input 'image': dtype float64 != float32"):
        session.run({"image": _images(1, 0).astype(np.float64)})
    with pytest.raises(UserError, match=r"input 'image': dim 2 is 9, expected 8"):
        session.run({"image": np.zeros((1, 1, 9, 8), np.float32)})


def test_concurrent_runs_match_sequential_runs(cnn_ir):
    session = _session(cnn_ir, threads=1)
    feeds = [_images(2, seed) for seed in range(24)]
    expected = [session.run({"image": feed})["output"] for feed in feeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda feed: session.run({"image": feed})["output"], feeds * 3))
    for index, output in enumerate(got):
        np.testing.assert_array_equal(output, expected[index % len(feeds)])


def test_threads_and_config_reach_the_compiled_model(cnn_ir):
    session = _session(cnn_ir, threads=1, options={"device": "CPU", "config": {"INFERENCE_PRECISION_HINT": "f32"}})
    assert session._compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert str(session._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_static_specs_reshape_a_dynamic_ir(cnn_ir):
    static = (TensorSpec("image", (3, 1, 8, 8)),)
    session = _session(cnn_ir, inputs=static)
    assert str(session._compiled.inputs[0].get_partial_shape()) == "[3,1,8,8]"
    assert session.run({"image": _images(3, 1)})["output"].shape == (3, 4)


def test_probe_cpu_is_available():
    assert probe({"device": "CPU"}) is None
    assert probe({}) is None


@pytest.mark.parametrize("device, needs", [("GPU", "Intel GPU"), ("NPU", "Intel NPU")])
def test_absent_device_says_why(device, needs, cnn_ir):
    if any(found.startswith(device) for found in core().available_devices):
        pytest.skip(f"this machine has an OpenVINO {device}")
    why = probe({"device": device})
    assert why.startswith(f"OpenVINO sees no {device} device here (available: CPU") and needs in why
    with pytest.raises(UnsupportedOnTarget, match=f"OpenVINO sees no {device} device"):
        _session(cnn_ir, options={"device": device})
