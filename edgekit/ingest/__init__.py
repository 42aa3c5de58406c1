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


def ingest(source: str | Path, input_specs: tuple[TensorSpec, ...] = ()) -> Model:
    """Read `source`; `input_specs` (from --input) override or complete the model's own specs."""
    text = str(source)
    if ".py:" in text:
        from edgekit.ingest.torch import read_factory

        file_part, _, factory = text.rpartition(":")
        return read_factory(Path(file_part), factory, input_specs)
    path = Path(text)
    if not path.exists():
        raise UserError(f"model not found: {path}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is a folder without config.json: not a Hugging Face model folder")
        from edgekit.ingest.hf import read_hf_folder

        return read_hf_folder(path, input_specs)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        if path.suffix == ".py":
            raise UserError(f"{path}: name the factory too, as {path}:build_model")
        known = ", ".join(sorted(READERS)) + ", file.py:factory"
        raise UserError(f"{path}: unknown model kind '{path.suffix or path.name}' (known: {known})")
    module_name, _, function_name = reader.partition(":")
    return getattr(importlib.import_module(module_name), function_name)(path, input_specs)
