"""What runtimes' op names and type strings tell: the source module an op came from, the precision it ran in."""

from __future__ import annotations

import re
from collections.abc import Iterable

# element types as ORT (ONNX), OpenVINO exec types and XNNPACK operator names spell them → one name each
PRECISIONS = {
    "float": "fp32", "float32": "fp32", "f32": "fp32", "double": "fp64", "f64": "fp64",
    "float16": "fp16", "f16": "fp16", "bfloat16": "bf16", "bf16": "bf16",
    "int8": "int8", "uint8": "int8", "i8": "int8", "u8": "int8", "int4": "int4", "uint4": "int4", "i4": "int4",
    "u4": "int4", "int16": "int16", "uint16": "int16", "i16": "int16", "int32": "int32", "i32": "int32",
    "int64": "int64", "i64": "int64", "bool": "bool",
    "qc8": "int8", "qs8": "int8", "qu8": "int8", "qd8": "int8", "qc8w": "int8", "qp8": "int8",
    "qc4w": "int4", "qb4w": "int4", "x8": "8-bit", "x16": "16-bit", "x32": "32-bit",
}
FLOATS = frozenset({"fp32", "fp16", "bf16", "fp64"})
LOW_PRECISIONS = frozenset({"int8", "int4", "8-bit"})

# suffixes runtimes and quantizers add to a node's name: ORT QDQ (_QuantizeLinear), ORT layout and fusion
# (_nchwc, _token_3), torch.onnx outputs (_output_0), OpenVINO's FakeQuantize outputs (/fq_output_0)
_ADDED = re.compile(r"((_|/)(QuantizeLinear|DequantizeLinear|quantized|nchwc|token_\d+|output_\d+|fq_output_\d+))+$")
_OPENVINO_SCOPE = re.compile(r"__module\.([\w.]+)")  # OpenVINO from PyTorch: __module.layer1.0.conv1/aten::_convolution/…
_PARAMETER = re.compile(r"([\w.]+)\.(weight|bias)")  # a quantizer names a weight's Q/DQ after it: conv1.weight_…


def precision_of(type_name: str | None) -> str | None:
    """fp32, int8 … for an element type as a runtime spells it; None for what says nothing (undef, any)."""
    return PRECISIONS.get((type_name or "").lower())


def conversion(source: str | None, result: str | None) -> str | None:
    """The precision of an op from its input's and output's: one name, or `fp32→int8` where it converts."""
    if source and result and source != result:
        return f"{source}→{result}"
    return source or result


def module_of(names: Iterable[str]) -> str | None:
    """The source module named by the first of `names` that carries one: torch.onnx scopes (/layer1/layer1.0/conv1/Conv
    → layer1.0.conv1), OpenVINO's __module.head/… → head, a quantized weight's conv1.weight_DequantizeLinear → conv1."""
    for name in names:
        found = _OPENVINO_SCOPE.search(name)
        if found:
            return found.group(1)
        bare = _ADDED.sub("", name)
        if bare.startswith("/"):
            scope = _joined([part for part in bare.split("/")[:-1] if part])
            if scope:
                return scope
        parameter = _PARAMETER.fullmatch(bare)
        if parameter:
            return parameter.group(1)
    return None


def _joined(scopes: list[str]) -> str:
    """torch.onnx scope parts as one dotted path; a part that repeats its parent's path (layer1, layer1.0) replaces it."""
    path = ""
    for part in scopes:
        path = part if path and part.startswith(path + ".") else f"{path}.{part}" if path else part
    return path
