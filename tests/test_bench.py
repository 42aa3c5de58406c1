"""bench: figures are measured, consistent with each other and with their raw samples, and carry their conditions;
--baseline calls a change only beyond the noise; Session.self_test runs the package's golden samples."""

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.bench import bench
from edgekit.bench.baseline import compare, read_baseline
from edgekit.bench.harness import measure
from edgekit.bench.machine import CPUFREQ, cpu_frequency
from edgekit.bench.noise import Median, faster_beyond_noise
from edgekit.cli import main
from edgekit.digest import file_sha256
from edgekit.errors import UserError
from edgekit.manifest import BenchRecord
from edgekit.package import read_package
from edgekit.runtime import load, open_model
from edgekit.schema import build


def _consistent(record: BenchRecord, runs: int) -> None:
    """The summary is the raw samples': as many as runs, p50 their median, inside its interval, percentiles ordered."""
    latency = record.latency_ms
    assert len(latency.samples) == runs and all(sample > 0 for sample in latency.samples)
    assert latency.p50 == statistics.median(latency.samples)
    assert latency.p50_low <= latency.p50 <= latency.p50_high
    assert latency.min == min(latency.samples) <= latency.p50 <= latency.p90 <= latency.p99 <= max(latency.samples)
    assert latency.mean == pytest.approx(statistics.fmean(latency.samples))


def _governor() -> str:
    return (CPUFREQ / "scaling_governor").read_text().strip() if os.path.exists(CPUFREQ) else "unavailable"


def test_figures_and_conditions(cnn_package):
    result = measure(cnn_package, threads=1, batch=4, runs=20, warmup=2)
    _consistent(result, 20)
    assert result.throughput_per_s == pytest.approx(4 * 1000 / result.latency_ms.mean)
    assert result.conditions["threads"] == 1 and result.conditions["runs"] == 20
    assert result.conditions["input_shapes"] == {"image": [4, 1, 8, 8]}
    assert result.conditions["cpu_frequency"]["governor"] == _governor()
    assert result.file_bytes > 1000 and result.load_ms > 0 and result.warm_load_ms > 0
    assert result.cold_load is False  # compiling the package imported onnxruntime in this process already
    peak_now = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                        if line.startswith("VmHWM:")).split()[1]) / 1024
    assert 10 < result.peak_rss_mb <= peak_now and 0 <= result.rss_growth_mb <= result.peak_rss_mb
    assert result.model_sha256 == read_package(cnn_package).manifest.metrics.bench.model_sha256 != ""


def test_each_package_in_its_own_process(cnn_package):
    results = bench([cnn_package, cnn_package], runs=5, warmup=1)
    assert len(results) == 2 and all(r.target == "cpu-ort" for r in results)
    for record in results:
        _consistent(record, 5)
        assert record.cold_load is True  # a fresh worker: the first load imported onnxruntime
        assert record.conditions["cpu_frequency"]["governor"] == _governor()
        assert build(BenchRecord, json.loads(json.dumps(dataclasses.asdict(record))), "round trip") == record


def test_the_harness_runs_with_numpy_and_one_runtime_only(runtime_only_python, cnn_package):
    """The worker a device runs: no torch, click, rich, PyYAML or psutil in that venv."""
    done = subprocess.run([runtime_only_python, "-m", "edgekit.bench.worker", str(cnn_package), "--runs", "7",
                           "--warmup", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = build(BenchRecord, json.loads(done.stdout.splitlines()[-1]), "worker")
    _consistent(record, 7)
    assert record.cold_load is True and record.conditions["runtime_version"] not in ("", "unknown")


def test_cpu_frequency_is_what_cpufreq_says_or_unavailable(tmp_path):
    (tmp_path / "scaling_governor").write_text("performance\n")
    (tmp_path / "scaling_cur_freq").write_text("2800000\n")
    (tmp_path / "cpuinfo_max_freq").write_text("3500000\n")
    assert cpu_frequency(tmp_path) == {"governor": "performance", "cur_mhz": 2800.0, "max_mhz": 3500.0}
    (tmp_path / "scaling_cur_freq").unlink()
    assert cpu_frequency(tmp_path)["cur_mhz"] == "unavailable"
    missing = tmp_path / "absent"
    assert cpu_frequency(missing) == {"governor": "unavailable", "cur_mhz": "unavailable", "max_mhz": "unavailable"}


def test_bad_arguments():
    with pytest.raises(UserError, match="runs and batch must be at least 1"):
        bench(["x"], runs=0)


def test_a_zip_package_is_unpacked_once(cnn_package, tmp_path, monkeypatch):
    import tempfile

    from edgekit import package as package_module

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # unpacked by no earlier test (same bytes, same sha)
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


def test_the_noise_rule():
    """Faster only with the intervals apart and the p50 at least the margin below the other."""
    assert faster_beyond_noise(Median(1.0, 0.9, 1.1), Median(2.0, 1.8, 2.2), 0.05)
    assert not faster_beyond_noise(Median(1.0, 0.9, 1.9), Median(2.0, 1.8, 2.2), 0.05)  # intervals overlap
    assert not faster_beyond_noise(Median(1.97, 1.96, 1.98), Median(2.0, 1.99, 2.01), 0.05)  # apart, but only 1.5%


# --baseline -----------------------------------------------------------------------------------------------------------

def _invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def baseline(cnn_package, tmp_path_factory) -> Path:
    """A real `edgekit bench --json` output of the CNN package."""
    code, stdout, stderr = _invoke("bench", cnn_package, "--runs", 30, "--warmup", 3, "--json")
    assert code == 0, stderr
    path = tmp_path_factory.mktemp("baseline") / "old.json"
    path.write_text(stdout)
    return path


def test_the_same_records_are_the_same_within_the_noise(baseline):
    records = read_baseline(baseline)
    [same] = compare(records, records)
    assert (same.verdict, same.matched_by, same.change, same.differences, same.across_cpus) == ("same", "name", 0.0, (), False)
    moved = [dataclasses.replace(records[0], package="elsewhere/renamed")]
    [by_model] = compare(moved, records)
    assert (by_model.verdict, by_model.matched_by) == ("same", "model")
    other = [dataclasses.replace(records[0], package="other", model_sha256="0" * 64)]
    assert compare(other, records)[0].verdict == "unmatched"
    from_device = baseline.with_name("device.json")  # `bench --device --json` puts the device's identity beside each
    from_device.write_text(json.dumps([{**json.loads(baseline.read_text())[0], "device": {"name": "pi", "os": "Linux"}}]))
    assert read_baseline(from_device) == records


def test_bench_against_its_own_baseline_says_how_it_compares(cnn_package, baseline):
    code, stdout, stderr = _invoke("bench", cnn_package, "--runs", 30, "--warmup", 3, "--baseline", baseline)
    assert "cold load ms" in stdout and ("cpu0 governor" in stdout or "CPU governor and frequency unavailable" in stdout)
    [line] = [line for line in stdout.splitlines() if line.startswith(f"{cnn_package}: ")]
    verdict = next(word for word in ("same within the noise", "faster by", "slower by") if word in line)
    assert code == (1 if verdict == "slower by" else 0), stderr  # a re-measurement: the verdict is what it measured
    assert "rule: slower or faster only when the p50s' 95% intervals are apart and the faster p50 is at least 5%" in stdout
    assert "ACROSS CPUS" not in line


def test_a_much_faster_baseline_flags_the_regression_and_another_cpu(cnn_package, baseline, tmp_path):
    """1000x faster: below what any run through Python can take (~µs), however loaded the machine was for either run."""
    [record] = json.loads(baseline.read_text())
    latency = record["latency_ms"]
    for key in ("p50", "p90", "p99", "mean", "min", "std", "p50_low", "p50_high"):
        latency[key] /= 1000
    latency["samples"] = [sample / 1000 for sample in latency["samples"]]
    record["conditions"]["cpu"] = "Faster CPU 9000"
    faster = tmp_path / "faster.json"
    faster.write_text(json.dumps([record]))
    code, stdout, stderr = _invoke("bench", cnn_package, "--runs", 30, "--warmup", 3, "--baseline", faster, "--json")
    assert code == 1
    assert len(json.loads(stdout)[0]["latency_ms"]["samples"]) == 30  # --json stays the records: a later baseline
    [line] = [line for line in stderr.splitlines() if line.startswith(f"{cnn_package}: ")]
    change = float(line.split("slower by ")[1].split("%")[0])
    assert change > 1000 and "beyond the noise" in line
    assert "ACROSS CPUS: cpu Faster CPU 9000 then," in line and "1 of 1 slower beyond the noise" in stderr


@pytest.mark.parametrize("content, message", [
    ("not json", r"not the JSON `edgekit bench --json` writes \(Expecting value: line 1 column 1"),
    ('{"package": "x"}', r"expected the list of records `edgekit bench --json` writes, got dict"),
    ("[]", r"expected the list of records .* got an empty list"),
    ('[{"package": "x"}]', r"record 0: missing parameter\(s\) target, runtime"),
    ("REPLACE_P50_NAN", r"NaN is not a measured number"),
    ("REPLACE_P50_NEGATIVE", r"record 0: latency_ms needs 0 < p50_low <= p50 <= p50_high"),
    ("REPLACE_ESCAPE", r"baseline\[0\].package holds control characters"),
])
def test_a_malformed_baseline_is_one_line(baseline, tmp_path, content, message):
    [record] = json.loads(baseline.read_text())
    if content == "REPLACE_P50_NAN":
        content = json.dumps([record]).replace(f'"p50": {json.dumps(record["latency_ms"]["p50"])}', '"p50": NaN')
    elif content == "REPLACE_P50_NEGATIVE":
        content = json.dumps([{**record, "latency_ms": {**record["latency_ms"], "p50": -1.0}}])
    elif content == "REPLACE_ESCAPE":
        content = json.dumps([{**record, "package": "cnn\x1b]0;owned\x07"}])
    path = tmp_path / "old.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_baseline(path)


@pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux's /proc/self/mem")
def test_an_unreadable_baseline_is_one_line(tmp_path):
    """A file that cannot be read (a permission, an I/O error; /proc/self/mem fails to read at offset 0 even for root)."""
    code, stdout, stderr = _invoke("bench", tmp_path / "no-package", "--baseline", "/proc/self/mem")
    assert code == 1 and stdout == ""
    assert stderr.strip().splitlines() == ["error: --baseline /proc/self/mem: cannot read it: Input/output error"]


def test_a_malformed_baseline_stops_the_cli_before_measuring(tmp_path):
    (tmp_path / "old.json").write_text("[1, 2")
    code, stdout, stderr = _invoke("bench", tmp_path / "no-package", "--baseline", tmp_path / "old.json")
    assert code == 1 and stdout == ""
    assert stderr.strip().splitlines() == [f"error: --baseline {tmp_path / 'old.json'}: not the JSON `edgekit bench --json` "
                                           "writes (Expecting ',' delimiter: line 1 column 6 (char 5))"]


# Session.self_test -----------------------------------------------------------------------------------------------------

def test_self_test_passes_on_the_package_as_built(cnn_package):
    session = load(cnn_package)
    result = session.self_test()
    assert result.ok and result.samples == 4 and result.worst_output == session.outputs[0].name == "output"
    assert result.worst["max_rel"] <= 1e-3 and "max_rel <=" in result.criterion


def test_self_test_fails_naming_the_worst_output_when_the_golden_outputs_are_altered(cnn_package, tmp_path):
    package = tmp_path / "pkg"
    shutil.copytree(cnn_package, package)
    golden = package / "golden.npz"
    with np.load(golden) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays["s1_out0"] = arrays["s1_out0"] * 1.05 + 0.01
    np.savez(golden, **arrays)
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["golden"]["file"].update(sha256=file_sha256(golden), bytes=golden.stat().st_size)
    (package / "manifest.json").write_text(json.dumps(manifest))
    result = load(package).self_test()
    assert not result.ok and result.worst_output == "output" and result.worst["max_rel"] > 1e-2


def test_self_test_needs_a_package(cnn_package):
    package = read_package(cnn_package)
    session = open_model("onnxruntime", package.files, package.manifest.inputs, package.manifest.outputs)
    with pytest.raises(UserError, match=r"self_test: this session was opened from model files \(open_model\)"):
        session.self_test()


def test_a_schema_4_bench_record_still_reads(cnn_package, tmp_path):
    """Schema 4 had no raw samples, warm load, cold flag or model hash."""
    copy = tmp_path / "pkg"
    shutil.copytree(cnn_package, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    record = manifest["metrics"]["bench"]
    for key in ("warm_load_ms", "cold_load", "model_sha256"):
        record.pop(key)
    record["latency_ms"].pop("samples")
    manifest["schema"] = 4
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bench_record = read_package(copy).manifest.metrics.bench
    assert bench_record.latency_ms.samples == () and bench_record.warm_load_ms is None and bench_record.model_sha256 == ""
