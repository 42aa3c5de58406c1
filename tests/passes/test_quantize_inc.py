"""quantize-inc: Intel Neural Compressor on the tiny two-block encoder (tests/models.py:tiny_encoder).

Bounds vs the float encoder on 8 seeded feeds (measured): int4 g32 RTN/GPTQ/AWQ cosine ≥ 0.999
(0.9996), int8 per-channel RTN max relative error ≤ 0.5% (0.16%), static int8 cosine ≥ 0.999 (0.9999).
"""

from pathlib import Path

import pytest
from extras import require

require("neural_compressor.torch.quantization", "neural-compressor")

from edgekit.data import synthetic_data  # noqa: E402
from edgekit.errors import UnsupportedOnTarget, UserError  # noqa: E402
from edgekit.evaluate import collect, runner_for  # noqa: E402
from edgekit.ingest import ingest  # noqa: E402
from edgekit.metrics import compare  # noqa: E402
from edgekit.model import Format  # noqa: E402
from edgekit.passes.base import Context  # noqa: E402
from edgekit.passes.export import ExportOnnx, ExportOnnxConfig  # noqa: E402
from edgekit.passes.quantize_inc import QuantizeInc, QuantizeIncConfig, candidates  # noqa: E402
from edgekit.spec import parse_input_spec  # noqa: E402
from edgekit.target import load_target  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "models.py"


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    model = ingest(f"{MODELS}:tiny_encoder", (parse_input_spec("tokens:batchx8x32:float32"),))
    calibration = synthetic_data(model.inputs, 16, sizes={"batch": 2})
    evaluation = synthetic_data(model.inputs, 8, seed=1, sizes={"batch": 2})
    return model, Context(tmp_path_factory.mktemp("inc"), calibration=calibration, evaluation=evaluation)


def _fidelity(model, result, ctx):
    feeds = list(ctx.evaluation.feeds())
    return compare(collect(runner_for(model), feeds), collect(runner_for(result), feeds))


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
def test_int4_weight_only_methods(encoder, method):
    model, ctx = encoder
    result = QuantizeInc().run(model, QuantizeIncConfig(method=method, bits=4, group_size=32), ctx)
    assert result.format is Format.EXPORTED and result.meta["precision"] == "int4-weights"
    assert result.meta["inc"] == {"method": method, "bits": 4, "group_size": 32, "symmetric": True}
    assert _fidelity(model, result, ctx)["cosine_min"] >= 0.999


def test_int8_per_channel_rtn_and_export(encoder, tmp_path):
    model, ctx = encoder
    result = QuantizeInc().run(model, QuantizeIncConfig(bits=8, group_size=-1), ctx)
    assert _fidelity(model, result, ctx)["max_rel"] <= 0.005
    exported = ExportOnnx().run(result, ExportOnnxConfig(), Context(tmp_path))
    assert _fidelity(result, exported, ctx)["max_rel"] < 1e-5  # the exporter folds the int8 weights back to float


def test_static_int8(encoder):
    model, ctx = encoder
    result = QuantizeInc().run(model, QuantizeIncConfig(method="static"), ctx)
    assert result.meta["precision"] == "int8"
    assert any("quantize_per_tensor" in str(node.target) for node in result.module.graph.nodes)
    assert _fidelity(model, result, ctx)["cosine_min"] >= 0.999


def test_autotune_falls_back_to_8_bits_for_a_tight_tolerance(encoder):
    model, ctx = encoder
    loose = QuantizeInc().run(model, QuantizeIncConfig(group_size=64, tolerance=0.01), ctx)
    assert loose.meta["inc"]["bits"] == 4 and loose.meta["inc"]["group_size"] == 64  # the first candidate passes
    tight = QuantizeInc().run(model, QuantizeIncConfig(group_size=64, tolerance=1e-5), ctx)
    assert tight.meta["inc"]["bits"] == 8  # int4 g64 and g32 miss 1e-5; per-channel int8 keeps it
    assert 1 - _fidelity(model, tight, ctx)["cosine_mean"] <= 1e-5


def test_candidates_go_from_coarse_to_fine():
    found = [(c.bits, c.group_size) for c in candidates(QuantizeIncConfig(group_size=128))]
    assert found == [(4, 128), (4, 64), (4, 32), (8, -1)]


def test_weight_only_refused_on_a_file_target_unless_allowed(encoder, tmp_path):
    model, ctx = encoder
    onnx_ctx = Context(tmp_path, target=load_target("cpu-ort"), calibration=ctx.calibration)
    with pytest.raises(UnsupportedOnTarget, match="folds their int weights back into float"):
        QuantizeInc().run(model, QuantizeIncConfig(), onnx_ctx)
    allowed = QuantizeInc().run(model, QuantizeIncConfig(export_dequantized=True), onnx_ctx)
    assert allowed.meta["precision"] == "fp32"  # what the exported file will hold


def test_tolerance_needs_data(encoder, tmp_path):
    model, _ = encoder
    with pytest.raises(UserError, match="needs evaluation data"):
        QuantizeInc().run(model, QuantizeIncConfig(tolerance=0.01), Context(tmp_path))
