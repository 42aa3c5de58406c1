"""The data report: counts, duplicates, constant inputs, ranges, calibration/evaluation overlap."""

import logging

import numpy as np

from edgekit.data.dataset import Dataset
from edgekit.data.report import data_report


def _data(rows: np.ndarray, **extra: np.ndarray) -> Dataset:
    return Dataset({"x": rows, **extra}, None, "test")


def test_clean_data_has_no_warnings():
    rng = np.random.default_rng(0)
    calibration = _data(rng.standard_normal((40, 1, 4)).astype(np.float32))
    evaluation = _data(rng.standard_normal((10, 1, 4)).astype(np.float32))
    report = data_report(calibration, evaluation)
    assert report["warnings"] == []
    assert report["calibration"]["samples"] == 40 and report["evaluation"]["samples"] == 10
    assert report["overlap"] == {"samples": 0, "fraction": 0.0, "same_data": False}
    low, high = report["calibration"]["ranges"]["x"]
    assert low == float(calibration.arrays["x"].min()) and high == float(calibration.arrays["x"].max())


def test_problems_are_reported_and_logged(caplog):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((8, 1, 4)).astype(np.float32)
    rows[5] = rows[2]  # one duplicate
    constant = np.ones((8, 1, 3), np.float32)
    calibration = _data(rows, bias=constant)
    evaluation = _data(np.concatenate([rows[:3], rng.standard_normal((3, 1, 4)).astype(np.float32)]),
                       bias=np.ones((6, 1, 3), np.float32))
    logger = logging.getLogger("edgekit")
    logger.propagate = True
    with caplog.at_level(logging.WARNING, logger="edgekit.data"):
        report = data_report(calibration, evaluation)
    calib = report["calibration"]
    assert calib["duplicates"] == 1 and calib["constant_inputs"] == ["bias"]
    assert report["overlap"]["samples"] == 3 and report["overlap"]["fraction"] == 0.5
    expected = ["calibration has 8 samples (< 32)", "calibration data has 1 duplicate sample(s) of 8",
                "calibration input 'bias' is the same in every sample", "3 of 6 evaluation samples are also calibration samples"]
    for text in expected:
        assert any(text in line for line in report["warnings"]), text
        assert any(text in record.getMessage() for record in caplog.records), text


def test_evaluating_on_the_calibration_data_is_flagged():
    data = _data(np.random.default_rng(0).standard_normal((40, 1, 4)).astype(np.float32))
    report = data_report(data, data)
    assert report["overlap"]["same_data"] and report["overlap"]["fraction"] == 1.0
    assert any("evaluation uses the calibration data" in line for line in report["warnings"])


def test_synthetic_data_and_no_calibration():
    data = Dataset({"x": np.zeros((4, 1, 2), np.float32) + np.arange(4)[:, None, None]}, None, "synthetic", synthetic=True)
    report = data_report(None, data)
    assert "calibration" not in report and "overlap" not in report
    assert report["warnings"] == ["evaluation data is synthetic random data: calibration ranges and accuracy on it are unreliable"]
