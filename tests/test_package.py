"""Packages: manifest contents, file hashes, tampering, atomic writes, zip packages."""

import json
import shutil

import pytest

from edgekit.compiler import compile
from edgekit.digest import file_sha256
from edgekit.errors import FidelityError, UserError
from edgekit.package import read_package
from edgekit.runtime import load
from edgekit.spec import parse_input_spec

CNN = (parse_input_spec("image:batchx1x8x8"),)


def test_manifest_records_everything(cnn_package, cnn_source):
    manifest = json.loads((cnn_package / "manifest.json").read_text())
    assert manifest["schema"] == 6 and manifest["runtime"] == "onnxruntime" and manifest["format"] == "onnx"
    assert manifest["target"]["name"] == "cpu-ort" and manifest["precision"] == "fp32"
    entry = manifest["files"][0]
    assert entry["sha256"] == file_sha256(cnn_package / entry["path"])
    assert entry["bytes"] == (cnn_package / entry["path"]).stat().st_size
    assert manifest["inputs"] == [{"name": "image", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert [p["pass"] for p in manifest["recipe"]["applied"]] == ["export-onnx", "optimize-onnx"]
    assert manifest["recipe"]["applied"][0]["config"]["opset"] == 18
    assert manifest["provenance"]["source"] == cnn_source and len(manifest["provenance"]["source_hash"]) == 64
    assert manifest["provenance"]["versions"]["onnxruntime"]
    fidelity = manifest["metrics"]["fidelity"]
    assert fidelity["max_rel"] < 1e-4 and fidelity["top1_agreement"] == 1.0 and fidelity["accuracy"] == 1.0
    bench = manifest["metrics"]["bench"]
    assert bench["latency_ms"]["p50"] > 0 and bench["conditions"]["runs"] == 3
    assert manifest["data"]["calibration"]["image"]["samples"] == 64


def test_tampered_or_missing_file_is_refused(cnn_package, tmp_path):
    copy = tmp_path / "pkg"
    shutil.copytree(cnn_package, copy)
    model_file = copy / read_package(copy).manifest.files[0].path
    data = bytearray(model_file.read_bytes())
    data[-10] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its sha256"):
        load(copy)
    model_file.unlink()
    with pytest.raises(UserError, match="is missing"):
        load(copy)


def test_not_a_package(tmp_path):
    with pytest.raises(UserError, match="is not an edgekit package"):
        load(tmp_path)
    with pytest.raises(UserError, match="package not found"):
        load(tmp_path / "absent")


def test_failed_compile_leaves_nothing(cnn_source, cnn_data, tmp_path):
    recipe = tmp_path / "strict.yaml"
    recipe.write_text("precision: int8\nsteps:\n  - pass: quantize-static\nevaluate: {metric: cosine, max_drop: 0.0}\n")
    out = tmp_path / "out"
    with pytest.raises(FidelityError, match="over max_drop 0.0: no package written"):
        compile(cnn_source, "cpu-ort", out, recipe, cnn_data, cnn_data, CNN, bench_runs=2)
    assert list(tmp_path.iterdir()) == [recipe]


def test_existing_foreign_folder_is_not_overwritten(cnn_source, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match=r"exists and is not an intact edgekit package "
                                        r"\(.* is not an edgekit package \(no manifest.json\)\)"):
        compile(cnn_source, "cpu-ort", out, "fp32", inputs=CNN, bench_runs=2)
    assert (out / "notes.txt").read_text() == "keep me"


def test_zip_package_round_trip(cnn_source, cnn_data, tmp_path):
    out = tmp_path / "cnn.zip"
    compile(cnn_source, "cpu-ort", out, "fp32", cnn_data, cnn_data, CNN, bench_runs=2)
    session = load(out)
    import numpy as np

    result = session.run({"image": np.zeros((2, 1, 8, 8), np.float32)})
    assert list(result.values())[0].shape == (2, 4)
