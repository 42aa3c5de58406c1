"""The nn.Module onnx-to-torch builds: an ONNX graph (static shapes) run node by node with torch ops."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgekit.errors import UnsupportedOnTarget
from edgekit.passes.onnx_ops import DOMAINS, OPS, STATIC_INPUTS, Node


@dataclass(frozen=True, slots=True)
class Call:
    """One node as forward runs it: its function, the value names it reads ('' = not passed) and writes."""

    fn: Any
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class OnnxGraph(torch.nn.Module):
    """Constants as parameters (float) and buffers; forward runs the calls in graph order."""

    def __init__(self, calls: list[Call], tensors: dict[str, np.ndarray], input_names: tuple[str, ...],
                 output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.calls = calls
        self.input_names = input_names
        self.output_names = output_names
        self.float64 = False  # compute every float in float64 (the rounding-noise reference)
        self.constant_attrs: dict[str, str] = {}
        for index, (name, value) in enumerate(tensors.items()):
            attr = f"c{index}"
            tensor = torch.from_numpy(np.array(value))
            if tensor.is_floating_point():
                self.register_parameter(attr, torch.nn.Parameter(tensor, requires_grad=False))
            else:
                self.register_buffer(attr, tensor)
            self.constant_attrs[name] = attr

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[str, Any] = dict(zip(self.input_names, map(self._widened, inputs)))
        for name, attr in self.constant_attrs.items():
            env[name] = getattr(self, attr)
        for call in self.calls:
            result = call.fn(*[env[name] if name else None for name in call.inputs])
            result = tuple(map(self._widened, result)) if isinstance(result, tuple) else self._widened(result)
            if len(call.outputs) == 1:
                env[call.outputs[0]] = result
            else:
                env.update({name: value for name, value in zip(call.outputs, result) if name})
        return tuple(env[name] for name in self.output_names)

    def _widened(self, value: torch.Tensor) -> torch.Tensor:
        return value.double() if self.float64 and value.dtype == torch.float32 else value


def float_noise(module: OnnxGraph, feeds: list[dict[str, np.ndarray]]) -> float:
    """How far the module's fp32 outputs stray from the same graph computed in float64, relative to their
    magnitude (the first output, as FidelityCheck compares): the fp32 rounding this model amplifies, which any
    other fp32 implementation of it (ONNX Runtime, LiteRT) may differ by."""
    wide = copy.deepcopy(module).double()
    wide.float64 = True
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        for feed in feeds:
            tensors = [torch.from_numpy(np.require(feed[name], requirements="C")) for name in module.input_names]
            narrow, exact = module(*tensors)[0].double(), wide(*tensors)[0]
            worst = max(worst, float((narrow - exact).abs().max()))
            scale = max(scale, float(exact.abs().max()))
    return worst / max(scale, 1e-12)


def _attribute(onnx, attribute) -> Any:
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return value


def _constant_value(onnx, node) -> np.ndarray:
    """The value of a Constant node."""
    attribute = node.attribute[0]
    value = _attribute(onnx, attribute)
    if attribute.name in ("value_float", "value_floats"):
        return np.asarray(value, np.float32)
    if attribute.name in ("value_int", "value_ints"):
        return np.asarray(value, np.int64)
    if isinstance(value, np.ndarray):
        return value
    raise UnsupportedOnTarget(f"onnx-to-torch: Constant node '{node.name}' holds a {attribute.name}")


def build_module(proto, input_names: tuple[str, ...], output_names: tuple[str, ...]) -> OnnxGraph:
    """An OnnxGraph computing `proto`, whose ops are all in OPS (see onnx_torch.unsupported_ops)."""
    import onnx

    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in DOMAINS), 0)
    constants: dict[str, np.ndarray] = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    calls: list[Call] = []
    as_tensor: set[str] = {name for name in output_names if name in constants}
    for proto_node in graph.node:
        if proto_node.op_type == "Constant":
            constants[proto_node.output[0]] = _constant_value(onnx, proto_node)
            continue
        node = Node(proto_node.op_type, proto_node.name or proto_node.output[0], tuple(proto_node.input),
                    tuple(proto_node.output), {a.name: _attribute(onnx, a) for a in proto_node.attribute}, constants, opset)
        static = STATIC_INPUTS[node.op_type]
        used = tuple("" if index in static else name for index, name in enumerate(node.inputs))
        as_tensor |= {name for name in used if name in constants}
        calls.append(Call(OPS[node.op_type](node), used, node.outputs))
    return OnnxGraph(calls, {name: constants[name] for name in sorted(as_tensor)}, input_names, output_names)
