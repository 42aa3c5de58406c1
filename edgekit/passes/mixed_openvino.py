"""OpenVINO per layer, for the mixed-precision search (passes/mixed.py): a layer runs in int8 (NNCF's FakeQuantize on
its inputs, calibrated) or fp32 (in NNCF's ignored scope). A plan is built by nncf.quantize with the promoted ops'
friendly names ignored."""

from __future__ import annotations

from collections.abc import Callable

from edgekit.model import Model
from edgekit.passes.base import Context
from edgekit.passes.mixed import Plan

WEIGHT_PATH = frozenset({"Convert", "Reshape", "Transpose"})  # ops between an op and its weight constant


class OpenvinoLayers:
    format_module = "edgekit.layers.openvino_layers"

    def __init__(self, model: Model, ctx: Context, quantize: Callable[[list[str], int], Model]) -> None:
        from edgekit.passes.openvino import read_ir

        self.model, self.ctx, self.quantize = model, ctx, quantize
        self.weights = {op.get_friendly_name(): sum(_constant_bytes(value.get_node()) for value in op.input_values())
                        for op in read_ir(model).get_ordered_ops()}

    def rungs(self, node: str) -> tuple[str, ...]:
        return ("int8", "fp32")

    def weight_bytes(self) -> dict[str, int]:
        return self.weights

    def build(self, plan: Plan, index: int) -> Model:
        return self.quantize(sorted(node for node, rung in plan.items() if rung == "fp32"), index)


def _constant_bytes(node, depth: int = 3) -> int:
    """fp32 bytes of the weight constant behind `node` (through Convert/Reshape/Transpose), 0 for an activation."""
    kind = node.get_type_name()
    if kind == "Constant":
        shape = node.get_output_partial_shape(0)
        if not shape.is_static:
            return 0
        count = 1
        for dim in shape.to_shape():
            count *= dim
        return count * 4 if count > 1 else 0
    if kind in WEIGHT_PATH and depth > 0:
        return sum(_constant_bytes(value.get_node(), depth - 1) for value in node.input_values())
    return 0
