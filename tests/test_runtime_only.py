"""A runtime-only install (`edgekit[runtime-ort]`: numpy and ONNX Runtime) runs packages as the full install does,
imports nothing of the compile side, imports `edgekit.runtime` fast, and its `edgekit` command says what to install.
Loading warns (or, for TensorRT, refuses) when the installed runtime is older than the package's builder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import UserError
from edgekit.runtime import load
from edgekit.runtime.versions import installed_version, release, version_problem

COMPILE_SIDE = ("torch", "click", "rich", "yaml", "psutil", "onnx")
IMPORT_BUDGET_S = 0.150
IMPORT_RUNS = 7

# in the runtime-only venv: every runtime-path module (all of edgekit.runtime's among them) imports, a package (folder
# and .zip) loads and runs, bench's harness measures it; prints what ran and which compile-side modules got imported
ON_DEVICE = """
import importlib, json, pkgutil, shutil, sys
import numpy as np
import edgekit.runtime
from edgekit.bench.harness import measure
from edgekit.bench.machine import peak_rss_mb, rss_mb
package, data, out, zipped = sys.argv[1:5]
for name in ("edgekit.package", "edgekit.manifest", "edgekit.schema", "edgekit.golden", "edgekit.isa",
             "edgekit.verify", "edgekit.signing", "edgekit.bench.worker",
             *(f"edgekit.runtime.{found.name}" for found in pkgutil.iter_modules(edgekit.runtime.__path__))):
    importlib.import_module(name)
images = np.load(data)["image"]
outputs = edgekit.runtime.load(package, threads=1).run({"image": images})
archive = shutil.make_archive(zipped, "zip", package)
from_zip = edgekit.runtime.load(archive, threads=1).run({"image": images})
np.savez(out, **outputs)
record = measure(package, threads=1, runs=5, warmup=1)
import onnxruntime
print(json.dumps({"same_from_zip": all(np.array_equal(outputs[k], from_zip[k]) for k in outputs),
                  "bench_p50_ms": record.latency_ms.p50, "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb(),
                  "onnxruntime": onnxruntime.__version__,
                  "imported": sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[5].split(","))}))
"""

# seconds (CPU, wall) of `import numpy`, then of `import edgekit.runtime`, in one fresh process
IMPORT_TIME = """
import time
cpu, wall = time.process_time(), time.perf_counter()
import numpy
numpy_cpu, numpy_wall = time.process_time(), time.perf_counter()
import edgekit.runtime
print(numpy_cpu - cpu, numpy_wall - wall, time.process_time() - numpy_cpu, time.perf_counter() - numpy_wall)
"""


def _installed(python: Path) -> set[str]:
    listing = subprocess.run([python, "-c", "import importlib.metadata as m, json; "
                              "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"],
                             capture_output=True, text=True, check=True)
    return {name.lower() for name in json.loads(listing.stdout)}


def test_the_venv_holds_numpy_and_onnxruntime_and_none_of_the_compile_side(runtime_only_python):
    installed = _installed(runtime_only_python)
    assert {"edgekit", "numpy", "onnxruntime"} <= installed
    assert not installed & {"torch", "click", "rich", "pyyaml", "psutil", "onnx", "onnxslim", "openvino"}


@pytest.fixture(scope="module")
def on_device(runtime_only_python, cnn_package, cnn_data, tmp_path_factory) -> tuple[dict, Path]:
    """The ON_DEVICE script's report and the outputs it wrote."""
    folder = tmp_path_factory.mktemp("on-device")
    out = folder / "outputs.npz"
    done = subprocess.run([runtime_only_python, "-c", ON_DEVICE, str(cnn_package), str(cnn_data), str(out),
                           str(folder / "cnn"), ",".join(COMPILE_SIDE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), out


def test_a_package_runs_there_as_in_the_full_install(on_device, cnn_package, cnn_data):
    report, out = on_device
    images = np.load(cnn_data)["image"]
    here = load(cnn_package, threads=1).run({"image": images})
    there = dict(np.load(out))
    assert there.keys() == here.keys() and report["same_from_zip"]
    if report["onnxruntime"] == installed_version("onnxruntime"):
        tolerance = 0.0  # the same kernels on one thread, same CPU, same inputs: bit for bit
    else:  # two float32 implementations each within the build's measured distance of the source model
        fidelity = json.loads((cnn_package / "manifest.json").read_text())["metrics"]["fidelity"]
        tolerance = 2 * fidelity["max_abs"]
    for name, expected in here.items():
        np.testing.assert_allclose(there[name], expected, rtol=0, atol=tolerance)
    assert report["bench_p50_ms"] > 0
    assert 10 < report["rss_mb"] <= report["peak_rss_mb"]  # bench's memory now, without psutil: numpy alone is >10 MB


def test_nothing_of_the_compile_side_is_imported_by_load_run_or_bench(on_device):
    report, _ = on_device
    assert report["imported"] == []


def test_import_edgekit_runtime_is_under_150_ms(runtime_only_python):
    """What importing edgekit.runtime adds to an app, which has numpy already (its feeds are numpy arrays), judged on
    CPU time, the import's own work: wall time adds whatever the process waited for a core on a busy machine (the
    same figure on an idle one). numpy's own import is printed beside it: on a small VM it alone can take 100-160 ms
    (OpenBLAS starting its threads)."""
    from edgekit.isa import host_cpu

    runs = [[float(value) for value in subprocess.run([runtime_only_python, "-c", IMPORT_TIME], capture_output=True,
                                                      text=True, check=True).stdout.split()] for _ in range(IMPORT_RUNS)]
    numpy_cpu, numpy_wall, cpu_s, wall_s = (statistics.median(column) for column in zip(*runs))
    machine = host_cpu()
    conditions = (f"median of {IMPORT_RUNS} fresh processes on {machine.model} ({machine.isa.name}: "
                  f"{' '.join(machine.flags)}), load average {os.getloadavg()[0]:.1f}")
    print(f"import edgekit.runtime: {cpu_s * 1e3:.0f} ms CPU, {wall_s * 1e3:.0f} ms wall after numpy's "
          f"{numpy_cpu * 1e3:.0f} ms CPU, {numpy_wall * 1e3:.0f} ms wall ({conditions})")
    assert cpu_s < IMPORT_BUDGET_S, f"{cpu_s * 1e3:.0f} ms CPU ({conditions})"


def test_the_edgekit_command_says_which_extra_to_install(runtime_only_python):
    done = subprocess.run([runtime_only_python.parent / "edgekit", "compile", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: the edgekit command is not part of this runtime-only install (no click, "
                                  "yaml, rich): pip install 'edgekit[cli]'")


def _with_builder_version(cnn_package: Path, folder: Path, built: str) -> Path:
    """A copy of the package whose manifest says ONNX Runtime `built` made it (the manifest is not hashed)."""
    copy = folder / f"copy-{sum(1 for _ in folder.iterdir())}"
    shutil.copytree(cnn_package, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["provenance"]["versions"]["onnxruntime"] = built
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_runtime_older_than_the_builder_warns_once_and_still_runs(cnn_package, tmp_path, caplog):
    installed = installed_version("onnxruntime")
    major, minor = release(installed)[:2]
    newer = f"{major}.{minor + 1}.0"
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        session = load(_with_builder_version(cnn_package, tmp_path, newer))
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].endswith(f": built with onnxruntime {newer}, newer than this {installed}, which may not know "
                                f"all it uses: install onnxruntime>={major}.{minor + 1}")
    assert session.run({"image": np.zeros((1, 1, 8, 8), np.float32)})["output"].shape == (1, 4)


def test_the_same_or_an_older_builder_does_not_warn(cnn_package, tmp_path, caplog):
    installed = installed_version("onnxruntime")
    major, minor = release(installed)[:2]
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        load(cnn_package)
        load(_with_builder_version(cnn_package, tmp_path, f"{major}.{minor}.99"))  # a later patch release
        load(_with_builder_version(cnn_package, tmp_path, "1.0.0"))
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_a_garbled_version_record_is_not_read(cnn_package, tmp_path, caplog):
    """A package is someone else's file: versions that are no mapping, or a 5000-digit version, are passed over."""
    garbled = _with_builder_version(cnn_package, tmp_path, "9" * 5000)
    listed = _with_builder_version(cnn_package, tmp_path, "1.0.0")
    manifest = json.loads((listed / "manifest.json").read_text())
    manifest["provenance"]["versions"] = ["onnxruntime", "99.0.0"]
    (listed / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="edgekit"):
        outputs = [load(package).run({"image": np.ones((1, 1, 8, 8), np.float32)}) for package in (garbled, listed)]
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    np.testing.assert_array_equal(outputs[0]["output"], outputs[1]["output"])


def test_a_file_the_older_runtime_refuses_names_the_version_in_the_error(cnn_package, tmp_path, caplog):
    """A model stamped with an opset this ONNX Runtime does not know, as a newer builder would write it."""
    import onnx

    from edgekit.digest import file_sha256

    copy = _with_builder_version(cnn_package, tmp_path, "99.0.0")
    model = onnx.load(copy / "model.onnx")
    for opset in model.opset_import:
        opset.version = 99 if opset.domain in ("", "ai.onnx") else opset.version
    onnx.save(model, copy / "model.onnx")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][0].update(sha256=file_sha256(copy / "model.onnx"), bytes=(copy / "model.onnx").stat().st_size)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="edgekit"), pytest.raises(UserError) as refused:
        load(copy)
    assert "onnxruntime cannot open model.onnx: " in str(refused.value)
    assert str(refused.value).endswith(f"(it was built with onnxruntime 99.0.0, newer than this "
                                       f"{installed_version('onnxruntime')}, which may not know all it uses: "
                                       "install onnxruntime>=99.0)")


@pytest.mark.parametrize(("runtime", "built", "installed", "expected"), [
    ("openvino", "2026.4.1-22982-e213a147257-releases/2026/4", "2025.1.0", False),  # an IR from a newer OpenVINO
    ("openvino", "2025.1.0", "2026.4.1-22982-e213a147257-releases/2026/4", None),
    ("tflite", "2.3.0", "1.4.0", False),
    ("executorch", "1.5.1+cpu", "1.4.0", False),
    ("executorch", "1.5.1+cpu", "1.5.0", None),  # patch releases keep the format
    ("tensorrt", "10.3.0.26", "10.3.0.26", None),
    ("tensorrt", "10.3.0.26", "10.4.0.1", True),  # an engine runs only on its builder's release: either way
    ("tensorrt", "10.4.0.1", "10.3.0.26", True),
])
def test_the_rule_per_runtime(runtime, built, installed, expected):
    problem = version_problem(runtime, built, installed)
    assert (problem[1] if problem else None) == expected
    if problem:
        assert built in problem[0] and installed in problem[0]
