"""Read an ExecuTorch program (.pte) into a Model; io specs come from its `forward` method's metadata."""

from __future__ import annotations

from pathlib import Path

from edgekit.digest import files_sha256
from edgekit.model import Format, Model
from edgekit.spec import TensorSpec, merge_specs


def read_executorch(path: Path, input_specs: tuple[TensorSpec, ...] = ()) -> Model:
    """Load `path`; inputs are named input_0 …, outputs output_0 … (a .pte keeps no names)."""
    from edgekit.runtime.executorch import load_program, method_specs

    inputs, outputs = method_specs(load_program(path))
    digest = files_sha256((path,))
    return Model(
        Format.EXECUTORCH, merge_specs(inputs, input_specs, str(path)), outputs, files=(path,),
        meta={"content_hash": digest, "source_hash": digest, "source": str(path), "passes": [], "precision": "fp32"},
    )
