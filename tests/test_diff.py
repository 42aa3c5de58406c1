"""edgekit diff: the error a package adds at each layer against its source, on the tiny CNN in ONNX Runtime."""

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CNN_INPUT, MLP_INPUT, compile_cnn

from edgekit.cli import main
from edgekit.console import show_layers
from edgekit.digest import folder_hash
from edgekit.errors import UserError
from edgekit.layers import diff_layers, layer_gap
from edgekit.layers.at_build import BUILD_SAMPLES
from edgekit.package import read_package
from edgekit.spec import parse_input_spec

# the tiny CNN's modules; its root-level ops (residual add, relu, mean) have none and show their node's name
CNN_MODULES = {"conv1", "bn1", "conv2", "bn2", "head"}


@pytest.fixture(scope="module")
def int8_package(tmp_path_factory, cnn_source, cnn_data):
    return compile_cnn(tmp_path_factory, cnn_source, cnn_data, "cpu-ort", "int8", "cnn-int8")


@pytest.fixture(scope="module")
def step_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "step-cache"  # where compile_cnn's builds left their steps


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_int8_layers_from_the_source_modules(cnn_source, int8_package, step_cache):
    diff = diff_layers(cnn_source, int8_package, cache_dir=step_cache)
    assert diff.reference_steps == ("export-onnx", "optimize-onnx") and diff.reference_cached == 2
    assert diff.lossy_step == "quantize-static"
    by_op = {}
    for gap in diff.layers:
        by_op.setdefault(gap.op, []).append(gap)
    assert len(by_op["Conv"]) == 2 and len(by_op["Gemm"]) == 1  # BN folded into the convs; the head's Linear
    assert {gap.module for gap in by_op["Conv"]} in ({"conv1", "conv2"}, {"bn1", "bn2"})  # the exporter folds BN
    assert by_op["Gemm"][0].module == "head"
    assert {gap.precision for gap in by_op["Conv"] + by_op["Gemm"]} == {"int8"}
    assert diff.matched_by_name + diff.matched_by_node == len(diff.layers) + diff.skipped
    assert diff.covered_layers == diff.reference_layers  # each ReLU the quantizer fused is held by its Conv
    first = min(diff.layers, key=lambda gap: gap.position)
    assert first.op == "Conv" and first.input_snr_db == math.inf and first.loss_db is None  # reads the image itself
    head = by_op["Gemm"][0]
    assert head.input_snr_db == next(gap.snr_db for gap in diff.layers if gap.op == "ReduceMean")  # the pooled features
    for gap in diff.layers:
        assert gap.module in CNN_MODULES or gap.module == gap.node, gap
        assert math.isfinite(gap.snr_db) and 5 < gap.snr_db < 60, gap  # int8: clearly off, clearly related
        assert 0.9 < gap.cosine_worst <= gap.cosine_mean <= 1 and gap.max_abs > 0
    assert [gap.snr_db for gap in diff.layers] == sorted(gap.snr_db for gap in diff.layers)
    assert diff.samples == 64 and diff.exposed_cosine_worst > 0.999
    assert layer_gap(cnn_source, int8_package, samples=4, cache_dir=step_cache)[0].tensor == diff.layers[0].tensor


def test_fp32_package_agrees_with_its_source_at_every_layer(cnn_source, cnn_package, cnn_data):
    diff = diff_layers(cnn_source, cnn_package, cnn_data, samples=16)  # no step cache: the float steps run again
    assert diff.lossy_step is None and diff.reference_cached == 0 and len(diff.layers) >= 6
    for gap in diff.layers:
        assert gap.snr_db > 60 and gap.cosine_worst > 0.99999 and gap.precision == "fp32", gap


def test_a_package_of_another_model_is_one_line(mlp_source, int8_package, tmp_path):
    with pytest.raises(UserError, match="was built from .*tiny_cnn.*not from .*tiny_mlp"):
        diff_layers(mlp_source, int8_package, inputs=(parse_input_spec(MLP_INPUT),), cache_dir=tmp_path)
    code, _, stderr = invoke("diff", mlp_source, int8_package, "--input", MLP_INPUT, "--no-cache")
    assert code == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1


def test_cli_json_and_table(cnn_source, int8_package, step_cache):
    code, stdout, stderr = invoke("diff", cnn_source, int8_package, "--input", CNN_INPUT, "--samples", 8, "--json",
                                  "--cache-dir", step_cache)
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["samples"] == 8 and record["target"] == "cpu-ort" and record["precision"] == "int8"
    assert record["reference_steps"] == ["export-onnx", "optimize-onnx"]
    fields = {"tensor", "op", "module", "snr_db", "cosine_mean", "cosine_worst", "max_abs", "precision", "input_snr_db",
              "loss_db", "position", "node", "package_tensor"}
    assert record["layers"] and all(set(layer) == fields for layer in record["layers"])
    assert all(isinstance(layer["snr_db"], float) for layer in record["layers"])
    code, stdout, _ = invoke("diff", cnn_source, int8_package, "--samples", 8, "--top", 2, "--cache-dir", step_cache)
    assert code == 0 and "SNR dB" in stdout and "loses dB" in stdout and "more layers (--all shows them)" in stdout
    assert "reference: export-onnx → optimize-onnx (2/2 from the step cache), before quantize-static" in stdout


def test_openvino_int8_layers(cnn_source, cnn_data, tmp_path_factory, step_cache):
    package = compile_cnn(tmp_path_factory, cnn_source, cnn_data, "cpu-openvino", "int8", "cnn-int8")
    diff = diff_layers(cnn_source, package, samples=BUILD_SAMPLES, cache_dir=step_cache)
    assert diff.reference_steps == ("convert-openvino",) and diff.reference_cached == 1
    assert diff.lossy_step == "quantize-nncf"
    convolutions = [gap for gap in diff.layers if gap.op == "Convolution"]
    # OpenVINO folds each batch norm into its convolution; the module comes from the bias Add it left (bn1, bn2)
    assert len(convolutions) == 2 and {gap.module for gap in convolutions} in ({"conv1", "conv2"}, {"bn1", "bn2"})
    assert {gap.precision for gap in convolutions} == {"int8"}
    assert all(math.isfinite(gap.snr_db) and 5 < gap.snr_db < 60 for gap in convolutions)
    assert [gap.snr_db for gap in diff.layers] == sorted(gap.snr_db for gap in diff.layers)
    recorded = read_package(package).manifest.layers  # measured at build time on these samples
    assert recorded.lossy_step == "quantize-nncf" and [layer.tensor for layer in recorded.layers] == [
        gap.tensor for gap in diff.layers]
    assert [layer.snr_db for layer in recorded.layers] == pytest.approx([gap.snr_db for gap in diff.layers], rel=1e-6)


def test_hostile_name_scopes_are_not_parsed():
    from edgekit.layers.onnx_layers import _innermost

    assert _innermost("['', 'stage2', 'stage2.conv1', 'aten.conv2d']") == "stage2.conv1"
    for hostile in ("[" * 3000 + "]" * 3000, "[" * 100_000, "__import__('os')", "['a'] * 10", "{1: 2}"):
        assert _innermost(hostile) is None


def test_the_manifest_carries_the_layers_diff_measures(cnn_source, int8_package, step_cache, capsys):
    """compile measured the layers on the first few evaluation samples, from the float graph it made itself: the same
    records, worst first, as `edgekit diff` on those samples (both run here, on the same graphs)."""
    import jsonschema

    raw = (int8_package / "manifest.json").read_text()
    written = json.loads(raw, parse_constant=lambda constant: pytest.fail(f"{constant} in the manifest"))  # finite
    jsonschema.validate(written, json.loads((Path(__file__).parents[1] / "docs" / "manifest.schema.json").read_text()))
    manifest = read_package(int8_package).manifest
    recorded = manifest.layers
    assert manifest.layers_skipped is None and recorded is not None and recorded.samples == BUILD_SAMPLES
    assert recorded.reference_steps == ("export-onnx", "optimize-onnx") and recorded.lossy_step == "quantize-static"
    snrs = [layer.snr_db for layer in recorded.layers]
    assert all(snr is not None and 5 < snr < 60 for snr in snrs) and snrs == sorted(snrs)
    diff = diff_layers(cnn_source, int8_package, samples=BUILD_SAMPLES, cache_dir=step_cache)
    assert recorded.data == diff.data and recorded.covered_layers == diff.covered_layers == diff.reference_layers
    assert [layer.tensor for layer in recorded.layers] == [gap.tensor for gap in diff.layers]
    for layer, gap in zip(recorded.layers, diff.layers):
        assert (layer.module, layer.op, layer.precision) == (gap.module, gap.op, gap.precision)
        assert layer.snr_db == pytest.approx(gap.snr_db, rel=1e-6)
        assert layer.cosine_worst == pytest.approx(gap.cosine_worst, abs=1e-9)
        assert layer.max_abs == pytest.approx(gap.max_abs, rel=1e-6)
        assert layer.loss_db == (None if gap.loss_db is None else pytest.approx(gap.loss_db, rel=1e-6, abs=1e-6))
    show_layers(manifest)  # compile's summary line
    worst = recorded.layers[0]
    assert capsys.readouterr().out.startswith(f"worst layer: {worst.module} ({worst.op}, int8) SNR {worst.snr_db:.1f} dB")


def test_an_unreadable_float_graph_leaves_the_layers_out(cnn_source, int8_package, cnn_data, tmp_path, caplog):
    """A graph the layer pass cannot read does not fail the compile: no layers, and why, in one info line."""
    from edgekit.data import load_data
    from edgekit.layers.at_build import layers_at_build
    from edgekit.layers.reference import BeforeLossy
    from edgekit.model import Format, Model

    manifest = read_package(int8_package).manifest
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"not a protobuf")
    source = Model(Format.ONNX, manifest.inputs, manifest.outputs, files=(foreign,), meta={"source": str(foreign)})
    kept = BeforeLossy(source)
    kept.lossy, kept.taken = "quantize-static", source
    with caplog.at_level(logging.INFO, logger="edgekit"):
        layers, why = layers_at_build(kept, int8_package, load_data(cnn_data, manifest.inputs, None), tmp_path)
    assert layers is None and why
    assert [record.getMessage() for record in caplog.records] == [f"layers: not measured ({why})"]


@pytest.fixture()
def adapter(tmp_path):
    """A LoRA folder as peft saves it (config and safetensors): what diff checks before it reads the source."""
    from safetensors.numpy import save_file

    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    save_file({"base_model.model.head.lora_A.weight": np.ones((2, 16), np.float32)}, str(folder / "adapter_model.safetensors"))
    return folder


def test_a_package_compiled_with_adapters_needs_them(cnn_source, int8_package, adapter, tmp_path):
    copy = shutil.copytree(int8_package, tmp_path / "adapted")
    manifest = json.loads((copy / "manifest.json").read_text())
    digest = folder_hash(adapter)
    manifest["provenance"]["adapters"] = [{"path": str(adapter), "sha256": digest, "peft_type": "LORA", "rank": 2}]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    expected = f"{copy} was compiled with PEFT adapter(s) sha256 {digest[:12]}… (from {adapter}) merged in that order: " \
               "give the same with --adapter DIR (given: none)"
    with pytest.raises(UserError) as refused:
        diff_layers(cnn_source, copy)
    assert str(refused.value) == expected
    other = shutil.copytree(adapter, tmp_path / "other")
    (other / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 1}))
    code, _, stderr = invoke("diff", cnn_source, copy, "--adapter", other, "--no-cache")
    assert code == 1 and stderr.count("\n") == 1
    assert f"sha256 {digest[:12]}… (from {adapter})" in stderr and f"(given: sha256 {folder_hash(other)[:12]}…)" in stderr
    with pytest.raises(UserError, match="compiled without PEFT adapters: diff it without --adapter"):
        diff_layers(cnn_source, int8_package, adapters=(adapter,))
