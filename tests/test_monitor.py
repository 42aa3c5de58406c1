"""Session monitoring: the latency histogram, running input statistics equal to numpy's, drift scores on known shifts,
one warning per drifting input, thread safety, and the errors of a bad configuration or reference."""

import logging
import math
import threading
import time

import numpy as np
import pytest

from edgekit.errors import UserError
from edgekit.runtime import load
from edgekit.runtime.monitor import LATENCY_BOUNDS_MS, LatencyHistogram, Monitor, MonitorConfig, sample_stride
from edgekit.spec import TensorSpec

REFERENCE = {"calibration": {"x": {"mean": 0.0, "std": 1.0, "min": -4.0, "max": 4.0, "samples": 100}}}
X = (TensorSpec("x", ("batch", 256), "float32"),)


def image_batches(count: int, seed: int) -> list[np.ndarray]:
    """Images for the tiny CNN with batch sizes 1..4 (its batch dim is symbolic)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 5)), 1, 8, 8)).astype(np.float32) for _ in range(count)]


def feed(monitor: Monitor, rng: np.random.Generator, runs: int, mean: float = 0.0, std: float = 1.0) -> None:
    for _ in range(runs):
        monitor.observe({"x": (rng.standard_normal((1, 256)) * std + mean).astype(np.float32)}, 1.0)


def test_running_statistics_equal_numpys_on_the_data_fed(cnn_package):
    """Over runs of varying batch (merged 7 at a time, so the last merge is partial), the cumulative mean, std, min, max
    and out-of-range share equal numpy's over every value fed (float64 sums: 1e-9 is far above their rounding); the
    histogram counts every run, and its sum is within the time the calls took."""
    session = load(cnn_package, monitor=MonitorConfig(batch=7))
    batches = image_batches(40, seed=1)
    started = time.perf_counter()
    for images in batches:
        session.run({"image": images})
    elapsed_ms = (time.perf_counter() - started) * 1e3
    stats = session.stats()
    values = np.concatenate([images.reshape(-1) for images in batches]).astype(np.float64)
    entry = stats["inputs"]["image"]
    reference = session.package.manifest.data["calibration"]["image"]
    assert stats["reference"] == "calibration" and entry["values"] == values.size
    assert entry["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
    assert entry["std"] == pytest.approx(values.std(), rel=1e-9)
    assert (entry["min"], entry["max"]) == (values.min(), values.max())
    outside = np.count_nonzero((values < reference["min"]) | (values > reference["max"]))
    assert entry["outside_share"] == outside / values.size
    latency = stats["latency_ms"]
    assert stats["runs"] == latency["count"] == sum(latency["counts"]) == len(batches)
    assert 0 < latency["sum"] <= elapsed_ms and latency["min"] <= latency["p50"] <= latency["p95"] <= latency["max"]
    run_means = [images.astype(np.float64).mean() for images in batches]  # under `window` runs, each run weighs alike
    assert entry["recent"]["mean"] == pytest.approx(np.mean(run_means), rel=1e-9, abs=1e-12)


def test_histogram_buckets_and_quantile_estimates():
    """Known latencies land in the buckets whose bounds hold them; quantiles interpolate inside the bucket as
    Prometheus' histogram_quantile does and stay within the observed range."""
    histogram = LatencyHistogram()
    histogram.add(np.array([0.5] * 50 + [2.0] * 45 + [40.0] * 5))
    assert histogram.count == 100 and histogram.sum_ms == pytest.approx(0.5 * 50 + 2.0 * 45 + 40.0 * 5)
    index = {value: LATENCY_BOUNDS_MS.index(bound) for value, bound in ((0.5, 0.501), (2.0, 2.0), (40.0, 50.1))}
    assert {i: int(c) for i, c in enumerate(histogram.counts) if c} == {index[0.5]: 50, index[2.0]: 45, index[40.0]: 5}
    assert histogram.quantile(0.5) == pytest.approx(0.501)  # the top of the 0.5 bucket: rank 50 of 50 in it
    assert histogram.quantile(0.95) == pytest.approx(2.0)  # rank 95 is the last in the 2.0 bucket, bound 2.0
    assert 39.8 < histogram.quantile(0.99) <= 40.0  # rank 99 of (39.8, 50.1], clamped to the max seen
    assert LatencyHistogram().quantile(0.5) is None


@pytest.mark.parametrize("mean, std, shift, spread, outside", [
    (0.0, 1.0, 0.0, 0.0, 2 * 3.17e-5),  # in distribution: P(|z| > 4)
    (3.0, 1.0, 3.0, 0.0, 0.1587),  # +3 std: P(z > 1) of the values pass max 4
    (0.0, 2.0, 0.0, math.log(2.0), 2 * 0.02275),  # twice as wide: P(|z| > 2)
])
def test_drift_scores_on_known_shifts(mean, std, shift, spread, outside):
    """score = |Δmean|/std_ref + |ln(std/std_ref)| on 400 runs x 256 values: 0.02 is ~8 standard errors of the mean."""
    monitor = Monitor(X, REFERENCE)
    feed(monitor, np.random.default_rng(0), 400, mean, std)
    entry = monitor.stats()["inputs"]["x"]
    assert entry["drift"]["mean_shift"] == pytest.approx(shift, abs=0.02)
    assert entry["drift"]["spread"] == pytest.approx(spread, abs=0.02)
    assert entry["drift"]["score"] == pytest.approx(entry["drift"]["mean_shift"] + entry["drift"]["spread"])
    assert entry["recent"]["outside_share"] == pytest.approx(outside, abs=0.01)
    assert entry["drifting"] is (shift + spread > 0.5)


def test_recent_statistics_follow_the_last_runs():
    """After 2,000 in-distribution runs, 300 shifted ones move the recent mean (window 100) but barely the cumulative."""
    monitor = Monitor(X, REFERENCE, MonitorConfig(window=100))
    rng = np.random.default_rng(1)
    feed(monitor, rng, 2000)
    feed(monitor, rng, 300, mean=3.0)
    entry = monitor.stats()["inputs"]["x"]
    assert entry["recent"]["mean"] == pytest.approx(3.0 * (1 - (1 - 1 / 100) ** 300), abs=0.05)  # 2.85
    assert entry["mean"] == pytest.approx(3.0 * 300 / 2300, abs=0.02)


def test_one_warning_line_per_drifting_input(caplog):
    monitor = Monitor(X, REFERENCE, MonitorConfig(min_runs=20, batch=8))
    rng = np.random.default_rng(2)
    with caplog.at_level(logging.WARNING, logger="edgekit.runtime"):
        feed(monitor, rng, 200)
        assert caplog.records == []
        feed(monitor, rng, 300, mean=2.0)
    [record] = caplog.records
    message = record.getMessage()
    assert "\n" not in message and message.startswith("input 'x' drifted from the package's data")
    assert "drift score" in message and "outside [-4, 4]" in message
    assert monitor.stats()["inputs"]["x"]["warned"] is True


@pytest.mark.parametrize("centre", [0.0, 1000.0])  # 1000: values far from 0 are centred on the reference mean first
def test_nonfinite_values_are_counted_apart(centre):
    reference = {"calibration": {"x": {"mean": centre, "std": 1.0, "min": centre - 4, "max": centre + 4}}}
    monitor = Monitor(X, reference, MonitorConfig(batch=3))
    values = (np.random.default_rng(3).standard_normal((10, 1, 256)) + centre).astype(np.float32)
    values[2, 0, :5] = np.nan
    values[2, 0, 5:8] = centre + 6  # out of range, in a run that also holds NaNs
    values[4, 0, 0] = -np.inf  # an infinity alone in its merge
    values[7, 0, 9] = np.inf
    values[8, 0, :] = np.nan  # a run with no finite value at all
    for row in values:
        monitor.observe({"x": row}, 1.0)
    entry = monitor.stats()["inputs"]["x"]
    finite = values[np.isfinite(values)].astype(np.float64)
    assert entry["nonfinite"] == 5 + 1 + 1 + 256 and entry["values"] == finite.size
    assert entry["mean"] == pytest.approx(finite.mean(), rel=1e-9) and entry["std"] == pytest.approx(finite.std(), rel=1e-9)
    assert (entry["min"], entry["max"]) == (finite.min(), finite.max())
    assert entry["outside_share"] == np.count_nonzero(np.abs(finite - centre) > 4) / finite.size >= 3 / finite.size
    assert entry["recent"]["runs"] == 9  # the all-NaN run adds nothing


def test_concurrent_runs_are_all_counted(cnn_package):
    session = load(cnn_package, monitor=MonitorConfig(batch=5))
    batches = [image_batches(30, seed=10 + thread) for thread in range(4)]
    threads = [threading.Thread(target=lambda mine=mine: [session.run({"image": images}) for images in mine])
               for mine in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = np.concatenate([images.reshape(-1) for mine in batches for images in mine]).astype(np.float64)
    stats = session.stats()
    assert stats["runs"] == 120 and stats["inputs"]["image"]["values"] == values.size
    assert stats["inputs"]["image"]["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12)
    assert stats["inputs"]["image"]["std"] == pytest.approx(values.std(), rel=1e-9)


def test_a_large_input_is_read_with_a_stride_that_visits_every_channel():
    """An NHWC image of 224x224x3 is read at stride 10 (≤ 16,384 values), which shares no factor with 3 channels."""
    image = np.broadcast_to(np.arange(3, dtype=np.float32), (1, 224, 224, 3)).copy()
    assert sample_stride(image.size, 16384, 3) == 10 and sample_stride(4 * 16384, 16384, 4) == 5
    monitor = Monitor((TensorSpec("x", (1, 224, 224, 3), "float32"),), {}, MonitorConfig(batch=1))
    monitor.observe({"x": image}, 1.0)
    entry = monitor.stats()["inputs"]["x"]
    assert entry["values"] == math.ceil(image.size / 10) and entry["mean"] == pytest.approx(1.0, abs=1e-3)
    assert entry["drift"] is None and entry["outside_share"] is None  # no reference in this manifest


def test_unmonitored_sessions_and_bad_settings_are_clear_errors(cnn_package):
    with pytest.raises(UserError, match=r"not monitored: open it with edgekit.runtime.load\(path, monitor=True\)"):
        load(cnn_package).stats()
    with pytest.raises(UserError, match="window, min_runs, sample_limit and batch must be at least 1"):
        MonitorConfig(window=0)
    with pytest.raises(UserError, match="drift_threshold must be > 0"):
        MonitorConfig(drift_threshold=-1)
    broken = {"calibration": {"x": {"mean": "high", "std": 1, "min": 0, "max": 1}}}
    with pytest.raises(UserError, match="manifest data.calibration.x: expected numbers mean, std, min and max"):
        Monitor(X, broken)
    inverted = {"calibration": {"x": {"mean": 0, "std": 1, "min": 2, "max": 1}}}
    with pytest.raises(UserError, match="min <= max"):
        Monitor(X, inverted)


def test_a_monitor_of_the_wrong_type_is_refused_at_load(cnn_package):
    from edgekit.errors import UserError
    from edgekit.runtime import load

    with pytest.raises(UserError, match="load: monitor is True, False or a MonitorConfig, not dict"):
        load(cnn_package, monitor={"window": 10})
