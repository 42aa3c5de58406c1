"""Read an OpenVINO IR (.xml with its .bin beside it) into a Model."""

from __future__ import annotations

from pathlib import Path

from edgekit.digest import files_sha256
from edgekit.errors import UserError
from edgekit.model import Format, Model
from edgekit.spec import TensorSpec, merge_specs


def read_openvino(path: Path, input_specs: tuple[TensorSpec, ...] = ()) -> Model:
    """Load `path` (+ `path.bin`); io specs come from the IR, `input_specs` override by name."""
    from edgekit.runtime.openvino import core

    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise UserError(f"{path}: its weights file {weights.name} is missing beside it")
    try:
        ov_model = core().read_model(str(path), str(weights))
    except RuntimeError as error:  # OpenVINO raises RuntimeError for unreadable or corrupt IR
        first = (str(error).strip().splitlines() or ["unreadable"])[0]
        raise UserError(f"{path} is not a valid OpenVINO IR: {first}") from None
    files = (path, weights)
    digest = files_sha256(files)
    return Model(
        Format.OPENVINO, merge_specs(port_specs(ov_model.inputs, "input"), input_specs, str(path)),
        port_specs(ov_model.outputs, "output"), files=files,
        meta={"content_hash": digest, "source_hash": digest, "source": str(path), "passes": [], "precision": "fp32"},
    )


def port_specs(ports, prefix: str) -> tuple[TensorSpec, ...]:
    """TensorSpecs of IR ports: dynamic dims become `<name>_dim<axis>`, unnamed ports `<prefix>_<index>`."""
    specs = []
    for index, port in enumerate(ports):
        names = sorted(port.get_names())
        name = names[0] if names else f"{prefix}_{index}"
        shape = port.get_partial_shape()
        if shape.rank.is_dynamic:
            raise UserError(f"IR {prefix} '{name}' has a dynamic rank; edgekit needs at least the rank of each tensor")
        dims = tuple(dim.get_length() if dim.is_static else f"{name}_dim{axis}" for axis, dim in enumerate(shape))
        specs.append(TensorSpec(name, dims, str(port.get_element_type().to_dtype())))
    return tuple(specs)
