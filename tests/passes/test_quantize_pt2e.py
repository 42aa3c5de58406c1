"""quantize-pt2e: torchao PT2E with the x86 quantizer on the tiny CNN, then export-onnx and a full compile.

Bound: the quantized program stays within 5% of the float CNN's largest output (measured 1.4%)
and the exported ONNX graph, run without ORT's fusions, equals the program to 1e-5.
"""

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekit.data import load_data
from edgekit.errors import UserError
from edgekit.evaluate import collect, runner_for
from edgekit.ingest import ingest
from edgekit.metrics import compare
from edgekit.model import Format
from edgekit.passes.base import Context
from edgekit.passes.export import ExportOnnx, ExportOnnxConfig
from edgekit.passes.quantize_pt2e import QuantizePt2e, QuantizePt2eConfig
from edgekit.schema import build
from edgekit.spec import parse_input_spec

CNN_INPUT = "image:batchx1x8x8:float32"


@pytest.fixture(scope="module")
def quantized(cnn_source, cnn_data, tmp_path_factory):
    model = ingest(cnn_source, (parse_input_spec(CNN_INPUT),))
    data = load_data(cnn_data, model.inputs)
    ctx = Context(tmp_path_factory.mktemp("pt2e"), calibration=data)
    return model, QuantizePt2e().run(model, QuantizePt2eConfig(calibration_samples=32), ctx), data, ctx


def test_quantized_program_stays_near_float(quantized):
    model, result, data, _ = quantized
    assert result.format is Format.EXPORTED and result.meta["precision"] == "int8"
    targets = Counter(str(node.target) for node in result.module.graph.nodes)
    assert any("quantize_per_tensor" in name for name in targets) and any("dequantize_per_channel" in name for name in targets)
    feeds = list(data.feeds(16))
    metrics = compare(collect(runner_for(model), feeds), collect(runner_for(result), feeds))
    assert metrics["max_rel"] < 0.05 and metrics["cosine_min"] > 0.999


def test_export_gives_qdq_onnx_equal_to_the_program(quantized, tmp_path):
    _, result, data, ctx = quantized
    exported = ExportOnnx().run(result, ExportOnnxConfig(), Context(tmp_path))
    ops = Counter(node.op_type for node in onnx.load(str(exported.path)).graph.node)
    assert ops["QuantizeLinear"] >= 2 and ops["DequantizeLinear"] >= 4
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(exported.path), options, providers=["CPUExecutionProvider"])
    feeds = list(data.feeds(8))
    onnx_out = np.concatenate([session.run(None, feed)[0] for feed in feeds])
    torch_out = np.concatenate([out[0] for out in collect(runner_for(result), feeds)])
    assert np.abs(onnx_out - torch_out).max() < 1e-5


def test_compile_with_pt2e_recipe_inserts_export(cnn_source, cnn_data, tmp_path, cache_dir):
    from edgekit.compiler import compile
    from edgekit.runtime import load

    recipe = tmp_path / "pt2e.yaml"
    recipe.write_text("precision: int8\nsteps:\n  - pass: quantize-pt2e\n    with: {calibration_samples: 32}\n"
                      "evaluate: {metric: top1, max_drop: 0.1}\n")
    result = compile(cnn_source, "cpu-ort", tmp_path / "pkg", recipe, calib=cnn_data, inputs=(parse_input_spec(CNN_INPUT),),
                     cache_dir=cache_dir, bench_runs=3)
    assert [(s.step.pass_name, s.origin) for s in result.plan.steps][:2] == [("quantize-pt2e", "recipe"), ("export-onnx", "inserted")]
    assert result.manifest.metrics.verdict.ok
    assert result.manifest.steps[1]["fidelity"]["cosine_min"] > 0.99  # export of the quantized program checked
    session = load(result.package)
    image = np.load(cnn_data)["image"][:1]
    assert session.run({"image": image})["output"].shape == (1, 4)


def test_config_errors(quantized):
    model, _, _, ctx = quantized
    with pytest.raises(UserError, match="parameter 'quantizer' = 'arm'"):
        build(QuantizePt2eConfig, {"quantizer": "arm"}, "step 1 (quantize-pt2e)")
    with pytest.raises(UserError, match="reduce_range applies to uint8"):
        QuantizePt2e().run(model, QuantizePt2eConfig(reduce_range=True), ctx)
    with pytest.raises(UserError, match="needs calibration data"):
        QuantizePt2e().run(model, QuantizePt2eConfig(), Context(Path(ctx.work_dir)))
