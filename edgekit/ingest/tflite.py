"""Read a LiteRT model (.tflite) into a Model; io specs come from the interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.digest import files_sha256
from edgekit.errors import UserError
from edgekit.model import Format, Model
from edgekit.spec import TensorSpec, merge_specs


def read_tflite(path: Path, input_specs: tuple[TensorSpec, ...] = ()) -> Model:
    """Load `path`; dynamic dims (-1) become `<name>_dim<axis>`, `input_specs` override by name."""
    inputs, outputs = interpreter_specs(path)
    digest = files_sha256((path,))
    return Model(
        Format.TFLITE, merge_specs(inputs, input_specs, str(path)), outputs, files=(path,),
        meta={"content_hash": digest, "source_hash": digest, "source": str(path), "passes": [],
              "precision": "int8" if any(spec.dtype in ("int8", "uint8") for spec in inputs) else "fp32"},
    )


def interpreter_specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs as the LiteRT interpreter reports them (tensor names without the signature prefix)."""
    from edgekit.runtime.tflite import detail_names, interpreter_class

    try:
        interpreter = interpreter_class()(model_path=str(path))
    except ValueError as error:
        first = (str(error).strip().splitlines() or ["unreadable"])[0]
        raise UserError(f"{path} is not a valid .tflite model: {first}") from None

    def spec(detail: dict) -> TensorSpec:
        name = min(detail_names(detail), key=len)
        signature = detail.get("shape_signature")
        shape = signature if signature is not None and len(signature) == len(detail["shape"]) else detail["shape"]
        dims = tuple(int(d) if d >= 0 else f"{name}_dim{axis}" for axis, d in enumerate(shape))
        return TensorSpec(name, dims, np.dtype(detail["dtype"]).name)

    return (tuple(spec(d) for d in interpreter.get_input_details()),
            tuple(spec(d) for d in interpreter.get_output_details()))
