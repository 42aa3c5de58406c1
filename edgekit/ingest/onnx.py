"""Read an ONNX file (with any external-data files beside it) into a Model."""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UserError
from edgekit.model import Format, Model
from edgekit.spec import TensorSpec, merge_specs

# ONNX TensorProto element type → numpy dtype name
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def read_onnx(path: Path, input_specs: tuple[TensorSpec, ...] = ()) -> Model:
    """Load and check `path`; io specs come from the graph, `input_specs` override by name."""
    graph = load_graph(path)
    own_inputs = graph_specs(graph.graph.input, {init.name for init in graph.graph.initializer})
    outputs = graph_specs(graph.graph.output, set())
    inputs = merge_specs(own_inputs, input_specs, str(path))
    files = onnx_files(path, graph)
    return Model(
        Format.ONNX, inputs, outputs, files=files,
        meta={"content_hash": files_sha256(files), "source_hash": files_sha256(files), "source": str(path),
              "passes": [], "precision": "fp32", "opset": opset_of(graph)},
    )


def load_graph(path: Path, with_weights: bool = False):
    """The ModelProto of `path`, checked; a corrupt or truncated file is a UserError."""
    try:
        import onnx
    except ImportError:
        raise MissingBackend("onnx", "onnx", "ONNX models") from None
    try:
        graph = onnx.load(str(path), load_external_data=with_weights)
        onnx.checker.check_model(str(path))
    except Exception as error:  # onnx raises DecodeError, ValidationError, OSError …
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"{path} is not a valid ONNX model: {first}") from None
    return graph


# dim names exporters write when they know nothing: each occurrence is its own independent dim
GENERIC_DIM = re.compile(r"^(\?|unk__\d+|None|-1|dynamic|)$")


def graph_specs(values, skip: set[str]) -> tuple[TensorSpec, ...]:
    """TensorSpecs of graph inputs or outputs; unnamed and generic symbolic dims (`?`, `unk__3`) get unique names."""
    specs = []
    for value in values:
        if value.name in skip:
            continue
        tensor = value.type.tensor_type
        dims: list[int | str] = []
        for index, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(dim.dim_value)
            elif GENERIC_DIM.match(dim.dim_param):
                dims.append(f"{_identifier(value.name)}_dim{index}")
            else:
                dims.append(dim.dim_param)
        specs.append(TensorSpec(value.name, tuple(dims), ONNX_DTYPES.get(tensor.elem_type, "float32")))
    return tuple(specs)


def _identifier(name: str) -> str:
    """A tensor name as a dim name (`--input` parses dims as identifiers)."""
    cleaned = re.sub(r"\W", "_", name)
    return cleaned if cleaned[:1].isalpha() or cleaned[:1] == "_" else f"_{cleaned}"


def onnx_files(path: Path, graph=None) -> tuple[Path, ...]:
    """`path` and every external-data file its initializers name, main file first."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    graph = graph if graph is not None else onnx.load(str(path), load_external_data=False)
    extra: list[Path] = []
    for tensor in graph.graph.initializer:
        if uses_external_data(tensor):
            location = path.parent / ExternalDataInfo(tensor).location
            if location not in extra:
                extra.append(location)
    missing = [p for p in extra if not p.exists()]
    if missing:
        raise UserError(f"{path}: external data file {missing[0].name} is missing beside it")
    return (path, *extra)


def opset_of(graph) -> int:
    return next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), 0)
