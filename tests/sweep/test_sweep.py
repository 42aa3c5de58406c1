"""`edgekit sweep` on a real local Ray cluster: cells compiled in worker processes, a failing cell kept as a row, the
step cache shared by concurrent workers, a re-run that runs only what changed, and the output folder's rules."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CNN_INPUT, MODELS

from edgekit.cache import verify
from edgekit.cli import main
from edgekit.digest import file_sha256
from edgekit.errors import UserError
from edgekit.sweep import Counts, ModelEntry, Settings, sweep

pytest.importorskip("ray")
SETTINGS = Settings(threads=1, runs=5, warmup=1, compile_bench_runs=3)


def _models(cnn_source: str, calib: Path) -> list[ModelEntry]:
    return [ModelEntry("cnn", cnn_source, str(calib), str(calib), (CNN_INPUT,)),
            ModelEntry("broken", f"{MODELS}:broken_factory", str(calib), str(calib), (CNN_INPUT,))]


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory, cnn_source, cnn_data):
    """One sweep of 2 models × cpu-ort × {fp32, int8} on 2 local workers, its progress reports kept."""
    folder = tmp_path_factory.mktemp("sweep")
    seen: list[Counts] = []
    result = sweep(_models(cnn_source, cnn_data), ("cpu-ort",), ("fp32", "int8"), folder / "runs", settings=SETTINGS,
                   workers=2, cache_dir=folder / "cache", progress=seen.append)
    return folder, result, seen


@pytest.mark.slow
def test_sweep_rows_packages_and_failures(first_sweep):
    folder, result, seen = first_sweep
    rows = {row["cell"]: row for row in result.rows}
    assert list(rows) == ["cnn/cpu-ort/fp32", "cnn/cpu-ort/int8", "broken/cpu-ort/fp32", "broken/cpu-ort/int8"]
    for cell in ("cnn/cpu-ort/fp32", "cnn/cpu-ort/int8"):
        row = rows[cell]
        assert row["status"] == "ok" and not row["reused"] and row["reason"] == ""
        package = folder / "runs" / row["package"]
        with zipfile.ZipFile(package) as archive:
            manifest = json.loads(archive.read("manifest.json"))
        assert manifest["precision"] == row["precision"] == cell.rsplit("/", 1)[1]
        assert row["size_bytes"] == manifest["metrics"]["bench"]["file_bytes"]
        assert row["quality_metric"] == "accuracy" and row["quality"] == manifest["metrics"]["fidelity"]["accuracy"]
        assert 0 < row["latency_ms"]["p50_low"] <= row["latency_ms"]["p50"] <= row["latency_ms"]["p50_high"]
        assert row["conditions"]["threads"] == 1 and row["conditions"]["runs"] == 5
        assert row["compile_s"] > 0 and row["measure_s"] > 0 and "CPU" in row["measured_on"]
        kept = json.loads((folder / "runs" / "cells" / f"{row['key']}.json").read_text())
        assert kept["package_sha256"] == file_sha256(package)
    for cell in ("broken/cpu-ort/fp32", "broken/cpu-ort/int8"):
        assert rows[cell]["status"] == "failed" and "weights file is gone" in rows[cell]["reason"]
        assert rows[cell]["package"] is None and rows[cell]["latency_ms"] is None
    assert result.info["ok"] == 2 and result.info["failed"] == 2 and result.info["workers"] == 2
    assert result.info["ray"] and result.info["cpu"] and result.info["isa"]
    assert seen[-1].done == 4 and seen[-1].running == 0 and seen[-1].failed == 2
    assert any(counts.running > 0 for counts in seen)  # the tasks told the board they started
    saved = json.loads((folder / "runs" / "results.json").read_text())
    assert [row["cell"] for row in saved["rows"]] == list(rows)
    assert (folder / "runs" / "results.csv").read_text().count("\n") == 5
    assert "ek-plot" in (folder / "runs" / "report.html").read_text()


@pytest.mark.slow
def test_concurrent_workers_leave_the_step_cache_intact(first_sweep):
    folder, _, _ = first_sweep
    intact, removed = verify(folder / "cache")
    assert removed == 0 and intact >= 2
    assert not list((folder / "cache").glob("*.partial-*"))


@pytest.mark.slow
def test_rerun_runs_only_what_changed(first_sweep, cnn_source, cnn_data):
    folder, first, _ = first_sweep
    again = sweep(_models(cnn_source, cnn_data), ("cpu-ort",), ("fp32", "int8"), folder / "runs", settings=SETTINGS,
                  workers=2, cache_dir=folder / "cache")
    assert again.info["ray"] is None  # nothing to run: Ray is not even started
    assert all(row["reused"] for row in again.rows)
    assert [row["latency_ms"] for row in again.rows] == [row["latency_ms"] for row in first.rows]
    # new evaluation data for the CNN: its two cells run again (their steps from the cache), the failures are kept
    changed = folder / "eval.npz"
    with np.load(cnn_data) as data:
        np.savez(changed, image=data["image"][:32], labels=data["labels"][:32])
    models = [ModelEntry("cnn", cnn_source, str(cnn_data), str(changed), (CNN_INPUT,)), _models(cnn_source, cnn_data)[1]]
    third = sweep(models, ("cpu-ort",), ("fp32", "int8"), folder / "runs", settings=SETTINGS, workers=2,
                  cache_dir=folder / "cache")
    assert [row["reused"] for row in third.rows] == [False, False, True, True]
    assert all(row["status"] == "ok" for row in third.rows[:2])


def test_output_folder_of_other_files_is_refused(tmp_path, cnn_source, cnn_data):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a sweep's"):
        sweep(_models(cnn_source, cnn_data), ("cpu-ort",), ("fp32",), tmp_path, settings=SETTINGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_cli_mistakes_are_one_line(tmp_path, cnn_source, cnn_data):
    for args, message in ((["--targets", "cpu-orrt", "--recipes", "fp32"], "unknown target 'cpu-orrt'"),
                          (["--targets", "cpu-ort", "--recipes", "int9-magic"], "--recipes int9-magic"),
                          (["--targets", "cpu-ort", "--recipes", "fp32", "--device", "rpi5"], "not rpi5")):
        result = CliRunner().invoke(main, ["sweep", cnn_source, "--calib", str(cnn_data), "--input", CNN_INPUT,
                                           "-o", str(tmp_path / "runs"), "--workers", "1", *args])
        assert result.exit_code == 1, result.output
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_cell_that_distills_runs_on_several_processes(tmp_path, cnn_source, cnn_data):
    """--distill-processes 2: the cell's compile runs under torchrun (2 ranks, gloo) and the package says so."""
    models = [ModelEntry("cnn", cnn_source, str(cnn_data), str(cnn_data), (CNN_INPUT,))]
    settings = Settings(threads=1, runs=5, warmup=1, compile_bench_runs=3, distill_processes=2)
    result = sweep(models, ("cpu-ort",), ("prune-distill-fp32", "fp32"), tmp_path / "runs", settings=settings,
                   workers=2, cache_dir=tmp_path / "cache")
    distilled, plain = result.rows
    assert distilled["status"] == "ok", distilled["reason"]
    with zipfile.ZipFile(tmp_path / "runs" / distilled["package"]) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    [report] = [r for r in manifest["reports"] if r.get("pass") == "distill"]
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    assert plain["status"] == "ok" and plain["precision"] == "fp32"
