"""onnx-to-torch: an ONNX model as a PyTorch module, so ONNX sources (and .tflite ones, through tflite-to-onnx)
reach the targets that start from PyTorch (mobile-tflite, mobile-executorch) and the torch passes.

Symbolic input dims are fixed to the compile data's sizes (as the mobile converters fix them) and the
graph is simplified at those shapes by onnxslim, which folds shape arithmetic into constants. The
module then runs the graph node by node with the torch functions of `onnx_ops`, its constants held
as parameters (float) and buffers, so torch.export sees plain aten ops (conv2d, linear …) that the
mobile delegates recognise. Ops outside that table, other domains and shapes computed at run time
are refused by name before any conversion work.

Why not onnx2torch: it depends on torchvision (which does not load with the CPU torch) and its
modules keep ONNX's run-time shape arithmetic, which torch.export rejects on real exports (magika).
"""

from __future__ import annotations

from edgekit.errors import MissingBackend, UnsupportedOnTarget, gist
from edgekit.ingest.onnx import graph_specs
from edgekit.model import Format, Model
from edgekit.passes.base import Context, NoConfig, Pass, muted_logs
from edgekit.passes.pt2e import data_sizes, static_specs
from edgekit.spec import TensorSpec


def onnx_modules():
    try:
        import onnx
        import onnxslim
    except ImportError:
        raise MissingBackend("onnx", "onnx", "onnx-to-torch") from None
    return onnx, onnxslim


def static_graph(model: Model, inputs: tuple[TensorSpec, ...]):
    """The model's ONNX graph with `inputs`' static shapes, simplified by onnxslim (shape arithmetic folded)."""
    onnx, onnxslim = onnx_modules()
    proto = onnx.load(str(model.path))
    by_name = {spec.name: spec for spec in inputs}
    for value in proto.graph.input:
        spec = by_name.get(value.name)
        if spec is None:
            continue
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in spec.shape:
            dims.add().dim_value = int(size)
    with muted_logs("onnxslim"):
        return onnxslim.slim(proto)


def unsupported_ops(proto) -> list[str]:
    """The graph's op types onnx_ops has no builder for, sorted (domain-qualified outside the default domain)."""
    from edgekit.passes.onnx_ops import DOMAINS, OPS

    missing = []
    for node in proto.graph.node:
        name = node.op_type if node.domain in DOMAINS else f"{node.domain}.{node.op_type}"
        if (node.domain not in DOMAINS or (node.op_type not in OPS and node.op_type != "Constant")) and name not in missing:
            missing.append(name)
    return sorted(missing)


def convert_onnx_to_torch(model: Model, ctx: Context) -> Model:
    """`model` (ONNX) as a TORCH model with static input shapes (the data's sizes, else 1)."""
    sizes = data_sizes(model.inputs, ctx.calibration or ctx.evaluation)
    inputs = static_specs(model.inputs, sizes)
    try:
        proto = static_graph(model, inputs)
    except Exception as error:  # onnxslim's folding runs onnxruntime on constant subgraphs
        raise UnsupportedOnTarget(f"onnx-to-torch: simplifying {model.path.name} at shapes "
                                  f"{', '.join(f'{s.name}:{s.shape}' for s in inputs)} failed: {gist(error)}") from None
    missing = unsupported_ops(proto)
    if missing:
        raise UnsupportedOnTarget(f"onnx-to-torch has no converter for op{'s' if len(missing) > 1 else ''} "
                                  f"{', '.join(missing)} of {model.path.name}")
    from edgekit.passes.onnx_module import build_module

    module = build_module(proto, tuple(spec.name for spec in inputs), tuple(spec.name for spec in model.outputs))
    inferred = {spec.name: spec for spec in graph_specs(proto.graph.output, set())}
    outputs = tuple(TensorSpec(spec.name, inferred[spec.name].shape if spec.name in inferred else spec.shape, spec.dtype)
                    for spec in model.outputs)
    if sizes:
        ctx.logger.info("onnx-to-torch: symbolic dims fixed to the data's sizes %s", sizes)
    return model.derive(format=Format.TORCH, files=(), module=module.eval(), inputs=inputs, outputs=outputs,
                        example_inputs=None, meta={"converter": "edgekit onnx-to-torch", "static_sizes": sizes})


class OnnxToTorch(Pass):
    name = "onnx-to-torch"
    accepts = frozenset({Format.ONNX})
    produces = Format.TORCH
    Config = NoConfig
    tolerance = 1e-4
    conversion = True
    uses_calibration = True  # symbolic dims are fixed to the data's sizes

    def run(self, model: Model, config: NoConfig, ctx: Context) -> Model:
        return convert_onnx_to_torch(model, ctx)
