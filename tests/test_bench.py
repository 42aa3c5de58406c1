"""bench: figures are measured, consistent with each other, and carry their conditions."""

import pytest

from edgekit.bench import bench
from edgekit.bench.harness import measure
from edgekit.errors import UserError


def test_figures_and_conditions(cnn_package):
    result = measure(cnn_package, threads=1, batch=4, runs=20, warmup=2)
    latency = result.latency_ms
    assert 0 < latency.min <= latency.p50 <= latency.p90 <= latency.p99
    assert result.throughput_per_s == pytest.approx(4 * 1000 / latency.mean)
    assert result.conditions["threads"] == 1 and result.conditions["runs"] == 20
    assert result.conditions["input_shapes"] == {"image": [4, 1, 8, 8]}
    assert result.file_bytes > 1000 and result.peak_rss_mb > 10 and result.load_ms > 0


def test_each_package_in_its_own_process(cnn_package):
    results = bench([cnn_package, cnn_package], runs=5, warmup=1)
    assert len(results) == 2 and all(r.target == "cpu-ort" and r.latency_ms.p50 > 0 for r in results)


def test_bad_arguments():
    with pytest.raises(UserError, match="runs and batch must be at least 1"):
        bench(["x"], runs=0)


def test_a_zip_package_is_unpacked_once(cnn_package, tmp_path, monkeypatch):
    import shutil

    from edgekit import package as package_module

    archive = shutil.make_archive(str(tmp_path / "cnn"), "zip", cnn_package)
    unpacked = []
    real_unzip = package_module._unzip
    monkeypatch.setattr(package_module, "_unzip", lambda archive, *rest: unpacked.append(archive) or real_unzip(archive, *rest))
    results = [measure(archive, threads=1, runs=3, warmup=1) for _ in range(2)]
    assert len(unpacked) == 1 and all(result.latency_ms.p50 > 0 for result in results)


def test_median_interval_is_the_binomial_order_statistics():
    """The p50's 95% interval: for 50 runs the 18th and 33rd smallest (P(B <= 17) = 0.016 <= 0.025 < P(B <= 18))."""
    from edgekit.bench.harness import median_interval

    samples = [float(i) for i in range(50)][::-1]
    assert median_interval(samples) == (17.0, 32.0)
    assert median_interval([5.0, 1.0, 3.0]) == (1.0, 5.0)  # too few runs for 95%: the whole range
    low, high = median_interval([2.0] * 10)
    assert low == high == 2.0
