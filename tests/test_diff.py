"""edgekit diff: the error a package adds at each layer against its source, on the tiny CNN in ONNX Runtime."""

import json
import math

import pytest
from click.testing import CliRunner
from conftest import CNN_INPUT, MLP_INPUT, compile_cnn

from edgekit.cli import main
from edgekit.errors import UserError
from edgekit.layers import diff_layers, layer_gap
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
              "position", "node", "package_tensor"}
    assert record["layers"] and all(set(layer) == fields for layer in record["layers"])
    assert all(isinstance(layer["snr_db"], float) for layer in record["layers"])
    code, stdout, _ = invoke("diff", cnn_source, int8_package, "--samples", 8, "--top", 2, "--cache-dir", step_cache)
    assert code == 0 and "SNR dB" in stdout and "loses dB" in stdout and "more layers (--all shows them)" in stdout
    assert "reference: export-onnx → optimize-onnx (2/2 from the step cache), before quantize-static" in stdout


def test_openvino_int8_layers(cnn_source, cnn_data, tmp_path_factory, step_cache):
    package = compile_cnn(tmp_path_factory, cnn_source, cnn_data, "cpu-openvino", "int8", "cnn-int8")
    diff = diff_layers(cnn_source, package, samples=16, cache_dir=step_cache)
    assert diff.reference_steps == ("convert-openvino",) and diff.reference_cached == 1
    assert diff.lossy_step == "quantize-nncf"
    convolutions = [gap for gap in diff.layers if gap.op == "Convolution"]
    # OpenVINO folds each batch norm into its convolution; the module comes from the bias Add it left (bn1, bn2)
    assert len(convolutions) == 2 and {gap.module for gap in convolutions} in ({"conv1", "conv2"}, {"bn1", "bn2"})
    assert {gap.precision for gap in convolutions} == {"int8"}
    assert all(math.isfinite(gap.snr_db) and 5 < gap.snr_db < 60 for gap in convolutions)
    assert [gap.snr_db for gap in diff.layers] == sorted(gap.snr_db for gap in diff.layers)


def test_hostile_name_scopes_are_not_parsed():
    from edgekit.layers.onnx_layers import _innermost

    assert _innermost("['', 'stage2', 'stage2.conv1', 'aten.conv2d']") == "stage2.conv1"
    for hostile in ("[" * 3000 + "]" * 3000, "[" * 100_000, "__import__('os')", "['a'] * 10", "{1: 2}"):
        assert _innermost(hostile) is None
