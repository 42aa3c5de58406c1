"""ONNX Runtime per layer, for the mixed-precision search (passes/mixed.py). On a static base a layer runs in int8
(QDQ, calibrated) or fp32 (excluded from quantize_static); on a dynamic base a MatMul runs in int8 dynamic (weights
int8, activations quantized per run; Gather weights int8 too) or fp32. ORT's quantizers take float graphs only
(quantize_static over a dynamically quantized graph fails on LayerNorm scales, quantize_dynamic over QDQ asserts), so
one plan holds one base scheme and fp32."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgekit.ingest.onnx import load_graph, onnx_files
from edgekit.model import Model
from edgekit.passes.base import Context
from edgekit.passes.mixed import Plan

DYNAMIC_CAPABLE = frozenset({"MatMul", "Gather"})  # ORT dynamic int8: MatMulInteger; Gather of int8 weights (not Gemm)


class OrtLayers:
    """`base` is the scheme every layer starts in (static or dynamic); `quantize(fp32 nodes, out)` writes a plan's
    model with ORT's quantizer of that scheme."""

    format_module = "edgekit.layers.onnx_layers"

    def __init__(self, model: Model, base: str, ctx: Context, quantize: Callable[[list[str], Path], None]) -> None:
        graph = load_graph(model.path).graph
        self.model, self.base, self.ctx, self.quantize = model, base, ctx, quantize
        self.ops = {node.name: node.op_type for node in graph.node if node.name}
        sizes = {init.name: _tensor_bytes(init) for init in graph.initializer}
        self.weights = {node.name: sum(sizes.get(name, 0) for name in node.input) for node in graph.node if node.name}

    def rungs(self, node: str) -> tuple[str, ...]:
        if self.base == "dynamic":
            return ("int8-dynamic", "fp32") if self.ops.get(node) in DYNAMIC_CAPABLE else ("fp32",)
        return ("int8", "fp32")

    def weight_bytes(self) -> dict[str, int]:
        return self.weights

    def build(self, plan: Plan, index: int) -> Model:
        out = self.ctx.step_dir(f"mixed-{index}") / "model.onnx"
        self.quantize(sorted(node for node, rung in plan.items() if rung == "fp32"), out)
        return self.model.derive(files=onnx_files(out))


def _tensor_bytes(tensor) -> int:
    import onnx

    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
