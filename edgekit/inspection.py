"""`inspect`: what a model is — format, io specs, parameters, operator histogram, size, opset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edgekit.ingest import ingest
from edgekit.model import Format
from edgekit.spec import TensorSpec


def inspect(source: str | Path, inputs: tuple[TensorSpec, ...] = (), trust_remote_code: bool = False) -> dict:
    """A summary of the model at `source` (any ingestible kind); `trust_remote_code` as for `ingest`."""
    model = ingest(source, inputs, trust_remote_code)
    summary = {
        "source": str(source),
        "format": model.format.value,
        "inputs": [s.to_dict() for s in model.inputs],
        "outputs": [s.to_dict() for s in model.outputs],
        "size_bytes": model.size_bytes() if model.files else None,
        "files": [str(p) for p in model.files],
    }
    if model.format is Format.ONNX:
        summary.update(_onnx_details(model.path))
    elif model.format.in_memory:
        summary.update(_torch_details(model))
    return summary


def _onnx_details(path: Path) -> dict:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path))
    params = sum(int(np.prod(numpy_helper.to_array(t).shape)) for t in graph.graph.initializer)
    ops = Counter(node.op_type for node in graph.graph.node)
    opsets = {o.domain or "ai.onnx": o.version for o in graph.opset_import}
    return {"parameters": params, "operators": dict(ops.most_common()), "opset": opsets,
            "producer": f"{graph.producer_name} {graph.producer_version}".strip()}


def _torch_details(model) -> dict:
    module = model.module.module() if model.format is Format.EXPORTED else model.module
    params = sum(p.numel() for p in module.parameters())
    layers = Counter(type(m).__name__ for m in module.modules() if not list(m.children()))
    return {"parameters": int(params), "operators": dict(layers.most_common())}
