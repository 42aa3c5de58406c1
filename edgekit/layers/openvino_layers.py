"""OpenVINO IRs layer by layer: the package IR's op with the float IR op's friendly name (NNCF keeps them; its
FakeQuantize ops and weight decompression come with names of their own), both compiled for the CPU with those ops'
outputs added (`Model.add_outputs`). The package's value is the one the next layer reads: after the op's own
FakeQuantize, where it has one. A tensor is named `friendly_name:port`; the model's own outputs `result:N`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.layers.onnx_layers import FEEDING_DEPTH, LayerMatch, Matching, source_modules
from edgekit.profiling.naming import module_of

LAYOUT_OPS = frozenset({"Parameter", "Result", "Constant", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat",
                        "ShapeOf", "Convert", "ConvertLike", "StridedSlice", "Slice", "Broadcast", "Split", "VariadicSplit",
                        "Tile", "Pad", "Range", "FakeQuantize", "FakeConvert"})
LOW_TYPES = {"i8": "int8", "u8": "int8", "i4": "int4", "u4": "int4", "nf4": "int4"}  # weights NNCF compressed
DECOMPRESSION_OPS = frozenset({"Convert", "Subtract", "Multiply", "Reshape", "Transpose"})
WALK_DEPTH = 4  # decompression ops followed back from a layer to its weights


def _read(path: Path):
    from edgekit.runtime.openvino import core

    return core().read_model(str(path))


def match_layers(reference: Path, package: Path, lineage: tuple[Path, ...] = ()) -> Matching:
    """Every computing op's float outputs of the float IR, paired with the package IR's op of the same friendly name;
    its module from the name (a PyTorch frontend's __module.stage1.conv1/…), else from the ONNX graphs of `lineage`
    (an IR converted from ONNX names its ops after the ONNX nodes' outputs)."""
    modules = source_modules(lineage)
    twins = {op.get_friendly_name(): op for op in _read(package).get_ops()}
    layers, float_ops, counted, by_name = [], [], 0, 0
    for op in _read(reference).get_ordered_ops():
        kind = op.get_type_name()
        if kind in LAYOUT_OPS:
            continue
        counted += 1
        name = op.get_friendly_name()
        twin = twins.get(name)
        if twin is None or twin.get_type_name() != kind:
            continue
        for port in range(min(op.get_output_size(), twin.get_output_size())):
            if not op.get_output_element_type(port).is_real():
                continue
            by_name += 1
            layers.append(LayerMatch(f"{name}:{port}", _after_fake_quantize(twin, port), kind, name,
                                     _module(op, modules) or name, _precision(twin)))
            float_ops.append(op)
    compared = {layer.tensor for layer in layers}
    layers = [replace(layer, inputs=_feeding(op, compared)) for layer, op in zip(layers, float_ops)]
    return Matching(tuple(layers), counted, len({layer.node for layer in layers}), by_name, 0)


def _feeding(op, compared: set[str]) -> tuple[str, ...]:
    """The compared outputs `op` reads, directly or through layout ops and unmatched ops."""
    found, frontier, seen = [], list(op.input_values()), set()
    for _ in range(FEEDING_DEPTH):
        following = []
        for value in frontier:
            key = f"{value.get_node().get_friendly_name()}:{value.get_index()}"
            if key in seen:
                continue
            seen.add(key)
            if key in compared:
                found.append(key)
            else:
                following += list(value.get_node().input_values())
        frontier = following
    return tuple(found)


def _module(op, modules: dict[str, str]) -> str | None:
    """The module an op's name tells, else the first of its consumers' (OpenVINO names a convolution whose batch norm
    it folded after the weights' Multiply; the bias Add after it keeps __module.bn1/…)."""
    names = [op.get_friendly_name()] + [target.get_node().get_friendly_name()
                                        for port in op.outputs() for target in port.get_target_inputs()]
    return module_of(names[:1]) or modules.get(names[0]) or module_of(names[1:])


def _after_fake_quantize(op, port: int) -> str:
    """The output of the FakeQuantize that reads `op`'s port (what the next layer reads), else that port."""
    for target in op.output(port).get_target_inputs():
        consumer = target.get_node()
        if consumer.get_type_name() == "FakeQuantize":
            return f"{consumer.get_friendly_name()}:0"
    return f"{op.get_friendly_name()}:{port}"


def _precision(op) -> str:
    """int8 when the op reads a FakeQuantize of more than 16 levels (int4: fewer), or reads through weight
    decompression (Convert, Subtract, Multiply, Reshape, Transpose) an i8/u8/i4 constant (NNCF's weights); else fp32."""
    for value in op.input_values():
        producer = value.get_node()
        if producer.get_type_name() == "FakeQuantize":
            return "int8" if int(producer.get_attributes().get("levels", 256)) > 16 else "int4"
    frontier = [value.get_node() for value in op.input_values()]
    for _ in range(WALK_DEPTH):
        following = []
        for producer in frontier:
            kind = producer.get_type_name()
            if kind == "Constant":
                found = LOW_TYPES.get(producer.get_output_element_type(0).get_type_name())
                if found:
                    return found
            elif kind in DECOMPRESSION_OPS:
                following += [value.get_node() for value in producer.input_values()]
        frontier = following
    return "fp32"


def _compile(model, options: dict[str, Any]):
    from edgekit.runtime.openvino import core

    return core().compile_model(model, "CPU", dict(options.get("config") or {}))


class ExposedRun:
    """An OpenVINO CPU compile of the IR at `path` with the outputs of `tensors` (`friendly_name:port`) added."""

    def __init__(self, path: Path, tensors: list[str], work_dir: Path, options: dict[str, Any] | None = None) -> None:
        model = _read(path)
        ops = {op.get_friendly_name(): op for op in model.get_ops()}
        originals = len(model.outputs)
        wanted = list(dict.fromkeys(tensors))
        model.add_outputs([ops[name].output(int(port)) for name, _, port in (tensor.rpartition(":") for tensor in wanted)])
        position = {_key(output): index for index, output in reversed(list(enumerate(model.outputs)))}
        self.positions = {**{f"result:{index}": index for index in range(originals)},
                          **{tensor: position[tensor] for tensor in wanted}}
        self.compiled = _compile(model, options or {})
        self.request = self.compiled.create_infer_request()
        self.inputs = _input_names(self.compiled)

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer({name: value for name, value in feed.items() if name in self.inputs})
        return {name: np.array(results[index]) for name, index in self.positions.items()}


def _key(output) -> str:
    """`friendly_name:port` of the op output a model output (a Result's input) is."""
    node = output.get_node()
    if node.get_type_name() == "Result":
        output = node.input_value(0)
        node = output.get_node()
    return f"{node.get_friendly_name()}:{output.get_index()}"


def _input_names(compiled) -> set[str]:
    return {name for port in compiled.inputs for name in port.get_names()}


def plain_outputs(path: Path, feeds: list[dict[str, np.ndarray]], options: dict[str, Any] | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
    """The package IR's own outputs, compiled as it ships, per feed."""
    compiled = _compile(_read(path), options or {})
    request, inputs = compiled.create_infer_request(), _input_names(compiled)
    for feed in feeds:
        results = request.infer({name: value for name, value in feed.items() if name in inputs})
        yield {f"result:{index}": np.array(results[index]) for index in range(len(compiled.outputs))}
