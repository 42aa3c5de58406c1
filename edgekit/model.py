"""Model: what a pass takes and returns — a format, a payload, its io specs and provenance."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekit.spec import TensorSpec


class Format(enum.StrEnum):
    """What a model's payload is."""

    TORCH = "torch"  # an nn.Module in memory
    EXPORTED = "exported"  # a torch.export ExportedProgram
    ONNX = "onnx"
    OPENVINO = "openvino"  # IR: .xml + .bin
    TFLITE = "tflite"
    EXECUTORCH = "executorch"  # .pte
    TENSORRT = "tensorrt"  # serialized engine

    @property
    def in_memory(self) -> bool:
        return self in (Format.TORCH, Format.EXPORTED)


@dataclass(frozen=True, slots=True)
class Model:
    """An immutable model. File formats keep `files` (main file first); torch formats keep `module`.

    `meta` holds provenance: `content_hash` (identity of this exact model), `source_hash`,
    `passes` (applied, with their configs), `precision`.
    """

    format: Format
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    files: tuple[Path, ...] = ()
    module: Any = None
    example_inputs: tuple[Any, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The main file of a file-based model."""
        if not self.files:
            raise ValueError(f"a {self.format.value} model held in memory has no path")
        return self.files[0]

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)

    def derive(self, **changes: Any) -> Model:
        """A new Model with `changes`; `meta` given here is merged into the current meta."""
        meta = {**self.meta, **changes.pop("meta", {})}
        return replace(self, meta=meta, **changes)
