"""Data named by a spec file (YAML/JSON) or a shorthand: `images:FOLDER`, `text:FILE`.

A spec file holds one source, `images: FOLDER` or `text: FILE`, with its options beside it
(see ImageSource and TextSource); relative paths are relative to the spec file.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.data.dataset import Dataset
from edgekit.data.images import ImageSource, load_images
from edgekit.data.text import TextSource, load_text
from edgekit.errors import UserError
from edgekit.schema import build
from edgekit.spec import TensorSpec

SHORTHANDS = ("images:", "text:")
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def is_described(text: str) -> bool:
    """Whether `text` names a shorthand or a data spec file rather than arrays."""
    return text.startswith(SHORTHANDS) or Path(text).suffix.lower() in SPEC_SUFFIXES


def load_described(text: str, specs: tuple[TensorSpec, ...], tokenizer: str | Path | None) -> Dataset:
    """The Dataset a shorthand or spec file describes, fitted to `specs`."""
    if text.startswith(SHORTHANDS):
        kind, _, path = text.partition(":")
        values, base, where = {kind: path}, Path.cwd(), text
    else:
        values, base, where = _read_spec(Path(text)), Path(text).parent, text
    kinds = [kind for kind in ("images", "text") if kind in values]
    if len(kinds) != 1:
        raise UserError(f"data spec {where}: give exactly one of 'images: FOLDER' or 'text: FILE'")
    kind = kinds[0]
    values[kind] = str(_relative_to(values[kind], base, where, kind))
    if kind == "images":
        return load_images(build(ImageSource, values, f"data spec {where}"), specs, where)
    if values.get("tokenizer"):
        values["tokenizer"] = str(_relative_to(values["tokenizer"], base, where, "tokenizer"))
    return load_text(build(TextSource, values, f"data spec {where}"), specs, where, tokenizer)


def _read_spec(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"data spec file not found: {path}")
    import yaml

    try:
        data = json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.safe_load(path.read_text())
    except (ValueError, yaml.YAMLError) as error:
        raise UserError(f"data spec {path}: cannot parse it: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"data spec {path}: expected a mapping such as 'images: FOLDER' or 'text: FILE'")
    return data


def _relative_to(value: object, base: Path, where: str, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise UserError(f"data spec {where}: '{key}' must be a path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
