"""The manifest is typed and versioned: its published JSON Schema is current and accepts what compile writes, the
earlier schema version still opens, and a manifest that is newer, older or malformed is refused naming the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekit.errors import UserError
from edgekit.manifest import SCHEMA_VERSION, Manifest, manifest_schema
from edgekit.package import read_package
from edgekit.runtime import load

PUBLISHED = Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json"


def test_the_published_schema_is_the_one_the_code_checks():
    assert json.loads(PUBLISHED.read_text()) == manifest_schema(), \
        "docs/manifest.schema.json is stale: python -m edgekit.manifest > docs/manifest.schema.json"
    assert manifest_schema()["properties"]["schema"] == {"enum": [SCHEMA_VERSION]}


def test_what_compile_writes_validates_against_the_published_schema(cnn_package):
    import jsonschema

    written = json.loads((cnn_package / "manifest.json").read_text())
    jsonschema.validate(written, json.loads(PUBLISHED.read_text()))  # an independent validator, not ours
    with pytest.raises(jsonschema.ValidationError, match="'sha256' is a required property"):
        broken = json.loads(json.dumps(written))
        del broken["files"][0]["sha256"]
        jsonschema.validate(broken, json.loads(PUBLISHED.read_text()))


def _copy_with(cnn_package: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "pkg"
    shutil.copytree(cnn_package, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _as_v1(manifest: dict) -> None:
    """Schema 1 as an earlier edgekit wrote it: an unmeasured package's metrics {}, no cpu/isa_choice/float_ops."""
    manifest.update(schema=1, metrics={})
    for newer in ("cpu", "isa_choice", "float_ops", "fallback", "auto", "golden"):
        manifest.pop(newer, None)


def _as_v2(manifest: dict) -> None:
    """Schema 2: no golden self-test."""
    manifest.update(schema=2, metrics=None)
    manifest.pop("golden")


def test_a_v3_manifest_reads_with_its_one_verdict(cnn_package, tmp_path):
    """Schema 3: a verdict without output, reason or worst sample, no `judged`, no p50 interval."""

    def as_v3(manifest: dict) -> None:
        metrics = manifest["metrics"]
        metrics["verdict"] = {k: metrics["verdict"][k] for k in ("metric", "value", "reference", "drop", "limit", "ok")}
        metrics.pop("judged")
        for key in ("p50_low", "p50_high"):
            metrics["bench"]["latency_ms"].pop(key)
        manifest["schema"] = 3

    manifest = read_package(_copy_with(cnn_package, tmp_path, as_v3)).manifest
    assert manifest.schema == SCHEMA_VERSION and manifest.metrics.judged == ()
    assert manifest.metrics.verdict.worst is None and manifest.metrics.bench.latency_ms.p50_low is None


def test_a_v5_manifest_reads_without_layers(cnn_package, tmp_path):
    """Schema 5: no layers section, no precision plan."""

    def as_v5(manifest: dict) -> None:
        for newer in ("layers", "layers_skipped", "precision_plan"):
            manifest.pop(newer)
        manifest["schema"] = 5

    manifest = read_package(_copy_with(cnn_package, tmp_path, as_v5)).manifest
    assert manifest.schema == SCHEMA_VERSION == 6 and manifest.metrics.verdict.ok
    assert manifest.layers is None and manifest.layers_skipped is None and manifest.precision_plan is None


def test_an_fp32_package_has_no_layers_section(cnn_package):
    written = json.loads((cnn_package / "manifest.json").read_text())
    assert written["layers"] is None and written["layers_skipped"] is None  # nothing lossy: nothing to measure
    assert written["precision_plan"] is None


@pytest.mark.parametrize("earlier", [_as_v1, _as_v2])
def test_an_earlier_version_manifest_still_opens(cnn_package, tmp_path, earlier):
    copy = _copy_with(cnn_package, tmp_path, earlier)
    (copy / "golden.npz").unlink()
    package = read_package(copy)
    assert package.manifest.schema == SCHEMA_VERSION and package.manifest.metrics is None and package.manifest.golden is None
    session = load(copy)
    assert [spec.name for spec in session.inputs] == ["image"]


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(schema=7), r"manifest schema 7 is not one of 1..6; upgrade edgekit to open it"),
    (lambda m: m.update(schema="1"), r"manifest schema '1' is not one of 1..6; rebuild the package"),
    (lambda m: m.update(schema=[3]), r"manifest schema \[3\] is not one of 1..6; rebuild the package"),
    (lambda m: m.update(schema=True), r"manifest schema True is not one of 1..6; rebuild the package"),
    (lambda m: m.update(layers={"samples": 16}), r"parameter 'layers': missing parameter\(s\) data, reference_steps"),
    (lambda m: m["files"][0].update(bytes="big"), r"parameter 'files'\[0\]: parameter 'bytes' = 'big' \(str\); expected an integer"),
    (lambda m: m.update(loader="evil.py"), r"manifest: unknown parameter 'loader'"),
    (lambda m: m["target"].pop("runtime"), r"parameter 'target': missing parameter\(s\) runtime"),
    (lambda m: m["inputs"][0].update(shape="1x3"), r"parameter 'inputs'\[0\]: parameter 'shape' = '1x3' \(str\); expected a list"),
])
def test_a_malformed_manifest_is_refused_naming_the_field(cnn_package, tmp_path, change, message):
    copy = _copy_with(cnn_package, tmp_path, change)
    with pytest.raises(UserError, match=message):
        load(copy)


def test_a_manifest_round_trips(cnn_package):
    manifest = read_package(cnn_package).manifest
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())), "round trip") == manifest
    assert manifest.file_bytes == sum(entry.bytes for entry in manifest.files) > 1000
    assert manifest.metrics is not None and manifest.metrics.bench.latency_ms.p50 > 0 and manifest.metrics.verdict.ok


def test_terminal_escapes_in_a_manifest_never_reach_the_screen(cnn_package, tmp_path):
    copy = _copy_with(cnn_package, tmp_path, lambda m: m["target"].update(name="cpu-ort\x1b[2J\x1b]0;owned\x07"))
    with pytest.raises(UserError, match=r"manifest.target.name holds control characters \(terminal escape sequences\)"):
        load(copy)
    copy = _copy_with(cnn_package, tmp_path / "ok", lambda m: m["recipe"].update(description="line one\n\tline two"))
    assert read_package(copy).manifest.recipe["description"] == "line one\n\tline two"  # newlines and tabs are text
