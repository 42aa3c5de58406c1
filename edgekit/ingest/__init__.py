"""Turn a source (file path, `file.py:factory`, folder) into a Model, picking the reader by kind."""

from __future__ import annotations

import importlib
from pathlib import Path

from edgekit.errors import UserError
from edgekit.model import Model
from edgekit.spec import TensorSpec

# suffix → "module:function(path, input_specs) -> Model"
READERS: dict[str, str] = {
    ".onnx": "edgekit.ingest.onnx:read_onnx",
    ".pt2": "edgekit.ingest.torch:read_exported",
    ".pt": "edgekit.ingest.torch:read_torchscript",
    ".pth": "edgekit.ingest.torch:read_torchscript",
    ".ts": "edgekit.ingest.torch:read_torchscript",
    ".ptl": "edgekit.ingest.torch:read_torchscript",
    ".xml": "edgekit.ingest.openvino:read_openvino",
    ".tflite": "edgekit.ingest.tflite:read_tflite",
    ".pte": "edgekit.ingest.executorch:read_executorch",
}
CARRIES_CODE = frozenset({".pt2"})  # readers that take trust_remote_code: the file may carry code torch would run


def ingest(source: str | Path, input_specs: tuple[TensorSpec, ...] = (), trust_remote_code: bool = False,
           adapters: tuple[str | Path, ...] = ()) -> Model:
    """Read `source`; `input_specs` (from --input) override or complete the model's own specs.

    `trust_remote_code` lets a `.pt2` run the code it carries (pickles, shape expressions, guard code); without it
    such an archive is refused before anything in it runs. Nothing else ever runs a model file's code.
    `adapters` (PEFT adapter folders, for a Hugging Face folder only) are merged into its weights in that order.
    """
    text = str(source)
    path = Path(text)
    if adapters and not (path.is_dir() and (path / "config.json").is_file()):
        raise UserError(f"PEFT adapters (--adapter) merge into a Hugging Face model folder (with config.json) only; "
                        f"{text} is not one")
    if ".py:" in text:
        from edgekit.ingest.torch import read_factory

        file_part, _, factory = text.rpartition(":")
        return read_factory(Path(file_part), factory, input_specs)
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is a folder without config.json: not a Hugging Face model folder")
        from edgekit.ingest.hf import read_hf_folder

        return read_hf_folder(path, input_specs, tuple(adapters))
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        if path.suffix == ".py":
            raise UserError(f"{path}: name the factory too, as {path}:build_model")
        known = ", ".join(sorted(READERS)) + ", file.py:factory"
        raise UserError(f"{path}: unknown model kind '{path.suffix or path.name}' (known: {known})")
    module_name, _, function_name = reader.partition(":")
    read = getattr(importlib.import_module(module_name), function_name)
    return read(path, input_specs, trust_remote_code) if path.suffix.lower() in CARRIES_CODE else read(path, input_specs)
