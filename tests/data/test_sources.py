"""Calibration/evaluation data: .npz, .npy folders, synthetic; checked against the input specs."""

import logging

import numpy as np
import pytest

from edgekit.data import load_data, synthetic_data
from edgekit.errors import UserError
from edgekit.spec import TensorSpec

SPECS = (TensorSpec("image", ("batch", 1, 8, 8), "float32"),)


def test_npz_with_labels_splits_into_feeds(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, image=np.ones((10, 1, 8, 8), np.float32), labels=np.arange(10))
    data = load_data(path, SPECS)
    assert len(data) == 10 and data.arrays["image"].shape == (10, 1, 1, 8, 8)
    assert list(data.labels) == list(range(10))
    assert next(data.feeds())["image"].shape == (1, 1, 8, 8)


def test_npy_folder_and_float64_cast(tmp_path):
    np.save(tmp_path / "image.npy", np.zeros((4, 1, 8, 8), np.float64))
    np.save(tmp_path / "labels.npy", np.zeros(4, np.int64))
    data = load_data(tmp_path, SPECS)
    assert data.arrays["image"].dtype == np.float32 and len(data) == 4


def test_static_batch_groups_rows(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, image=np.ones((8, 1, 8, 8), np.float32))
    data = load_data(path, (TensorSpec("image", (4, 1, 8, 8), "float32"),))
    assert len(data) == 2 and next(data.feeds())["image"].shape == (4, 1, 8, 8)


@pytest.mark.parametrize("arrays, message", [
    ({"image": np.ones((3, 1, 7, 8), np.float32)}, r"input 'image': dim 2 is 7, expected 8"),
    ({"pixels": np.ones((3, 1, 8, 8), np.float32)}, "no array for input\\(s\\) image; it has pixels"),
    ({"image": np.full((3, 1, 8, 8), np.nan, np.float32)}, "holds 192 NaN/inf value"),
    ({"image": np.ones((3, 1, 8, 8), np.int64)}, "is int64, the model takes float32"),
    ({"image": np.ones((3, 8, 8), np.float32)}, r"shape \[3, 8, 8\], which does not fit \[batchx1x8x8\]"),
    ({"image": np.ones((3, 1, 8, 8), np.float32), "labels": np.ones(2)}, "2 labels for 3 samples"),
])
def test_mismatches_name_the_input(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=message):
        load_data(path, SPECS)


def test_unreadable_and_missing(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    with pytest.raises(UserError, match="cannot read .* as .npz"):
        load_data(bad, SPECS)
    with pytest.raises(UserError, match="data not found"):
        load_data(tmp_path / "absent.npz", SPECS)
    with pytest.raises(UserError, match="holds no .npy files"):
        load_data(tmp_path, SPECS)


def test_synthetic_warns_and_follows_specs(caplog):
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        data = synthetic_data((TensorSpec("ids", ("batch", 6), "int64"),), 5, sizes={"batch": 2})
    assert "unreliable" in caplog.text and data.synthetic
    assert data.arrays["ids"].shape == (5, 2, 6) and data.arrays["ids"].dtype == np.int64
