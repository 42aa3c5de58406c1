"""Fixtures shared by the quantization tests."""

from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.data.dataset import Dataset


@pytest.fixture(scope="session")
def outlier(tmp_path_factory) -> tuple[Path, Dataset, np.ndarray]:
    """The outlier MLP in ONNX, 64 seeded samples, and the float outputs on them."""
    from models import outlier_mlp

    module, _ = outlier_mlp()
    path = tmp_path_factory.mktemp("outlier") / "outlier.onnx"
    torch.onnx.export(module, (torch.randn(2, 16),), str(path), dynamo=True, input_names=["features"],
                      output_names=["logits"], dynamic_shapes={"features": {0: torch.export.Dim("batch")}},
                      external_data=False)
    rows = np.random.default_rng(0).standard_normal((64, 1, 16)).astype(np.float32)
    with torch.no_grad():
        reference = module(torch.from_numpy(rows[:, 0])).numpy()
    return path, Dataset({"features": rows}, None, "seeded"), reference
