"""The ExecuTorch backend on a real .pte package: runs, threads, checks feeds, ingests .pte files."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compile_cnn
from models import tiny_cnn

from edgekit.errors import UserError
from edgekit.ingest import ingest
from edgekit.model import Format
from edgekit.runtime import load
from edgekit.runtime.executorch import probe

FP32_RTOL = 1e-4


@pytest.fixture(scope="module")
def package(tmp_path_factory, cnn_source, cnn_data) -> Path:
    """An fp32 mobile-executorch package of the tiny CNN; the lowering is cached per session."""
    return compile_cnn(tmp_path_factory, cnn_source, cnn_data, "mobile-executorch", "fp32", "cnn-fp32")


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 1, 8, 8)).astype(np.float32)


def _reference(images: np.ndarray) -> np.ndarray:
    module, _ = tiny_cnn()
    with torch.no_grad():
        return module(torch.from_numpy(images)).numpy()


def test_probe_is_cheap_and_finds_the_runtime():
    assert probe({}) is None


def test_runs_and_matches_torch(package):
    session = load(package, threads=1)
    assert session.runtime == "executorch"
    for seed in range(3):
        image = _image(seed)
        got, want = session.run({"image": image})["output"], _reference(image)
        assert got.shape == (1, 4)
        assert np.abs(got - want).max() / np.abs(want).max() < FP32_RTOL


def test_concurrent_runs_give_the_sequential_outputs(package):
    session = load(package)
    feeds = [{"image": _image(seed)} for seed in range(24)]
    sequential = [session.run(feed)["output"] for feed in feeds]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(lambda feed: session.run(feed)["output"], feeds))
    for want, got in zip(sequential, concurrent):
        np.testing.assert_array_equal(got, want)


def test_wrong_feeds_are_user_errors(package):
    session = load(package)
    with pytest.raises(UserError, match=r"input 'image': dim 0 is 2, expected 1"):
        session.run({"image": np.zeros((2, 1, 8, 8), np.float32)})
    with pytest.raises(UserError, match=r"input 'image': dtype int64 != float32"):
        session.run({"image": np.zeros((1, 1, 8, 8), np.int64)})


def test_ingest_a_pte_file(package, tmp_path):
    model = ingest(package / "model.pte")
    assert model.format is Format.EXECUTORCH
    assert [(s.name, s.shape, s.dtype) for s in model.inputs] == [("input_0", (1, 1, 8, 8), "float32")]
    assert [(s.name, s.shape, s.dtype) for s in model.outputs] == [("output_0", (1, 4), "float32")]
    broken = tmp_path / "broken.pte"
    broken.write_bytes(b"nope")
    with pytest.raises(UserError, match="broken.pte is not a valid ExecuTorch program"):
        ingest(broken)
