"""Third-party passes register through the `edgekit.passes` entry-point group of an installed distribution."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import compiler
from edgekit.errors import PassFailed, UserError
from edgekit.passes.base import get_pass, pass_names
from edgekit.runtime import load

PLUGIN = '''
from edgekit.model import Format
from edgekit.passes.base import Pass


class Halve(Pass):
    """Multiplies an ONNX model's first output by 0.5 (a Mul at the graph's end)."""

    name = "halve-output"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX

    def run(self, model, config, ctx):
        import onnx
        from onnx import helper, numpy_helper

        from edgekit.digest import files_sha256

        proto = onnx.load(str(model.path))
        output = proto.graph.output[0]
        inner = output.name + "_before_halving"
        for node in proto.graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
        proto.graph.initializer.append(numpy_helper.from_array(__import__("numpy").array(0.5, "float32"), "half"))
        proto.graph.node.append(helper.make_node("Mul", [inner, "half"], [output.name]))
        out = ctx.step_dir(self.name) / "model.onnx"
        onnx.save(proto, str(out))
        return model.derive(files=(out,), meta={"content_hash": files_sha256((out,))})
'''


def _install(tmp_path, monkeypatch, name: str, source: str | None, *entries: str) -> None:
    """A distribution on sys.path as pip leaves one: its module (when `source` is given), METADATA and
    entry_points.txt naming `entries` in the edgekit.passes group."""
    site = tmp_path / "site"
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    if source is not None:
        (site / f"{name}.py").write_text(source)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgekit.passes]\n" + "".join(f"{entry}\n" for entry in entries))
    monkeypatch.syspath_prepend(str(site))


def test_a_plugin_pass_is_found_and_runs_in_a_recipe(tmp_path, monkeypatch, cnn_onnx, cnn_data):
    _install(tmp_path, monkeypatch, "halving_plugin", PLUGIN, "halve-output = halving_plugin:Halve")
    assert "halve-output" in pass_names() and get_pass("halve-output").name == "halve-output"
    recipe = tmp_path / "halved.yaml"
    recipe.write_text("steps:\n  - pass: halve-output\n")
    plain = compiler.compile(cnn_onnx, "cpu-ort", tmp_path / "plain", "fp32", cnn_data, bench_runs=2)
    halved = compiler.compile(cnn_onnx, "cpu-ort", tmp_path / "halved", recipe, cnn_data, bench_runs=2)
    assert ("halve-output", "recipe") in [(s["pass"], s["origin"]) for s in halved.manifest.steps]
    image = np.load(cnn_data)["image"][:1]
    want = next(iter(load(plain.package).run({"image": image}).values()))
    got = next(iter(load(halved.package).run({"image": image}).values()))
    np.testing.assert_allclose(got, want * 0.5, rtol=1e-6)


def test_a_plugin_that_takes_a_builtin_name_is_refused(tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch, "clashing_plugin", None, "optimize-onnx = clashing_plugin:Other")
    with pytest.raises(UserError, match=r"pass 'optimize-onnx' is registered twice: edgekit.passes.optimize:OptimizeOnnx "
                                        r"and clashing_plugin:Other"):
        pass_names()


PEEKING = '''
from edgekit.model import Format
from edgekit.passes.base import Pass


class Peek(Pass):
    """Reads its target's options without declaring them: a stale-cache bug."""

    name = "peek-target"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX

    def run(self, model, config, ctx):
        ctx.target.options.get("providers")
        return model


class DeclaredPeek(Peek):
    name = "declared-peek-target"
    uses_target = ("options",)


class PeekData(Pass):
    """Sizes its output by the calibration data without declaring uses_calibration: a stale-cache bug."""

    name = "peek-data"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX

    def run(self, model, config, ctx):
        len(ctx.calibration)
        return model


class DeclaredPeekData(PeekData):
    name = "declared-peek-data"
    uses_calibration = True
'''


def test_a_pass_that_reads_an_undeclared_target_field_fails_naming_it(tmp_path, monkeypatch, cnn_onnx):
    _install(tmp_path, monkeypatch, "peeking_plugin", PEEKING, "peek-target = peeking_plugin:Peek",
             "declared-peek-target = peeking_plugin:DeclaredPeek", "peek-data = peeking_plugin:PeekData",
             "declared-peek-data = peeking_plugin:DeclaredPeekData")
    for name in ("peek-target", "declared-peek-target", "peek-data", "declared-peek-data"):
        (tmp_path / f"{name}.yaml").write_text(f"steps:\n  - pass: {name}\n")
    with pytest.raises(PassFailed, match=r"^step 'peek-target' failed: TypeError: it read target field\(s\) options that its "
                                         r"uses_target does not declare"):
        compiler.compile(cnn_onnx, "cpu-ort", tmp_path / "a", tmp_path / "peek-target.yaml", bench_runs=2)
    declared = compiler.compile(cnn_onnx, "cpu-ort", tmp_path / "b", tmp_path / "declared-peek-target.yaml", bench_runs=2)
    assert ("declared-peek-target", "recipe") in [(s["pass"], s["origin"]) for s in declared.manifest.steps]
    data = tmp_path / "data.npz"
    np.savez(data, image=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(PassFailed, match=r"^step 'peek-data' failed: TypeError: it read calibration data without "
                                         r"uses_calibration"):
        compiler.compile(cnn_onnx, "cpu-ort", tmp_path / "c", tmp_path / "peek-data.yaml", data, bench_runs=2)
    declared = compiler.compile(cnn_onnx, "cpu-ort", tmp_path / "d", tmp_path / "declared-peek-data.yaml", data,
                                bench_runs=2)
    assert "declared-peek-data" in [s["pass"] for s in declared.manifest.steps]
