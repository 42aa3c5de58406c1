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
from edgekit.passes.base import Context, muted_logs
from edgekit.passes.mixed import Plan

DYNAMIC_CAPABLE = frozenset({"MatMul", "Gather"})  # ORT dynamic int8: MatMulInteger; Gather of int8 weights (not Gemm)


class OrtLayers:
    """`base` is the scheme every layer starts in: static (rungs int8 → int8-dynamic → fp32) or dynamic."""

    format_module = "edgekit.layers.onnx_layers"

    def __init__(self, model: Model, base: str, ctx: Context, quantize_static: Callable[[list[str], Path], None] | None,
                 dynamic_options: dict) -> None:
        graph = load_graph(model.path).graph
        self.model, self.base, self.ctx = model, base, ctx
        self.quantize_static, self.dynamic_options = quantize_static, dynamic_options
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
        from edgekit.passes.quantize_ort import _quantization, _result_files

        folder = self.ctx.step_dir(f"mixed-{index}")
        promoted = sorted(node for node, rung in plan.items() if rung == "fp32")
        if self.base == "static":
            self.quantize_static(promoted, folder / "model.onnx")
        else:
            with muted_logs("root"):
                _quantization().quantize_dynamic(
                    str(self.model.path), str(folder / "model.onnx"), op_types_to_quantize=sorted(DYNAMIC_CAPABLE),
                    nodes_to_quantize=[node for node, op in self.ops.items() if op in DYNAMIC_CAPABLE and node not in plan],
                    use_external_data_format=len(self.model.files) > 1, **self.dynamic_options)
        return self.model.derive(files=onnx_files(folder / "model.onnx"), meta=_result_files(folder / "model.onnx"))


def _tensor_bytes(tensor) -> int:
    import onnx

    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
