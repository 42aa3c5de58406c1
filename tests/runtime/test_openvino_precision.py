"""OpenVINO's precision: edgekit pins f32 on CPUs, where OpenVINO would compute in bf16 by default on AVX512_BF16/AMX."""

from __future__ import annotations

import numpy as np
from extras import require

from edgekit.isa import host_cpu
from edgekit.runtime import open_model

require("openvino", "openvino")

BF16 = {"device": "CPU", "config": {"INFERENCE_PRECISION_HINT": "bf16"}}


def test_packages_run_f32_and_bf16_only_where_asked(tmp_path, cnn_source, cnn_data):
    from conftest import CNN_INPUT

    from edgekit import compiler
    from edgekit.evaluate import runner_for
    from edgekit.ingest import ingest
    from edgekit.runtime import load
    from edgekit.spec import parse_input_spec

    inputs = (parse_input_spec(CNN_INPUT),)
    result = compiler.compile(cnn_source, "cpu-openvino", tmp_path / "pkg", "fp32", cnn_data, inputs=inputs, bench_runs=2)
    package = load(result.package)
    assert package.execution_precision == "fp32" and result.manifest.metrics.fidelity["executed_precision"] == "fp32"
    feed = {"image": np.load(cnn_data)["image"][:16]}
    want = runner_for(ingest(cnn_source, inputs))(feed)[0]
    got = list(package.run(feed).values())[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)  # fp32 executed: fp32 tolerance

    xml = sorted(result.package.glob("*.xml"))[0]
    files = (xml, xml.with_suffix(".bin"))
    default = open_model("openvino", files, package.inputs, package.outputs)  # no options: still f32 on a CPU
    asked = open_model("openvino", files, package.inputs, package.outputs, BF16)
    assert default.execution_precision == "fp32"
    bf16_out = list(asked.run(feed).values())[0]
    if host_cpu().isa.bf16:  # the CPU runs bf16 natively: OpenVINO honours the hint
        assert asked.execution_precision == "bf16"
    # what the session reports is what ran: OpenVINO also emulates bf16 on AVX-512 cores without AVX512_BF16
    # (measured on an AVX-512 VNNI Xeon) and falls back to f32 on AVX2-only CPUs (measured on an EPYC)
    if asked.execution_precision == "bf16":  # the outputs move, within bf16's 8 mantissa bits
        assert np.abs(bf16_out - want).max() / np.abs(want).max() > 1e-4
        np.testing.assert_allclose(bf16_out, want, rtol=0.1, atol=0.05 * np.abs(want).max())
    else:
        assert asked.execution_precision == "fp32"
        np.testing.assert_allclose(bf16_out, want, rtol=1e-4, atol=1e-5)
