"""Someone else's package, someone else's cache entry, the user's own folders: a package is only the files its
manifest lists and hashes, a package sets no runtime option that writes or reads elsewhere, `-o` replaces only an
intact package, and a step cache entry that was tampered with is rebuilt, never shipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import CNN_INPUT

from edgekit.compiler import compile
from edgekit.errors import UserError
from edgekit.runtime import load
from edgekit.spec import parse_input_spec

CNN = (parse_input_spec(CNN_INPUT),)


def _copy(package: Path, tmp_path: Path, edit=None) -> Path:
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    if edit is not None:
        manifest = json.loads((copy / "manifest.json").read_text())
        edit(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("path", ["../outside.onnx", "/etc/hostname", "sub/../../outside.onnx", ""])
def test_a_manifest_path_that_leaves_the_package_is_refused(cnn_package, tmp_path, path):
    (tmp_path / "outside.onnx").write_bytes((cnn_package / "model.onnx").read_bytes())
    copy = _copy(cnn_package, tmp_path, lambda m: m["files"][0].update(path=path))
    with pytest.raises(UserError, match=r"file path .* leaves the package"):
        load(copy)


def test_links_and_unlisted_files_are_refused(cnn_package, tmp_path):
    copy = _copy(cnn_package, tmp_path)
    (tmp_path / "elsewhere.onnx").write_bytes((copy / "model.onnx").read_bytes())
    (copy / "model.onnx").unlink()
    (copy / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")  # same bytes, same sha256: still not its own file
    with pytest.raises(UserError, match=r"model.onnx is a link; a package holds its own files"):
        load(copy)
    (copy / "model.onnx").unlink()
    shutil.copy(tmp_path / "elsewhere.onnx", copy / "model.onnx")
    (copy / "weights.data").write_bytes(b"external data the manifest does not hash")
    with pytest.raises(UserError, match=r"weights.data is not listed in the manifest"):
        load(copy)


@pytest.fixture(scope="module")
def openvino_package(tmp_path_factory, cnn_source, cnn_data) -> Path:
    out = tmp_path_factory.mktemp("ov") / "pkg"
    compile(cnn_source, "cpu-openvino", out, "fp32", cnn_data, cnn_data, CNN, bench_runs=2)
    return out


def test_a_package_cannot_make_the_runtime_write_elsewhere(openvino_package, tmp_path):
    cache = tmp_path / "written-by-openvino"
    copy = _copy(openvino_package, tmp_path, lambda m: m["target"]["options"]["config"].update(CACHE_DIR=str(cache)))
    with pytest.raises(UserError, match=r"its runtime options set config.CACHE_DIR, which only your own target file"):
        load(copy)
    assert not cache.exists()
    honest = _copy(openvino_package, tmp_path / "honest")
    assert load(honest).execution_precision == "fp32"  # its own precision hint is one a package may set


def test_an_ort_package_sets_no_provider_path(cnn_package, tmp_path):
    def engine_cache(manifest: dict) -> None:
        manifest["target"]["options"]["provider_options"] = [{"trt_engine_cache_path": str(tmp_path / "x")}]

    with pytest.raises(UserError, match=r"provider_options.trt_engine_cache_path"):
        load(_copy(cnn_package, tmp_path, engine_cache))


def test_output_replaces_only_an_intact_package(cnn_package, cnn_source, cnn_data, tmp_path):
    webapp = tmp_path / "webapp"
    (webapp / "src").mkdir(parents=True)
    (webapp / "src" / "app.js").write_text("the user's code")
    (webapp / "manifest.json").write_text('{"name": "my web app"}')  # a PWA manifest, not ours
    with pytest.raises(UserError, match=r"webapp exists and is not an intact edgekit package .*nothing was changed"):
        compile(cnn_source, "cpu-ort", webapp, "fp32", cnn_data, cnn_data, CNN, bench_runs=2)
    assert (webapp / "src" / "app.js").read_text() == "the user's code"
    package = _copy(cnn_package, tmp_path)
    (package / "notes.txt").write_text("the user's notes")
    with pytest.raises(UserError, match=r"notes.txt is not listed in the manifest"):
        compile(cnn_source, "cpu-ort", package, "fp32", cnn_data, cnn_data, CNN, bench_runs=2)
    assert (package / "notes.txt").read_text() == "the user's notes"
    (package / "notes.txt").unlink()
    replaced = compile(cnn_source, "cpu-ort", package, "fp32", cnn_data, cnn_data, CNN, bench_runs=2)
    assert replaced.package == package and load(package).inputs[0].name == "image"


def _entry_of(cache: Path, result, pass_name: str) -> Path:
    key = next(r.cache_key for r in result.records if r.pass_name == pass_name)
    return cache / key


@pytest.mark.parametrize("tamper, why", [
    ("swap", "does not match its sha256"),
    ("escape", "is not a plain file of the entry"),
    ("truncate", "is corrupt ("),
])
def test_a_tampered_cache_entry_is_rebuilt_not_shipped(cnn_source, cnn_data, tmp_path, caplog, tamper, why):
    cache = tmp_path / "cache"
    first = compile(cnn_source, "cpu-ort", tmp_path / "a", "int8", cnn_data, cnn_data, CNN, cache, bench_runs=2)
    int8 = _entry_of(cache, first, "quantize-static")
    fp32 = _entry_of(cache, first, "optimize-onnx")
    record = json.loads((int8 / "model.json").read_text())
    if tamper == "swap":  # the int8 entry now holds the fp32 model
        shutil.copy(fp32 / "model.onnx", int8 / "model.onnx")
    elif tamper == "escape":
        (int8 / "model.json").write_text(json.dumps({**record, "files": ["../../../../etc/hostname"]}))
    else:
        (int8 / "model.json").write_text((int8 / "model.json").read_text()[:40])
    with caplog.at_level("WARNING", logger="edgekit"):
        second = compile(cnn_source, "cpu-ort", tmp_path / "b", "int8", cnn_data, cnn_data, CNN, cache, bench_runs=2)
    assert "step cache entry" in caplog.text and why in caplog.text
    assert {r.pass_name: r.cached for r in second.records}["quantize-static"] is False
    assert second.manifest.files[0].sha256 == first.manifest.files[0].sha256  # the int8 model, rebuilt
    assert [entry.path for entry in second.manifest.files] == ["model.onnx"]
    third = compile(cnn_source, "cpu-ort", tmp_path / "c", "int8", cnn_data, cnn_data, CNN, cache, bench_runs=2)
    assert all(r.cached for r in third.records)  # the rebuilt entry is trusted again


def test_leftovers_of_a_killed_run_are_removed_by_the_next(cnn_source, cnn_data, tmp_path):
    import os

    dead, alive = 99_999_999, os.getpid()  # no such process; this one
    stale = tmp_path / f".pkg.partial-{dead}-abc"
    running = tmp_path / f".pkg.partial-{alive}-def"
    for folder in (stale, running):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half written")
    compile(cnn_source, "cpu-ort", tmp_path / "pkg", "fp32", cnn_data, cnn_data, CNN, bench_runs=2)
    assert not stale.exists() and running.exists()  # a live process's folder is its own business
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["pkg", running.name])


def test_bad_input_is_one_line_not_a_traceback_or_a_silent_success(cnn_package, tmp_path):
    """Cases of the red-team list: each a one-line error with a non-zero exit, nothing written."""
    import zipfile

    from click.testing import CliRunner
    from conftest import MODELS

    from edgekit.cli import main

    def invoke(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        return result.exit_code, result.stderr.strip().splitlines()

    code, lines = invoke("compile", f"{MODELS}:exiting_factory", "-t", "cpu-ort", "-o", tmp_path / "exit")
    assert code == 1 and lines[-1].endswith("exiting_factory() raised SystemExit: 0") and not (tmp_path / "exit").exists()
    code, lines = invoke("compile", f"{MODELS}:tiny_cnn", "-t", "cpu-ort", "--input", CNN_INPUT, "--input", "image:1x1x8x8")
    assert code == 1 and lines[-1] == "error: --input image given more than once; give each input once"
    code, lines = invoke("compile", f"{MODELS}:tiny_cnn", "-t", "cpu-ort", "--input", CNN_INPUT, "-o", "/proc/edgekit")
    assert code == 1 and lines[-1].startswith("error: cannot write /proc/edgekit:")
    code, lines = invoke("bench", cnn_package, "--threads", "-1")
    assert code == 2 and "-1 is not in the range x>=1" in lines[-1]
    with pytest.raises(UserError, match=r"feeds: expected a mapping of input name → numpy array, got NoneType"):
        load(cnn_package).run(None)  # type: ignore[arg-type]
    doubled = tmp_path / "doubled.zip"
    with zipfile.ZipFile(doubled, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        for path in sorted(cnn_package.iterdir()):
            archive.write(path, path.name)
        archive.writestr("model.onnx", b"the last one would win")
    with pytest.raises(UserError, match=r"model.onnx appear more than once in the archive"):
        load(doubled)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", "{}")
        archive.writestr("model.onnx", bytes(64 * 2**20))  # 64 MiB of zeros in ~64 kB
    with pytest.raises(UserError, match=r"model.onnx expands over 200x its compressed size"):
        load(bomb)


def test_a_random_pte_is_refused_before_executorch_can_abort_the_process(tmp_path):
    """ExecuTorch's loader aborts (SIGABRT) on some malformed files: run in a child, which must exit cleanly."""
    import subprocess
    import sys

    garbage = tmp_path / "random.pte"
    garbage.write_bytes(bytes(range(256)) * 4)
    child = subprocess.run([sys.executable, "-c", "from edgekit.runtime.executorch import load_program\n"
                            "from edgekit.errors import UserError\n"
                            f"try:\n    load_program({str(garbage)!r})\nexcept UserError as error:\n    print(error)"],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-500:]
    assert child.stdout.strip() == f"{garbage} is not a valid ExecuTorch program: no ExecuTorch flatbuffer header"


def test_an_empty_data_set_is_one_line(tmp_path):
    import numpy as np

    from edgekit.data import load_data

    empty = tmp_path / "empty.npz"
    np.savez(empty, image=np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(UserError, match=r"empty.npz: input\(s\) image hold no samples"):
        load_data(empty, CNN)


def test_two_compiles_sharing_a_cache_compute_each_step_once(cnn_source, cnn_data, tmp_path):
    """Each step's key is locked while one process computes it: the other waits and uses the result."""
    import os
    import subprocess
    import sys

    from conftest import CNN_INPUT

    cache = tmp_path / "cache"
    env = {**os.environ, "EDGEKIT_CACHE_DIR": str(tmp_path / "home")}
    command = [sys.executable, "-m", "edgekit.cli", "compile", cnn_source, "-t", "cpu-ort", "-r", "int8", "--calib",
               str(cnn_data), "--eval", str(cnn_data), "--input", CNN_INPUT, "--cache-dir", str(cache),
               "--bench-runs", "2"]
    running = [subprocess.Popen([*command, "-o", str(tmp_path / name)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    errors = [process.communicate(timeout=300)[1] for process in running]
    assert [process.returncode for process in running] == [0, 0], errors
    steps = [json.loads((tmp_path / name / "manifest.json").read_text())["steps"] for name in ("a", "b")]
    assert len(steps[0]) == len(steps[1]) == 3
    computed = [sum(not step["cached"] for step in pair) for pair in zip(*steps)]
    assert computed == [1, 1, 1]  # per step: one compile computed it, the other read it
    assert not list(cache.glob("*.partial-*"))


def test_output_to_the_current_folder_is_refused(cnn_source, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgekit.cli import main

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for output in (".", "sub/..", str(here)):
        result = CliRunner().invoke(main, ["compile", cnn_source, "-t", "cpu-ort", "--input", CNN_INPUT, "-o", output,
                                           "--bench-runs", "1", "--no-cache"])
        assert result.exit_code == 1 and result.stderr.strip().splitlines()[-1] == (
            f"error: -o {output} names a folder by a relative step or the current folder; give the package a path of "
            "its own (a new or empty folder, or NAME.zip)")
    assert list(here.iterdir()) == []


def test_a_hash_consistent_model_its_runtime_cannot_parse_is_one_line(cnn_package, tmp_path):
    """The manifest's hash is updated to garbage bytes: the runtime's parser error becomes a UserError naming it."""
    from edgekit.digest import file_sha256

    copy = _copy(cnn_package, tmp_path)
    (copy / "model.onnx").write_bytes(b"not a protobuf" * 10)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][0].update(sha256=file_sha256(copy / "model.onnx"), bytes=(copy / "model.onnx").stat().st_size)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"package .*pkg: onnxruntime cannot open model.onnx: .*Protobuf"):
        load(copy)
