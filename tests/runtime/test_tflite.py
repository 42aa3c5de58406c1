"""The LiteRT backend on a real .tflite package: runs, resizes, threads, checks feeds, ingests, stays torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compile_cnn
from models import tiny_cnn

from edgekit.compiler import compile
from edgekit.errors import UserError
from edgekit.ingest import ingest
from edgekit.model import Format
from edgekit.runtime import load, open_model
from edgekit.spec import parse_input_spec

FP32_RTOL = 1e-4


@pytest.fixture(scope="module")
def package(tmp_path_factory, cnn_source, cnn_data) -> Path:
    """An fp32 mobile-tflite package of the tiny CNN (symbolic batch); the conversion is cached per session."""
    return compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-tflite", "fp32", "cnn-fp32")


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 1, 8, 8)).astype(np.float32)


def _reference(images: np.ndarray) -> np.ndarray:
    module, _ = tiny_cnn()
    with torch.no_grad():
        return module(torch.from_numpy(images)).numpy()


def test_runs_and_resizes_between_batches(package):
    session = load(package, threads=1)
    assert session.runtime == "tflite" and session.input_map == {"image": "serving_default_args_0"}
    for batch in (3, 1, 7, 3):
        images = _images(batch, seed=batch)
        got = session.run({"image": images})["output"]
        want = _reference(images)
        assert got.shape == (batch, 4)
        assert np.abs(got - want).max() / np.abs(want).max() < FP32_RTOL


def test_concurrent_runs_give_the_sequential_outputs(package):
    session = load(package)
    feeds = [{"image": _images(1 + i % 3, seed=i)} for i in range(24)]
    sequential = [session.run(feed)["output"] for feed in feeds]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(lambda feed: session.run(feed)["output"], feeds))
    for want, got in zip(sequential, concurrent):
        np.testing.assert_array_equal(got, want)


def test_wrong_feeds_are_user_errors(package):
    session = load(package)
    with pytest.raises(UserError, match=r"input 'image': dim 2 is 9, expected 8"):
        session.run({"image": np.zeros((1, 1, 9, 8), np.float32)})
    with pytest.raises(UserError, match=r"input 'image': dtype float64 != float32"):
        session.run({"image": np.zeros((1, 1, 8, 8))})
    with pytest.raises(UserError, match=r"missing image; unknown pixels"):
        session.run({"pixels": np.zeros((1, 1, 8, 8), np.float32)})


def test_corrupt_file_is_a_user_error(tmp_path):
    path = tmp_path / "broken.tflite"
    path.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(UserError, match="broken.tflite is not a valid .tflite model"):
        ingest(path)


def test_ingest_a_tflite_file_and_package_it_for_its_own_target(package, tmp_path, cnn_data):
    model = ingest(package / "model.tflite")
    assert model.format is Format.TFLITE
    assert [(s.name, s.shape, s.dtype) for s in model.inputs] == [("args_0", ("args_0_dim0", 1, 8, 8), "float32")]
    assert len(model.outputs) == 1 and model.outputs[0].dtype == "float32"
    out = tmp_path / "repackaged"
    result = compile(package / "model.tflite", "mobile-tflite", out, "fp32", bench_runs=3,
                     inputs=(parse_input_spec("args_0:batchx1x8x8:float32"),))
    assert result.plan.steps == ()
    images = np.load(cnn_data)["image"][:4]
    got = load(out).run({"args_0": images})
    want = _reference(images)
    assert np.abs(next(iter(got.values())) - want).max() / np.abs(want).max() < FP32_RTOL


def test_open_model_maps_inputs_by_position_when_names_differ(package):
    manifest = json.loads((package / "manifest.json").read_text())
    inputs = (parse_input_spec("pixels:batchx1x8x8:float32"),)
    session = open_model("tflite", (package / "model.tflite",), inputs,
                         tuple(parse_input_spec(f"{o['name']}:batchx4:float32") for o in manifest["outputs"]))
    assert session.input_map == {"pixels": "serving_default_args_0"}
    images = _images(2)
    np.testing.assert_allclose(session.run({"pixels": images})["output"], _reference(images), rtol=1e-4, atol=1e-5)


def test_loading_and_running_a_tflite_package_never_imports_torch(package):
    code = (
        "import sys, numpy as np\n"
        "from edgekit.runtime import load\n"
        f"session = load({str(package)!r})\n"
        "out = session.run({'image': np.zeros((2, 1, 8, 8), np.float32)})\n"
        "assert out['output'].shape == (2, 4)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
