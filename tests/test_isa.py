"""ISA: naming from cpuinfo flags, a target's declared ISA, and the ORT int8 choices that follow from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.errors import UnsupportedOnTarget, UserError
from edgekit.isa import ISAS, host_cpu, isa_name_of, resolve_isa
from edgekit.passes.quantize_ort import isa_choice
from edgekit.target import load_target


@pytest.mark.parametrize(("machine", "flags", "name"), [
    ("x86_64", {"avx2"}, "avx2"),
    ("x86_64", {"avx2", "avx512f"}, "avx512"),
    ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "avx512-vnni"),
    ("x86_64", {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "avx512-bf16"),
    ("x86_64", {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}, "amx"),
    ("x86_64", {"avx2", "avx_vnni"}, "avx2-vnni"),
    ("aarch64", {"asimd"}, "arm64"),
    ("aarch64", {"asimd", "asimddp"}, "arm64-dotprod"),
    ("aarch64", {"asimd", "asimddp", "i8mm", "bf16"}, "arm64-bf16"),
])
def test_isa_names_from_cpuinfo_flags(machine, flags, name):
    assert isa_name_of(machine, flags) == name


def test_host_cpu_is_recorded_with_its_flags():
    cpu = host_cpu().to_dict()
    assert cpu["model"] and cpu["isa"] in ISAS
    assert set(cpu["flags"]) <= {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                                 "amx_bf16", "asimd", "asimddp", "i8mm", "bf16"}
    assert resolve_isa("host").name == cpu["isa"]


def test_ort_int8_choices_follow_the_isa():
    avx2, vnni, arm = isa_choice(ISAS["avx2"]), isa_choice(ISAS["avx512-vnni"]), isa_choice(ISAS["arm64-dotprod"])
    assert (avx2["activation_type"], avx2["reduce_range"]) == ("uint8", True)  # full-range u8×s8 saturates without VNNI
    assert (vnni["activation_type"], vnni["reduce_range"]) == ("uint8", False)
    assert (arm["activation_type"], arm["reduce_range"]) == ("int8", False)


def _target_with_isa(tmp_path: Path, isa: str) -> Path:
    source = Path(load_target("cpu-ort").source).read_text()
    path = tmp_path / f"cpu-ort-{isa}.yaml"
    path.write_text(source.replace("name: cpu-ort", f"name: cpu-ort-{isa}\nisa: {isa}"))
    return path


def test_a_package_built_for_avx2_keeps_avx2_choices_on_any_host(tmp_path, cnn_source, cnn_data):
    from conftest import CNN_INPUT

    from edgekit import compiler
    from edgekit.spec import parse_input_spec

    for isa, activation, seven_bit in (("avx2", "uint8", True), ("avx512-vnni", "uint8", False),
                                       ("arm64-dotprod", "int8", False)):
        result = compiler.compile(cnn_source, _target_with_isa(tmp_path, isa), tmp_path / isa, "int8", cnn_data,
                                  inputs=(parse_input_spec(CNN_INPUT),), bench_runs=2)
        manifest = result.manifest
        assert manifest.target.isa["name"] == isa and manifest.isa_choice["activation_type"] == activation
        assert manifest.isa_choice["reduce_range"] is seven_bit
        assert manifest.cpu.isa == host_cpu().isa.name  # where the figures were measured
        import onnx

        from edgekit.ingest.onnx import load_graph

        graph = load_graph(result.package / "model.onnx").graph
        weights = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.data_type == 3 and t.dims]  # INT8
        assert weights and (max(int(abs(w.astype(int)).max()) for w in weights) <= 64) is seven_bit
        zero_points = [t for t in graph.initializer if t.name.endswith("_zero_point") and "weight" not in t.name.lower()]
        assert zero_points and {t.data_type for t in zero_points} >= {3 if activation == "int8" else 2}  # INT8=3, UINT8=2


def test_unknown_isa_and_bf16_without_native_support_are_refused(tmp_path, cnn_source):
    with pytest.raises(UserError, match="unknown isa 'avx3'"):
        load_target(_target_with_isa(tmp_path, "avx3"))
    from edgekit import compiler

    ov = tmp_path / "cpu-openvino-avx2.yaml"
    ov.write_text(Path(load_target("cpu-openvino").source).read_text().replace("name: cpu-openvino", "name: ov-avx2\nisa: avx2"))
    with pytest.raises(UnsupportedOnTarget, match="bf16, which target ov-avx2's ISA avx2 does not run natively"):
        compiler.plan(cnn_source, ov, "bf16")
