"""ONNX graphs layer by layer: which tensor of a package's graph holds the value of each layer of the float graph, and
both run in ONNX Runtime with those tensors added as graph outputs.

A quantizer keeps the float ops' output names (ORT's QDQ adds Q/DQ tensors with suffixes; a graph output is renamed to
`…_QuantizeLinear_Input` and its DequantizeLinear takes the name): a layer is matched by its output's name, else by its
node's name and op type. The package's value is the one the next layer reads: after the output's Q→DQ pair, if any."""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.ingest.onnx import load_graph
from edgekit.profiling.naming import module_of

# ops that only move, reshape or convert values: their output's error is their input's, so they are not layers
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast", "CastLike", "Shape",
                        "Size", "Constant", "ConstantOfShape", "Expand", "Slice", "Split", "Concat", "Tile", "Pad", "Range",
                        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
INTEGER_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "QGemm",
                         "QAttention", "DynamicQuantizeMatMul", "QLinearAdd", "QLinearMul", "DynamicQuantizeLinear"})
INT4_OPS = frozenset({"MatMulNBits", "GatherBlockQuantized"})
ZERO_POINT_PRECISION = {2: "int8", 3: "int8", 4: "int16", 5: "int16", 21: "int4", 22: "int4"}  # onnx TensorProto types
WALK_DEPTH = 4  # producers followed back through tensors the quantizer added, looking for where the integers come from
FEEDING_DEPTH = 8  # ops followed back from a layer to the compared layers that feed it
EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass(frozen=True, slots=True)
class LayerMatch:
    """One layer of the float graph and the tensor of the package's graph that holds its value."""

    tensor: str  # the float graph's tensor (the layer's output)
    package_tensor: str
    op: str  # the float graph's op type
    node: str
    module: str  # the source module path (torch.onnx's name scopes), else what the node's name tells, else the name
    precision: str  # what the package computes the layer in, as its graph tells: int8, int4 … else fp32
    inputs: tuple[str, ...] = ()  # the matched layers' tensors that feed it (through layout ops and fused layers)


@dataclass(frozen=True, slots=True)
class Matching:
    layers: tuple[LayerMatch, ...]  # in the float graph's order
    reference_layers: int  # nodes of the float graph that compute (not layout ops)
    covered: int  # of those, the ones a matched layer holds (its own, or fused into it: a Conv's ReLU)
    by_name: int
    by_node: int


def match_layers(reference: Path, package: Path, lineage: tuple[Path, ...] = ()) -> Matching:
    """Every computing node's outputs of the float graph at `reference`, paired with the package graph's tensors. A
    layer is named by the float node the package computes it in (a Conv whose ReLU the quantizer fused: the Conv, with
    the ReLU's output) and its module found in the first of the `lineage` graphs (export first) that records one."""
    float_graph, quantized = load_graph(reference).graph, load_graph(package).graph
    producers = {out: node for node in quantized.node for out in node.output if out}
    consumers: dict[str, list] = {}
    for node in quantized.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    by_node_name = {node.name: node for node in quantized.node if node.name}
    float_nodes = {node.name: node for node in float_graph.node if node.name and node.op_type not in LAYOUT_OPS}
    float_tensors = {out for node in float_graph.node for out in node.output}
    zero_points = {init.name: init.data_type for init in quantized.initializer}
    modules = source_modules((*lineage, reference))
    layers, computed_by, by_name, by_node, counted = [], [], 0, 0, 0
    for node in float_graph.node:
        if node.op_type in LAYOUT_OPS:
            continue
        counted += 1
        twin = by_node_name.get(node.name) if node.name else None
        for index, tensor in enumerate(node.output):
            if not tensor:
                continue
            if tensor in producers:
                computing, candidate = _by_name(tensor, producers, consumers)
                by_name += 1
            elif twin is not None and twin.op_type == node.op_type and index < len(twin.output) \
                    and twin.output[index] not in float_tensors:  # renamed, not fused into another layer's output
                computing, candidate = twin, _after_qdq(twin.output[index], consumers)
                by_node += 1
            else:
                continue
            layer = float_nodes.get(computing.name, node)
            module = modules.get(layer.name) or modules.get(tensor) or module_of([layer.name]) or layer.name or tensor
            precision = _precision(computing, producers, float_tensors, zero_points)
            layers.append(LayerMatch(tensor, candidate, layer.op_type, layer.name, module, precision))
            computed_by.append((layer, node))
    float_producers = {out: node for node in float_graph.node for out in node.output if out}
    compared = {layer.tensor for layer in layers}
    layers = [replace(match, inputs=_feeding(layer, float_producers, compared)) for match, (layer, _) in zip(layers, computed_by)]
    covered = {node.name or node.output[0] for pair in computed_by for node in pair}
    return Matching(tuple(layers), counted, len(covered), by_name, by_node)


def _feeding(node, producers: dict, compared: set[str]) -> tuple[str, ...]:
    """The compared tensors `node` reads, directly or through layout ops and layers fused away."""
    found, frontier, seen = [], list(node.input), set()
    for _ in range(FEEDING_DEPTH):
        following = []
        for name in frontier:
            if not name or name in seen:
                continue
            seen.add(name)
            if name in compared:
                found.append(name)
            elif name in producers:
                following += list(producers[name].input)
        frontier = following
    return tuple(found)


def source_modules(graphs: tuple[Path, ...]) -> dict[str, str]:
    """Node name (and output name) → the source module path torch.onnx recorded, from the first graph recording it
    (its name scopes ['', 'stage2', 'stage2.conv1', 'convolution'] → stage2.conv1; graph optimizers drop them)."""
    import onnx

    found: dict[str, str] = {}
    for path in graphs:
        for node in onnx.load(str(path), load_external_data=False).graph.node:
            scopes = next((prop.value for prop in node.metadata_props if prop.key == "pkg.torch.onnx.name_scopes"), None)
            module = _innermost(scopes) if scopes else None
            if module:
                for key in (node.name, *node.output):
                    if key:
                        found.setdefault(key, module)
    return found


MAX_SCOPES_TEXT = 4096  # a module path list of a real export is a few hundred characters


def _innermost(scopes: str) -> str | None:
    """The innermost module of a name-scopes list (its last entry is the op itself); None at the root, and for
    anything else a hostile file may put there (a literal is parsed, never run; a huge or deeply nested one is
    not parsed at all)."""
    if len(scopes) > MAX_SCOPES_TEXT:
        return None
    try:
        parsed = ast.literal_eval(scopes)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return str(parsed[-2]) if isinstance(parsed, list) and len(parsed) >= 2 and parsed[-2] else None


def _by_name(tensor: str, producers: dict, consumers: dict):
    """The package's node computing the layer named `tensor`, and the tensor the next layer reads of it."""
    node = producers[tensor]
    if node.op_type == "DequantizeLinear":  # a renamed graph output: op → …_QuantizeLinear_Input → Q → DQ → `tensor`
        quantize = producers.get(node.input[0])
        computing = producers.get(quantize.input[0]) if quantize is not None and quantize.op_type == "QuantizeLinear" else None
        return (computing or node), tensor
    return node, _after_qdq(tensor, consumers)


def _after_qdq(tensor: str, consumers: dict) -> str:
    """The DequantizeLinear output after `tensor`'s QuantizeLinear (what the next layer reads), else `tensor`."""
    for quantize in consumers.get(tensor, []):
        if quantize.op_type == "QuantizeLinear":
            for dequantize in consumers.get(quantize.output[0], []):
                if dequantize.op_type == "DequantizeLinear":
                    return dequantize.output[0]
    return tensor


def _precision(node, producers: dict, float_tensors: set[str], zero_points: dict[str, int]) -> str:
    """int8/int4/int16 when the node is an integer kernel or reads, through tensors the quantizer added, from a
    DequantizeLinear or an integer kernel; else fp32 (a float16 value is told apart when it runs)."""
    if node.op_type in INT4_OPS:
        return "int4"
    frontier, seen = [node], set()
    for _ in range(WALK_DEPTH):
        following = []
        for current in frontier:
            if current.op_type in INTEGER_OPS:
                return "int8"
            if current.op_type == "DequantizeLinear":
                zero_point = current.input[2] if len(current.input) > 2 else ""
                return ZERO_POINT_PRECISION.get(zero_points.get(zero_point, 2), "int8")
            for name in current.input:
                producer = producers.get(name)
                if name and name not in float_tensors and producer is not None and producer.output[0] not in seen:
                    seen.add(producer.output[0])
                    following.append(producer)
        frontier = following
    return "fp32"


class ExposedRun:
    """An ONNX Runtime session over a copy of a graph with `tensors` added as outputs, on the CPU execution provider
    (whatever providers the target options name: diff measures on this CPU)."""

    def __init__(self, path: Path, tensors: list[str], work_dir: Path, options: dict[str, Any] | None = None) -> None:
        import onnx
        import onnxruntime as ort

        model = load_graph(path, with_weights=True)
        present = {value.name for value in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in dict.fromkeys(tensors) if name not in present)
        self.outputs = [value.name for value in model.graph.output]
        settings = _settings()
        if model.ByteSize() > EXTERNAL_DATA_BYTES:
            copy = Path(tempfile.mkdtemp(dir=work_dir)) / "exposed.onnx"
            onnx.save(model, str(copy), save_as_external_data=True, location="exposed.onnx.data")
            self.session = ort.InferenceSession(str(copy), settings, providers=["CPUExecutionProvider"])
        else:
            self.session = ort.InferenceSession(model.SerializeToString(), settings, providers=["CPUExecutionProvider"])
        self.inputs = {value.name for value in self.session.get_inputs()}

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {name: value for name, value in feed.items() if name in self.inputs})
        return dict(zip(self.outputs, values))


def plain_outputs(path: Path, feeds: list[dict[str, np.ndarray]], options: dict[str, Any] | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
    """The package graph's own outputs, run as it ships (every fusion ORT makes) on the CPU, per feed."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), _settings(), providers=["CPUExecutionProvider"])
    names, inputs = [value.name for value in session.get_outputs()], {value.name for value in session.get_inputs()}
    for feed in feeds:
        yield dict(zip(names, session.run(names, {name: value for name, value in feed.items() if name in inputs})))


def _settings():
    """Quiet sessions whose idle threads sleep: diff runs two or three in turn, and a session's threads spinning after
    its run would take the cores from the next one's."""
    import onnxruntime as ort

    settings = ort.SessionOptions()
    settings.log_severity_level = 3
    settings.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return settings
