"""Mobile conversions fix the dims they cannot keep dynamic to the compile data's sizes, not to 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from models import fixed_length

from edgekit import compiler
from edgekit.runtime import load
from edgekit.spec import parse_input_spec

SOURCE = f"{Path(__file__).resolve().parent.parent / 'models.py'}:fixed_length"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("seq") / "seq.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((8, 1, 12, 8)).astype(np.float32))
    return path


@pytest.mark.parametrize("target", ["mobile-executorch", "mobile-tflite"])
def test_symbolic_length_takes_the_data_size(tmp_path, data, target):
    result = compiler.compile(SOURCE, target, tmp_path / "pkg", "fp32", data,
                              inputs=(parse_input_spec("x:batchxseqx8"),), bench_runs=2)
    assert result.manifest.inputs[0].shape == (1, 12, 8)
    feed = np.load(data)["x"][0]
    module, _ = fixed_length()
    want = module(torch.from_numpy(feed)).detach().numpy()
    got = list(load(result.package).run({"x": feed}).values())[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
