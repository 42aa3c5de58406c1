"""Hypothesis strategies for the fuzz suite: mutations of real documents (manifests, recipes, targets) drawn from
edgekit's own vocabulary and from nasty values, --input spec texts, and zip package layouts."""

from __future__ import annotations

import copy
import functools
import io
import stat
import struct
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from edgekit.spec import DTYPES

DECOY = "<DECOY>"  # replaced by the absolute path of a file outside the package
DEEP = "<DEEP>"  # replaced, in a document's text, by 50 000 nested lists
DEEP_TEXT = "[" * 50_000 + "]" * 50_000
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # YAML and JSON files hold no lone surrogates
NASTY = st.sampled_from([
    "../decoy/model.onnx", DECOY, "/etc/hostname", "", ".", "..", "model.onnx/..", "sub/../../decoy/model.onnx",
    "..\\decoy\\model.onnx", "\x1b[2J\x1b[31mred", "line\nbreak", "nul\x00byte", "\ud800", "x" * 5000, DEEP,
    2**64, -1, 0, 10**400, 1e308, -0.0, float("nan"), float("inf"), True, None, [], {}, [[[[[]]]]], {"": {}},
])
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                           max_leaves=8)


@functools.cache
def vocabulary() -> tuple[Any, ...]:
    """Names and small values edgekit's files use: a mutation made of them reaches deeper than random text."""
    import dataclasses

    from edgekit.isa import ISAS
    from edgekit.metrics import BUILTIN_METRICS
    from edgekit.model import Format
    from edgekit.passes.base import get_pass, pass_names
    from edgekit.recipe import RECIPE_KEYS
    from edgekit.spec import DTYPES
    from edgekit.target import TARGET_KEYS

    passes = pass_names()
    fields = sorted({f.name for name in passes if dataclasses.is_dataclass(get_pass(name).Config)
                     for f in dataclasses.fields(get_pass(name).Config)})
    words = [*passes, *fields, *RECIPE_KEYS, *TARGET_KEYS, *ISAS, *BUILTIN_METRICS, *DTYPES, *(f.value for f in Format),
             "onnxruntime", "openvino", "tflite", "executorch", "tensorrt", "cpu", "gpu", "npu", "mobile", "fp32", "fp16",
             "bf16", "int8", "int4", "int8/static", "int8/dynamic", "int4/weight-only", "static", "dynamic",
             "per-channel", "per-group", "per-tensor", "quantize", "pass", "with", "CPUExecutionProvider", "CPU",
             "INFERENCE_PRECISION_HINT", "CACHE_DIR", "providers", "provider_options", "config", "image", "batch"]
    steps = [{"pass": name} for name in passes] + [{"quantize": {"precision": "int8"}},
                                                    {"quantize": {"precision": "int4", "group_size": 64}}]
    return (*words, *steps, [{"pass": "optimize-onnx"}], ["fp32", "int8"], {"fp32": "fp32"}, 7, 13, 21, 0.01, 1e-9)


VALUES = st.one_of(JSON_VALUES, NASTY, st.deferred(lambda: st.sampled_from(vocabulary())))
KEYS = st.one_of(TEXT, st.deferred(lambda: st.sampled_from([w for w in vocabulary() if isinstance(w, str)])))


def node_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """The path (keys and indices) of every node of a JSON-like document, the root first."""
    paths = [prefix]
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        paths += node_paths(child, (*prefix, key))
    return paths


def _apply(document: Any, path: tuple, operation: str, key: Any, value: Any) -> Any:
    """The document with one change at `path`: delete the node, set it, or add a key or item beside its children."""
    if not path:
        return value if operation != "add" or not isinstance(document, dict) else {**document, key: value}
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    node = parent[path[-1]]
    if operation == "delete":
        del parent[path[-1]]
    elif operation == "add" and isinstance(node, dict):
        node[key] = value
    elif operation == "add" and isinstance(node, list):
        node.append(value)
    else:
        parent[path[-1]] = value
    return document


@st.composite
def mutated(draw: st.DrawFn, documents: list[Any]) -> Any:
    """One of `documents` with one to three changes."""
    document = copy.deepcopy(draw(st.sampled_from(documents)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(node_paths(document)))
        value = copy.deepcopy(draw(VALUES))  # a drawn list or mapping is shared with the strategy: never change it
        document = _apply(document, path, draw(st.sampled_from(["delete", "set", "add"])), draw(KEYS), value)
    return document


# --input NAME:DIMS[:dtype]
SPEC_NAMES = st.one_of(st.sampled_from(["image", "x", "input.1", "a b", "ids", "", "image\x1b[31m"]), TEXT)
SPEC_DIMS = st.one_of(st.integers(0, 2**70).map(str), TEXT,
                      st.sampled_from(["batch", "-1", "", " ", "1.5", "x", "ы", "_b", "N", "0", "9" * 40]))
SPEC_DTYPES = st.one_of(st.sampled_from([*DTYPES, "", "float", "f32", "FLOAT32", "int9", "onnx"]), TEXT)


@st.composite
def spec_text(draw: st.DrawFn) -> str:
    name, dims = draw(SPEC_NAMES), draw(st.lists(SPEC_DIMS, max_size=5))
    parts = [name, draw(st.sampled_from(["x", ",", " x ", "X", ":"])).join(dims)]
    if draw(st.booleans()):
        parts.append(draw(SPEC_DTYPES))
    return ":".join(parts)


SPEC_TEXTS = st.one_of(spec_text(), TEXT, st.just("image:batchx1x8x8:float32"))


# zip packages
ZIP_EXTRAS = ["../escape.txt", "../../../../escape.txt", "/escape.txt", "a/../../../../escape.txt", "..\\escape.txt",
              "C:/escape.txt", "sub/", "notes.txt", "signature.json", "./manifest.json", "manifest.json/", "model.onnx/x",
              "x" * 300, "sub/model.onnx", "pkg/manifest.json", "bomb.bin"]


@dataclass(frozen=True)
class ZipLayout:
    """How to lay a real package's files out in an archive, and what to break."""

    prefix: str
    copies: dict[str, int]  # manifest.json / model.onnx → how many entries of that name (the 2nd holds junk); others 1
    extras: tuple[tuple[str, bytes], ...]
    link: str | None  # the first entry is stored as a symlink to this
    declared: int | None  # the model entry declares this uncompressed size
    method: int
    damage: tuple[str, float] | None  # truncate the archive or flip a byte at this fraction of it

    def build(self, files: dict[str, bytes], decoy: str) -> bytes:
        buffer = io.BytesIO()
        members = [(self.prefix + name, data if copy == 0 else b"junk")
                   for name, data in files.items() for copy in range(self.copies.get(name, 1))]
        members += [(name, bytes(2 * 2**20) if name == "bomb.bin" else data) for name, data in self.extras]
        with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", self.method) as archive:
            warnings.simplefilter("ignore")  # duplicate names are the point
            for index, (name, data) in enumerate(members):
                info = zipfile.ZipInfo(name)
                info.compress_type = self.method
                if index == 0 and self.link is not None:
                    info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
                    data = self.link.replace(DECOY, decoy).encode()
                archive.writestr(info, data)
        data = buffer.getvalue()
        if self.declared is not None:
            data = declare_size(data, self.prefix + "model.onnx", self.declared)
        if self.damage is not None:
            kind, where = self.damage
            at = min(int(where * len(data)), len(data) - 1)
            data = data[:at] if kind == "truncate" else data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
        return data


def declare_size(data: bytes, name: str, size: int) -> bytes:
    """The archive with `name`'s uncompressed size set to `size` in its local and central headers."""
    patched = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = [info for info in archive.infolist() if info.filename == name]
        start = archive.start_dir  # type: ignore[attr-defined]
    if not infos:
        return data
    struct.pack_into("<I", patched, infos[0].header_offset + 22, size)
    at = start
    while patched[at:at + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", patched, at + 28)
        if patched[at + 46:at + 46 + name_length].decode("utf-8", "replace") == name:
            struct.pack_into("<I", patched, at + 24, size)
            break
        at += 46 + name_length + extra_length + comment_length
    return bytes(patched)


ZIP_LAYOUTS = st.builds(
    ZipLayout,
    prefix=st.sampled_from(["", "", "", "pkg/", "a/b/", "./", "/"]),
    copies=st.fixed_dictionaries({"manifest.json": st.sampled_from([1, 1, 1, 0, 2]),
                                  "model.onnx": st.sampled_from([1, 1, 1, 0, 2])}),
    extras=st.lists(st.tuples(st.sampled_from(ZIP_EXTRAS), st.binary(max_size=16)), max_size=2).map(tuple),
    link=st.one_of(st.none(), st.none(), st.sampled_from(["../decoy/model.onnx", DECOY, "/etc/hostname"])),
    declared=st.one_of(st.none(), st.none(), st.sampled_from([0, 1, 2**31, 2**32 - 1])),
    method=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
    damage=st.one_of(st.none(), st.none(), st.tuples(st.sampled_from(["truncate", "flip"]), st.floats(0, 1))),
)
