"""Property-based fuzzing (hypothesis) of what people hand edgekit: package manifests, recipes, target files, --input
specs and zip packages. Every case works or fails with one clean line — never another exception — and nothing is
written outside the temporary folder nor read outside the package (sandbox.py). Derandomized, without a database:
the same cases run everywhere; EDGEKIT_RELIABILITY_SCALE sets how many (figures.py)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability.figures import BUDGET
from reliability.sandbox import Sandbox, Unsafe
from reliability.strategies import DECOY, DEEP, DEEP_TEXT, SPEC_TEXTS, ZIP_LAYOUTS, ZipLayout, mutated

from edgekit.build import recipe_for
from edgekit.catalog import builtin_dir, read_yaml
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.pipeline import plan
from edgekit.runtime import load
from edgekit.spec import DTYPES
from edgekit.target import all_targets, load_target

SETTINGS = settings(max_examples=BUDGET.examples, derandomize=True, database=None, deadline=None, print_blob=False,
                    suppress_health_check=list(HealthCheck))
PLANNED_ON = ("cpu-ort", "cpu-openvino", "mobile-tflite", "mobile-executorch")
TREES = st.sampled_from([None, None, "unlisted", "link-model", "link-folder", "link-manifest", "missing-model",
                         "manifest-folder", "garbage-model"])
RAW = st.one_of(st.binary(max_size=48), st.sampled_from([b"", b"[]", b"null", b"\xef\xbb\xbf{}", b"\xff\xfe{",
                                                         DEEP_TEXT.encode(), b"{" * 30_000, b"a: &a [*a]"]))


class CliRefusal(EdgekitError):
    """What the CLI printed when it refused: judged like any EdgekitError's message."""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, cnn_package) -> Sandbox:
    box = Sandbox(tmp_path_factory.mktemp("fuzz"))
    shutil.copytree(cnn_package, box.decoy, dirs_exist_ok=True)  # a valid package's files, outside every case
    return box


@pytest.fixture(scope="module")
def onnx_model(cnn_onnx):
    from edgekit.ingest import ingest

    return ingest(cnn_onnx)


@pytest.fixture(scope="module")
def targets():
    """The targets recipes are planned on; every built-in target's runtime is probed once first, so what importing a
    backend does once per process (OpenVINO's telemetry writes ~/intel/) happens before any case is watched."""
    for target in all_targets():
        target.availability()
    return [load_target(name) for name in PLANNED_ON]


def _render(document: object, decoy: Path, as_yaml: bool) -> bytes:
    """A document as YAML or JSON text, placeholders filled in."""
    text = (yaml.safe_dump(document, allow_unicode=False).replace(repr(DEEP), DEEP).replace(DEEP, DEEP_TEXT)
            if as_yaml else json.dumps(document).replace(json.dumps(DEEP), DEEP_TEXT))
    return text.replace(DECOY, str(decoy / "model.onnx")).encode("utf-8", "surrogatepass")


def _feeds(session) -> dict[str, np.ndarray] | None:
    """Zeros for each input as the package describes it, or None where no array fits that description."""
    shapes = [spec.concrete_shape() for spec in session.inputs]
    if any(spec.dtype not in DTYPES for spec in session.inputs) or any(
            not isinstance(d, int) or d < 0 for shape in shapes for d in shape) or sum(map(math.prod, shapes)) > 10**6:
        return None
    return {spec.name: np.zeros(shape, spec.dtype) for spec, shape in zip(session.inputs, shapes)}


def load_and_run(package: Path, inside: Path) -> None:
    """What an app does with a package: load it and run it once; the files it opened must lie inside `inside`."""
    session = load(package)
    outside = [f for f in session.files if f.is_symlink() or not f.resolve().is_relative_to(inside)]
    if outside:
        raise Unsafe(f"the session opened {outside[0]}")
    feeds = _feeds(session)
    if feeds is not None:
        session.run(feeds)


def plan_for(model, target, recipe) -> None:
    """What `edgekit compile --dry-run` does with a target and a recipe."""
    chosen = recipe_for(target, recipe)
    plan(model, chosen, target.with_runtime(chosen.runtime))


def _damage(folder: Path, tree: str | None, decoy: Path) -> None:
    """Change a package folder's files around its manifest."""
    if tree == "unlisted":
        (folder / "notes.txt").write_text("not in the manifest")
    elif tree == "link-model":
        (folder / "model.onnx").unlink()
        (folder / "model.onnx").symlink_to(decoy / "model.onnx")
    elif tree == "link-folder":
        (folder / "sub").symlink_to(decoy, target_is_directory=True)
    elif tree == "link-manifest":
        (folder / "manifest.json").unlink()
        (folder / "manifest.json").symlink_to(decoy / "manifest.json")
    elif tree == "missing-model":
        (folder / "model.onnx").unlink()
    elif tree == "garbage-model":  # the attacker's package: garbage bytes, listed with their own sha256
        (folder / "model.onnx").write_bytes(b"\x08garbage")
        manifest = json.loads((decoy / "manifest.json").read_text())
        manifest["files"][0].update(sha256=hashlib.sha256(b"\x08garbage").hexdigest(), bytes=9)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif tree == "manifest-folder":
        (folder / "manifest.json").unlink()
        (folder / "manifest.json").mkdir()


@SETTINGS
@given(data=st.data(), tree=TREES)
def test_a_package_manifest_loads_or_is_refused_in_one_line(sandbox, cnn_package, data, tree):
    base = json.loads((cnn_package / "manifest.json").read_text())
    real = (cnn_package / "manifest.json").read_bytes()
    text = data.draw(st.one_of(mutated([base]).map(lambda doc: _render(doc, sandbox.decoy, as_yaml=False)), RAW,
                               st.integers(0, len(real)).map(lambda cut: real[:cut])))
    folder = sandbox.case() / "pkg"
    shutil.copytree(cnn_package, folder)
    (folder / "manifest.json").write_bytes(text)
    _damage(folder, tree, sandbox.decoy)
    sandbox.attempt("manifest", lambda: load_and_run(folder, folder), folder)


@SETTINGS
@given(data=st.data())
def test_a_recipe_file_plans_or_is_refused_in_one_line(sandbox, onnx_model, targets, data):
    seeds = [read_yaml(path, "recipes") for path in sorted(builtin_dir("recipes").glob("*.yaml"))]
    text = data.draw(st.one_of(mutated(seeds).map(lambda doc: _render(doc, sandbox.decoy, as_yaml=True)), RAW))
    target = data.draw(st.sampled_from(targets))
    path = sandbox.case() / "recipe.yaml"
    path.write_bytes(text)
    sandbox.attempt("recipe", lambda: plan_for(onnx_model, target, path), path.parent)


@SETTINGS
@given(data=st.data(), recipe=st.sampled_from([None, "fp32", "int8"]))
def test_a_target_file_plans_or_is_refused_in_one_line(sandbox, onnx_model, targets, data, recipe):
    seeds = [read_yaml(path, "targets") for path in sorted(builtin_dir("targets").glob("*.yaml"))]
    text = data.draw(st.one_of(mutated(seeds).map(lambda doc: _render(doc, sandbox.decoy, as_yaml=True)), RAW))
    path = sandbox.case() / "target.yaml"
    path.write_bytes(text)

    def use() -> None:
        target = load_target(path)
        target.availability()
        plan_for(onnx_model, target, recipe)

    sandbox.attempt("target", use, path.parent)


def cli(args: list[str], cache: Path) -> None:
    """`edgekit ARGS` in this process: exit 0 works; a refusal (exit 1: `error: …`; 2: click's usage error) is raised
    as a CliRefusal holding the lines it printed; anything else is raised as it happened."""
    result = CliRunner().invoke(main, args, env={"EDGEKIT_CACHE_DIR": str(cache)})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.exit_code == 2:
        lines = [line for line in lines if line.startswith("Error: ")]
    if result.exit_code in (1, 2) and lines:
        raise CliRefusal("\n".join(lines))
    if result.exit_code != 0:
        raise RuntimeError(f"exit {result.exit_code}: {result.output[-300:]}")


@SETTINGS
@given(texts=st.lists(SPEC_TEXTS, min_size=1, max_size=3))
def test_input_specs_on_the_command_line_parse_or_are_refused_in_one_line(sandbox, cnn_onnx, texts):
    folder = sandbox.case()
    model = Path(shutil.copy(cnn_onnx, folder / "cnn.onnx"))
    args = ["inspect", str(model), *(arg for text in texts for arg in ("--input", text.replace("\x00", ""))), "--json"]
    sandbox.attempt("input spec", lambda: cli(args, sandbox.tmp / "cache"), folder)


@SETTINGS
@given(layout=ZIP_LAYOUTS)
def test_a_zip_package_loads_or_is_refused_in_one_line(sandbox, cnn_package, layout):
    files = {path.name: path.read_bytes() for path in sorted(cnn_package.iterdir())}
    archive = sandbox.case() / "pkg.zip"
    archive.write_bytes(layout.build(files, str(sandbox.decoy / "model.onnx")))
    sandbox.attempt("zip layout", lambda: load_and_run(archive, sandbox.tmp), archive.parent)


@dataclass(frozen=True)
class Given:
    """What a fixed case is built from."""

    sandbox: Sandbox
    package: Path
    model: Any  # the tiny CNN's ONNX model, ingested
    target: Any  # cpu-ort


Case = tuple[Callable[[], object], Path]  # the action and the folder of its inputs


def _package_case(given: Given, tree: str | None, manifest: bytes | None = None,
                  edit: Callable[[dict], object] | None = None) -> Case:
    folder = given.sandbox.case() / "pkg"
    shutil.copytree(given.package, folder)
    if edit is not None:
        document = json.loads((folder / "manifest.json").read_text())
        edit(document)
        manifest = json.dumps(document).encode()
    if manifest is not None:
        (folder / "manifest.json").write_bytes(manifest)
    _damage(folder, tree, given.sandbox.decoy)
    return lambda: load_and_run(folder, folder), folder


def _zip_case(given: Given, name: str) -> Case:
    archive = given.sandbox.case() / "pkg.zip"
    layout = ZipLayout("", {}, ((name, b"x"),), None, None, zipfile.ZIP_DEFLATED, None)
    archive.write_bytes(layout.build({p.name: p.read_bytes() for p in sorted(given.package.iterdir())}, ""))
    return lambda: load_and_run(archive, given.sandbox.tmp), archive.parent


def _corrupt_zip_case(given: Given) -> Case:
    """The package as a deflated .zip with one byte of manifest.json's compressed stream flipped where zlib fails."""
    archive = given.sandbox.case() / "pkg.zip"
    files = {p.name: p.read_bytes() for p in sorted(given.package.iterdir())}
    data = ZipLayout("", {}, (), None, None, zipfile.ZIP_DEFLATED, None).build(files, "")
    with zipfile.ZipFile(io.BytesIO(data)) as opened:
        info = opened.getinfo("manifest.json")
    start = info.header_offset + 30 + len(info.filename.encode())  # the local header has no extra field here
    for at in range(start, start + info.compress_size):
        flipped = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
        try:
            zlib.decompress(flipped[start:start + info.compress_size], -15)
        except zlib.error:
            break
    archive.write_bytes(flipped)
    return lambda: load_and_run(archive, given.sandbox.tmp), archive.parent


def _unsupported_zip_case(given: Given) -> Case:
    """The package as a .zip whose first entry needs zip version 25.5 (zipfile reads up to 6.3)."""
    archive = given.sandbox.case() / "pkg.zip"
    files = {p.name: p.read_bytes() for p in sorted(given.package.iterdir())}
    data = bytearray(ZipLayout("", {}, (), None, None, zipfile.ZIP_STORED, None).build(files, ""))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as opened:
        struct.pack_into("<H", data, opened.start_dir + 6, 0xFF)  # the central header's "version needed to extract"
    archive.write_bytes(bytes(data))
    return lambda: load_and_run(archive, given.sandbox.tmp), archive.parent


def _yaml_case(given: Given, kind: str, text: bytes) -> Case:
    path = given.sandbox.case() / f"{kind}.yaml"
    path.write_bytes(text)
    if kind == "recipe":
        return lambda: plan_for(given.model, given.target, path), path.parent
    return lambda: plan_for(given.model, load_target(path), None), path.parent


def _cli_case(given: Given, *args: str) -> Case:
    return lambda: cli(list(args), given.sandbox.tmp / "cache"), given.sandbox.case()


ALIAS_BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x]", *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]"
                                                               for i in range(1, 9)), "name: *a8", ""]).encode()
FOUND = [  # each was a traceback, an unclean message or an unsafe read when this suite found it; now fixed
    pytest.param("recipe", lambda g: _yaml_case(g, "recipe", DEEP_TEXT.encode()), id="deeply-nested-yaml"),
    pytest.param("recipe", lambda g: _yaml_case(g, "recipe", ALIAS_BOMB), id="yaml-alias-bomb"),
    pytest.param("recipe", lambda g: _yaml_case(g, "recipe", b"1: int8\nsteps: []\n"), id="a-number-as-a-key"),
    pytest.param("target", lambda g: _yaml_case(g, "target", b"\xff\xfeno: utf-8"), id="not-utf-8"),
    pytest.param("target", lambda g: _yaml_case(g, "target", b"device: cpu\nruntime: onnxruntime\nformat: onnx\n"
                                                b"precisions: 5\n"), id="precisions-a-number"),
    pytest.param("target", lambda g: _yaml_case(g, "target", b"device: cpu\nruntime: [onnxruntime]\nformat: onnx\n"
                                                b"precisions: [fp32]\n"), id="runtime-a-list"),
    pytest.param("target", lambda g: _yaml_case(g, "target", b"device: cpu\nruntime: onnxruntime\nformat: onnx\n"
                                                b"precisions: [fp32]\nrecipes: [fp32]\n"), id="recipes-a-list"),
    pytest.param("input spec", lambda g: _cli_case(g, "inspect", "missing.onnx", "--input", "a\x1b[2J:-1"),
                 id="escape-sequence-in-a-message"),
    pytest.param("manifest", lambda g: _package_case(g, None, edit=lambda m: m["inputs"][0].update(name="other")),
                 id="manifest-renames-the-input"),
    pytest.param("manifest", lambda g: _package_case(g, None, edit=lambda m: m.update(inputs=[])),
                 id="manifest-lists-no-input"),
    pytest.param("manifest", lambda g: _package_case(g, None, edit=lambda m: m["inputs"][0].update(shape=[1, 1, 8, 9])),
                 id="manifest-reshapes-the-input"),
    pytest.param("manifest", lambda g: _package_case(g, "link-manifest"), id="linked-manifest"),
    pytest.param("manifest", lambda g: _package_case(g, None, DEEP_TEXT.encode()), id="deep-manifest"),
    pytest.param("zip layout", lambda g: _zip_case(g, "manifest.json/"), id="folder-named-like-a-file"),
    pytest.param("zip layout", lambda g: _zip_case(g, "x" * 300), id="long-zip-name"),
    pytest.param("manifest", lambda g: _package_case(g, "garbage-model"), id="garbage-model-with-its-own-hash"),
    pytest.param("zip layout", _corrupt_zip_case, id="corrupt-deflate-stream"),
    pytest.param("zip layout", _unsupported_zip_case, id="unsupported-zip-version"),
]


@pytest.mark.parametrize("family, case", FOUND)
def test_cases_this_suite_found(sandbox, cnn_package, onnx_model, targets, family, case):
    action, inputs = case(Given(sandbox, cnn_package, onnx_model, targets[0]))
    sandbox.attempt(family, action, inputs)
