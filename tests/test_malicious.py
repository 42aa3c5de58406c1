"""Files from someone else run no code: a pickle that writes a marker file when unpickled (or Python hidden in a
`.pt2`'s shape expressions, guards or names) sits in every slot edgekit reads — .pt/.pth, TorchScript, .pt2, a
Hugging Face folder, data files, a distillation checkpoint, a step cache entry, a package — and the marker is never
written: the CLI exits 1 with one `error:` line and writes nothing. Then the one-line errors of issue 10's list
(HF folders with a malformed modules.json or corrupt safetensors, a 50000x50000 PNG, a recipe's `with:` as a list,
`graph_optimization_level: bogus`)."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import pickle
import re
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import CNN_INPUT
from extras import require

from edgekit.cli import main
from edgekit.errors import UserError
from edgekit.ingest import ingest


class WritesMarker:
    """Unpickling it writes `marker` (with Path.write_text, or with exec): the stand-in for code in a model file."""

    def __init__(self, marker: Path, how: str = "call") -> None:
        self.marker = marker
        self.how = how

    def __reduce__(self):
        if self.how == "exec":
            return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)
        return Path.write_text, (self.marker, "pwned")


def code_writing(marker: Path) -> str:
    """A Python expression that writes `marker` (what a hostile archive puts where torch evaluates text)."""
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')"


def saved(value: object) -> bytes:
    """`value` as torch.save writes it."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.fixture()
def marker(tmp_path) -> Path:
    return tmp_path / "pwned"


@pytest.fixture()
def cli(tmp_path) -> Callable[..., Result]:
    """Runs `edgekit ARGS` in this process with its own cache folder; `stdin` is what a prompt would read."""
    def invoke(*args, stdin: str | None = None) -> Result:
        return CliRunner(env={"EDGEKIT_CACHE_DIR": str(tmp_path / "edgekit-cache")}).invoke(
            main, [str(arg) for arg in args], input=stdin)
    return invoke


def refused(result: Result, pattern: str, marker: Path, *unwritten: Path) -> None:
    """Exit 1 through the CLI's own handler, one `error:` line (the last) matching `pattern`, no traceback, the
    marker never written, nothing at `unwritten`."""
    assert not marker.exists(), "the file's code ran"
    lines = result.stderr.strip().splitlines()
    assert type(result.exception) is SystemExit and result.exit_code == 1, (result.exception, result.output[-2000:])
    assert "Traceback" not in result.output
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], lines[-5:]
    assert re.search(pattern, lines[-1]), lines[-1]
    assert not any(path.exists() for path in unwritten)


# --- PyTorch files ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, save, message", [
    ("whole.pt", lambda m: torch.save(WritesMarker(m), m.parent / "whole.pt"), "is a pickled PyTorch object"),
    ("weights.pth", lambda m: torch.save({"conv1.weight": WritesMarker(m, "exec")}, m.parent / "weights.pth"),
     "is a pickled PyTorch object"),
    ("legacy.pt", lambda m: torch.save(WritesMarker(m), m.parent / "legacy.pt", _use_new_zipfile_serialization=False),
     "is not a TorchScript archive"),
])
def test_a_pickled_pt_or_pth_is_refused_unrun(cli, marker, tmp_path, name, save, message):
    save(marker)
    refused(cli("inspect", tmp_path / name, "--input", CNN_INPUT), message, marker)
    refused(cli("compile", tmp_path / name, "-t", "cpu-ort", "--input", CNN_INPUT, "-o", tmp_path / "out"),
            message, marker, tmp_path / "out")


@pytest.fixture(scope="module")
def torchscript(tmp_path_factory) -> Path:
    from models import tiny_cnn

    module, examples = tiny_cnn()
    path = tmp_path_factory.mktemp("ts") / "cnn.pt"
    torch.jit.trace(module, examples).save(str(path))
    return path


def rewritten(source: Path, target: Path, change: Callable[[str, bytes], bytes],
              extra: Iterable[tuple[str, bytes]] = ()) -> Path:
    """`source` zip copied to `target` with each member's bytes through `change`, then the `extra` members."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, change(name, old.read(name)))
        for name, data in extra:
            new.writestr(name, data)
    return target


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
@pytest.mark.parametrize("how", ["call", "exec"])
def test_torchscript_holding_an_evil_global_is_refused_unrun(cli, torchscript, marker, tmp_path, member, how):
    evil = pickle.dumps(WritesMarker(marker, how), protocol=2)  # TorchScript's unpickler reads protocol 2
    path = rewritten(torchscript, tmp_path / "evil.pt", lambda name, data: evil if name.endswith(f"/{member}") else data)
    refused(cli("inspect", path, "--input", CNN_INPUT),
            r"evil.pt: cannot load TorchScript: Unknown type name '__builtin__\.(getattr|exec)'", marker)


# --- torch.export archives ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """The tiny CNN saved by torch.export.save, with a static batch and a symbolic one (shape expressions)."""
    from models import tiny_cnn

    module, _ = tiny_cnn()
    folder = tmp_path_factory.mktemp("pt2")
    static = torch.export.export(module, (torch.randn(2, 1, 8, 8),))
    dynamic = torch.export.export(module, (torch.randn(2, 1, 8, 8),), dynamic_shapes={"image": {0: torch.export.Dim("batch")}})
    torch.export.save(static, str(folder / "static.pt2"))
    torch.export.save(dynamic, str(folder / "dynamic.pt2"))
    return {"static": folder / "static.pt2", "dynamic": folder / "dynamic.pt2"}


def program_edit(edit: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    """A member change that edits the serialized program (models/model.json) as JSON."""
    def change(name: str, data: bytes) -> bytes:
        if not name.endswith("models/model.json"):
            return data
        program = json.loads(data)
        edit(program)
        return json.dumps(program).encode()
    return change


def every(document: object, key: str, value: object) -> None:
    """Set `key` to `value` wherever it appears in a JSON document."""
    if isinstance(document, dict):
        for inner_key in document:
            if inner_key == key:
                document[inner_key] = value
            else:
                every(document[inner_key], key, value)
    elif isinstance(document, list):
        for inner in document:
            every(inner, key, value)


def pickled_weight(archive: Path, payload: Callable[[list[int]], object]) -> Callable[[str, bytes], bytes]:
    """weight_0 of `archive` becomes `payload(its shape)` pickled, and its config tells torch to unpickle it."""
    config = json.loads(zipfile.ZipFile(archive).read(f"{archive.stem}/data/weights/model_weights_config.json"))
    [entry] = [entry for entry in config["config"].values() if entry["path_name"] == "weight_0"]
    entry["use_pickle"] = True
    shape = [size["as_int"] for size in entry["tensor_meta"]["sizes"]]

    def change(name: str, data: bytes) -> bytes:
        if name.endswith("weights/model_weights_config.json"):
            return json.dumps(config).encode()
        return saved(payload(shape)) if name.endswith("weights/weight_0") else data
    return change


def object_constant(name: str, data: bytes) -> bytes:
    """A constant whose payload torch reads with pickle.loads (an "opaque object")."""
    if not name.endswith("constants/model_constants_config.json"):
        return data
    return json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                        "tensor_meta": None}}}).encode()


def injected_name(marker: Path) -> Callable[[str, bytes], bytes]:
    """A parameter name that leaves FX's quoted getattr(self, "...") in the code torch generates and runs."""
    code = list(f"open({str(marker)!r}, 'w').write('pwned')".encode())
    name = json.dumps(f'conv1") if exec(bytes({code})) else getattr(self, "conv1.weight').encode()
    return lambda member, data: data.replace(b'"conv1.weight"', name) if member.endswith(".json") else data


def hostile_archive(slot: str, exported: dict[str, Path], marker: Path, target: Path) -> Path:
    """A torch.export archive with code in `slot`."""
    static, dynamic = exported["static"], exported["dynamic"]
    root = static.stem
    if slot == "sample input":
        return rewritten(static, target, lambda n, d: saved(WritesMarker(marker)) if n.endswith("sample_inputs/model.pt") else d)
    if slot == "pickled weight":
        return rewritten(static, target, pickled_weight(static, lambda shape: WritesMarker(marker)))
    if slot == "object constant":
        return rewritten(static, target, object_constant, [(f"{root}/data/constants/opaque_obj_0", saved(WritesMarker(marker)))])
    if slot == "legacy weights file":
        return rewritten(static, target, lambda n, d: d, [(f"{root}/data/weights/model.pt", saved(WritesMarker(marker)))])
    if slot == "shape expression":
        return rewritten(dynamic, target, program_edit(lambda program: every(program, "expr_str", code_writing(marker))))
    if slot == "guard code":
        return rewritten(dynamic, target, program_edit(lambda program: program.update(guards_code=[code_writing(marker) + " > 0"])))
    if slot == "generated name":
        return rewritten(dynamic, target, injected_name(marker))
    if slot == "tree spec":
        spec = json.dumps([1, {"type": "collections.defaultdict", "children_spec": [], "context": {
            "default_factory_module": "os", "default_factory_name": "getpid", "dict_context": []}}])
        return rewritten(dynamic, target, program_edit(lambda program: every(program, "in_spec", spec)))
    if slot == "AOTInductor library":
        return rewritten(static, target, lambda n, d: d, [(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")])
    assert slot == "repeated member"  # zipfile would read the last copy, torch's reader the first
    with pytest.warns(UserWarning, match="Duplicate name"):
        return rewritten(static, target, lambda n, d: d, [(f"{root}/data/sample_inputs/model.pt", saved(WritesMarker(marker)))])


@pytest.mark.parametrize("slot, message", [
    ("sample input", r"static/data/sample_inputs/model.pt holds pickled objects beyond tensors"),
    ("pickled weight", r"static/data/weights/weight_0 holds pickled objects beyond tensors"),
    ("object constant", r"static/data/constants/opaque_obj_0 is a pickled Python object"),
    ("legacy weights file", r"static/data/weights/model.pt holds pickled objects beyond tensors"),
    ("shape expression", r"dynamic/models/model.json: the expression .* is code, not size arithmetic"),
    ("guard code", r"dynamic/models/model.json: the expression .* is code, not size arithmetic"),
    ("generated name", r"dynamic/data/weights/model_weights_config.json: a name 'conv1.*exec.* is not a plain name"),
    ("tree spec", r"dynamic/models/model.json: a tree spec names a defaultdict factory to import"),
    ("AOTInductor library", r"static/data/aotinductor/model/model.so is not torch.export data \(compiled code or another layout\)"),
    ("repeated member", r"static/data/sample_inputs/model.pt appear more than once in the archive"),
])
def test_a_pt2_with_code_in_any_slot_is_refused_unrun(cli, exported, marker, tmp_path, slot, message):
    path = hostile_archive(slot, exported, marker, tmp_path / "evil.pt2")
    trust = "edgekit runs no code from a model: pass --trust-remote-code only if you trust whoever made it"
    refused(cli("inspect", path), f"error: {re.escape(str(path))}: .*{message}; {trust}$", marker)
    refused(cli("compile", path, "-t", "cpu-ort", "-o", tmp_path / "out"), message, marker, tmp_path / "out")
    with pytest.raises(UserError, match=message):
        ingest(path)
    assert not marker.exists()


def test_running_a_pt2s_code_takes_trust_remote_code(cli, exported, marker, tmp_path):
    """An archive with a weight that needs a full unpickle (here one that writes the marker, then gives the tensor) is
    refused; with --trust-remote-code torch.export.load reads it as it is, running its code: what the flag says."""
    class Weight:
        def __init__(self, shape: list[int]) -> None:
            self.shape = shape

        def __reduce__(self):
            tensor = f"__import__('torch').nn.Parameter(__import__('torch').zeros({self.shape}))"
            return builtins.eval, (f"({code_writing(marker)}, {tensor})[1]",)

    path = rewritten(exported["static"], tmp_path / "custom.pt2", pickled_weight(exported["static"], Weight))
    refused(cli("compile", path, "-t", "cpu-ort", "-o", tmp_path / "refused"), "holds pickled objects beyond tensors",
            marker, tmp_path / "refused")
    with pytest.raises(UserError, match="pass --trust-remote-code"):
        ingest(path)
    assert not marker.exists()
    result = cli("compile", path, "-t", "cpu-ort", "-o", tmp_path / "trusted", "--trust-remote-code", "--bench-runs", 1)
    assert result.exit_code == 0, result.output[-2000:]
    assert marker.read_text() == "pwned" and (tmp_path / "trusted" / "manifest.json").is_file()


# --- Hugging Face folders ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A tiny BERT (1 layer, hidden 8, a 10-token vocabulary) saved by transformers: safetensors, tokenizer, config."""
    transformers = require("transformers", "transformers")
    folder = tmp_path_factory.mktemp("hf") / "bert"
    folder.mkdir()
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "edgekit", "compiles", "a", "model", "."]))
    transformers.BertTokenizer(str(vocab)).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture()
def hf_copy(hf_folder, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return Path(shutil.copytree(hf_folder, tmp_path / "bert"))


def test_a_hf_folder_with_pickled_weights_is_refused_unrun(cli, hf_copy, marker):
    (hf_copy / "model.safetensors").unlink()
    (hf_copy / "pytorch_model.bin").write_bytes(saved({"embeddings.word_embeddings.weight": WritesMarker(marker)}))
    refused(cli("inspect", hf_copy), "its weights file holds pickled objects beyond tensors, which edgekit never "
                                     "unpickles: save it as model.safetensors", marker)


def test_a_hf_folders_own_code_does_not_run_even_when_a_prompt_would_say_yes(cli, hf_copy, marker):
    """transformers asks on stdin before running a folder's own modeling code; edgekit never lets it ask."""
    config = json.loads((hf_copy / "config.json").read_text())
    config.update(model_type="hostile-bert", auto_map={"AutoConfig": "hostile.Config", "AutoModel": "hostile.Model"})
    (hf_copy / "config.json").write_text(json.dumps(config))
    (hf_copy / "hostile.py").write_text(f"{code_writing(marker)}\nfrom transformers import BertConfig as Config, "
                                        "BertModel as Model\n")
    refused(cli("inspect", hf_copy, stdin="y\n"), r"it holds its own Python code \(auto_map\), which edgekit never runs",
            marker)


@pytest.mark.parametrize("text, message", [
    ("{not json", r"modules.json is not valid JSON: Expecting property name"),
    ('{"type": "Pooling"}', r"modules.json: expected a JSON list, got dict"),
    ('[{"path": "1_Pooling"}]', r"modules.json: expected a list of modules, each with a 'type' and a 'path' string"),
    ('[{"type": 3}]', r"modules.json: expected a list of modules, each with a 'type' and a 'path' string"),
    ('[{"type": "sentence_transformers.models.Pooling", "path": "../../.."}]', r"path '../../..' leaves the model folder"),
])
def test_a_malformed_modules_json_is_one_line(cli, hf_copy, marker, tmp_path, text, message):
    (hf_copy / "modules.json").write_text(text)
    refused(cli("inspect", hf_copy), message, marker)
    refused(cli("compile", hf_copy, "-t", "cpu-ort", "-o", tmp_path / "out"), message, marker, tmp_path / "out")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_are_one_line(cli, hf_copy, marker, tmp_path, damage):
    weights = hf_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff" * 64)
    refused(cli("compile", hf_copy, "-t", "cpu-ort", "-o", tmp_path / "out"),
            r"cannot load it as a Hugging Face model offline: its .safetensors weights are corrupt or truncated \(Error "
            r"while deserializing header: .*\): copy the file again", marker, tmp_path / "out")


# --- data, checkpoints, cache entries, packages -------------------------------------------------------------------


def test_data_files_holding_pickles_are_refused_unrun(cli, cnn_source, marker, tmp_path):
    evil = np.array([WritesMarker(marker)], dtype=object)
    np.savez(tmp_path / "calib.npz", image=evil)
    (tmp_path / "arrays").mkdir()
    np.save(tmp_path / "arrays" / "image.npy", evil, allow_pickle=True)
    for data in (tmp_path / "calib.npz", tmp_path / "arrays"):
        refused(cli("compile", cnn_source, "-t", "cpu-ort", "-r", "int8", "--input", CNN_INPUT, "--calib", data,
                    "-o", tmp_path / "out"), r"cannot read .* as \.np[yz]: Object arrays cannot be loaded when allow_pickle=False",
                marker, tmp_path / "out")


def test_a_pickled_distillation_checkpoint_restarts_the_run_unrun(tmp_path, marker, caplog):
    from models import tiny_mlp

    from edgekit.data import Dataset
    from edgekit.ingest.torch import _torch_model
    from edgekit.passes.base import Context, get_pass
    from edgekit.schema import build
    from edgekit.spec import TensorSpec

    teacher = _torch_model(tiny_mlp()[0], None, (TensorSpec("features", ("batch", 16), "float32"),), "mlp", "mlp")
    data = Dataset({"features": np.random.default_rng(0).standard_normal((32, 1, 16)).astype(np.float32)}, None, "test")
    (tmp_path / "ck").mkdir()
    torch.save({"module": WritesMarker(marker), "progress": {"step": 3}}, tmp_path / "ck" / "checkpoint.pt")
    distill = get_pass("distill")
    with caplog.at_level("WARNING", logger="edgekit"):
        trained = distill.run(teacher, build(distill.Config, {"steps": 2, "batch_size": 16}, "distill"),
                              Context(tmp_path, calibration=data, source=teacher, checkpoints=tmp_path / "ck"))
    assert "is corrupt or does not fit this run (not a plain weights file): starting afresh" in caplog.text
    assert trained.meta["reports"][-1]["steps"] == 2 and not trained.meta["reports"][-1].get("resumed_from")
    assert not marker.exists()


@pytest.fixture(scope="module")
def step_cache(tmp_path_factory, cnn_source, cnn_data) -> tuple[Path, str]:
    """A step cache holding the tiny CNN's cpu-ort fp32 steps, and the key of its last (optimize-onnx) entry."""
    from edgekit.compiler import compile
    from edgekit.spec import parse_input_spec

    folder = tmp_path_factory.mktemp("step-cache")
    result = compile(cnn_source, "cpu-ort", folder / "pkg", "fp32", cnn_data, cnn_data, (parse_input_spec(CNN_INPUT),),
                     folder / "cache", bench_runs=1)
    return folder / "cache", next(r.cache_key for r in result.records if r.pass_name == "optimize-onnx")


@pytest.mark.parametrize("swap", ["onnx file is a pickle", "entry claims a PyTorch program"])
def test_a_cache_entry_holding_a_pickle_runs_no_code(cli, step_cache, cnn_source, cnn_data, marker, tmp_path, swap):
    """Someone with write access to the cache swaps an entry's model for a pickle and records its sha256: the entry is
    never unpickled; the compile rebuilds the step or fails in one line, never ships it."""
    cache = Path(shutil.copytree(step_cache[0], tmp_path / "cache"))
    entry = cache / step_cache[1]
    record = json.loads((entry / "model.json").read_text())
    name = "model.onnx" if swap == "onnx file is a pickle" else "model.pt2"
    (entry / name).write_bytes(saved(WritesMarker(marker)))
    if name == "model.pt2":
        (entry / "model.onnx").unlink()
        record.update(format="exported", files=[name])
    record["sha256"] = {name: hashlib.sha256((entry / name).read_bytes()).hexdigest()}
    (entry / "model.json").write_text(json.dumps(record))
    result = cli("compile", cnn_source, "-t", "cpu-ort", "-r", "fp32", "--input", CNN_INPUT, "--calib", cnn_data,
                 "--cache-dir", cache, "-o", tmp_path / "out", "--bench-runs", 1)
    if name == "model.pt2":  # a format never cached as files: the entry is removed and the step rebuilt
        assert result.exit_code == 0 and "which is never cached as files" in result.output and not marker.exists()
    else:  # a hash-consistent .onnx that is no ONNX: its runtime refuses it, nothing unpickles it
        refused(result, r"error: step 'optimize-onnx' failed: .* refuses", marker, tmp_path / "out")


def rehash(manifest: object, name: str, path: Path) -> None:
    """Record `path`'s new sha256 and size wherever the manifest lists the file `name`."""
    if isinstance(manifest, dict):
        if manifest.get("path") == name:
            manifest.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), bytes=path.stat().st_size)
        for value in manifest.values():
            rehash(value, name, path)
    elif isinstance(manifest, list):
        for value in manifest:
            rehash(value, name, path)


def test_a_package_file_swapped_for_a_pickle_runs_no_code(cli, cnn_package, marker, tmp_path):
    """The model file and the golden self-test data of a package, each swapped for a pickle with its hash recorded."""
    model = Path(shutil.copytree(cnn_package, tmp_path / "model"))
    (model / "model.onnx").write_bytes(saved(WritesMarker(marker)))
    golden = Path(shutil.copytree(cnn_package, tmp_path / "golden"))
    with np.load(golden / "golden.npz") as stored:
        np.savez(golden / "golden.npz", **{key: np.array([WritesMarker(marker)], dtype=object) for key in stored.files})
    for package, name in ((model, "model.onnx"), (golden, "golden.npz")):
        manifest = json.loads((package / "manifest.json").read_text())
        rehash(manifest, name, package / name)
        (package / "manifest.json").write_text(json.dumps(manifest))
    refused(cli("bench", model, "--runs", 1), r"model.onnx.*(INVALID_PROTOBUF|Protobuf parsing failed)", marker)
    refused(cli("verify", golden), r"golden.npz holds no self-test samples .*allow_pickle=False", marker)


# --- one-line errors --------------------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A valid PNG that claims width x height greyscale pixels and holds a few rows: what a decompression bomb sends."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [50_000, 8_000])  # over Pillow's own refusal (2x its limit), and under it
def test_a_huge_image_is_refused_before_decoding(cli, cnn_source, marker, tmp_path, side):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "big.png").write_bytes(png_header(side, side))
    refused(cli("compile", cnn_source, "-t", "cpu-ort", "--input", "image:1x1x8x8:float32", "--calib",
                f"images:{tmp_path / 'images'}", "-o", tmp_path / "out"),
            r"big.png holds over 50,000,000 pixels: edgekit does not decode it .*resize it first$", marker, tmp_path / "out")


@pytest.mark.parametrize("where, text, message", [
    ("recipe", "name: r\nsteps:\n  - pass: optimize-onnx\n    with: [basic, 1]\n",
     r"recipe .*r.yaml, step 1 \(optimize-onnx\): expected a mapping of parameters, got list"),
    ("recipe", "name: r\nsteps: []\nruntime: {graph_optimization_level: bogus}\n",
     r"a recipe's runtime options: parameter 'graph_optimization_level' = 'bogus' \(str\); expected one of 'disable'"),
    ("target", "name: t\ndevice: cpu\nruntime: onnxruntime\nformat: onnx\nprecisions: [fp32]\ndefault_recipe: fp32\n"
               "options: {graph_optimization_level: bogus}\n",
     r"target .*t.yaml, options: parameter 'graph_optimization_level' = 'bogus' \(str\); expected one of 'disable'"),
])
def test_a_malformed_recipe_or_target_is_one_line(cli, cnn_source, marker, tmp_path, where, text, message):
    path = tmp_path / f"{where[0]}.yaml"
    path.write_text(text)
    chosen = ("-t", "cpu-ort", "-r", path) if where == "recipe" else ("-t", path)
    refused(cli("compile", cnn_source, *chosen, "--input", CNN_INPUT, "-o", tmp_path / "out"), message, marker,
            tmp_path / "out")
    refused(cli("compile", cnn_source, *chosen, "--input", CNN_INPUT, "--dry-run"), message, marker)
