"""Rewrites of a .tflite model (flatbuffer object API) into builtin ops other tools read.

- MediaPipe's custom `Convolution2DTransposeBias` (a transposed conv with bias, its options a raw
  TfLiteTransposeConvParams: padding, stride_w, stride_h) becomes the builtin TRANSPOSE_CONV (v3,
  which takes the bias; for tflite2onnx, v1 and an ADD) — OpenVINO's TFLite frontend and tflite2onnx know
  no custom ops.
- HARD_SWISH becomes x * relu6(x + 3) * (1/6) (ADD, RELU6, MUL, MUL), for tflite2onnx, which has
  no HARD_SWISH converter.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

TRANSPOSE_CONV_BIAS = "Convolution2DTransposeBias"
TFLITE_PADDING = {1: "SAME", 2: "VALID"}  # TfLitePadding (kTfLitePaddingUnknown = 0)


def custom_code(model, op) -> str | None:
    code = model.operatorCodes[op.opcodeIndex].customCode
    return code.decode("utf-8", "replace") if code else None


def _opcode(model, schema, builtin: int, version: int) -> int:
    """The index of `builtin`'s operator code in the model (added, or raised to `version`)."""
    for index, code in enumerate(model.operatorCodes):
        if code.builtinCode == builtin and not code.customCode:
            code.version = max(code.version, version)
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _constant(model, subgraph, schema, name: str, array: np.ndarray) -> int:
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(array.tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.name = name.encode()
    tensor.shape = np.array(array.shape, np.int32)
    tensor.type = {np.dtype(np.float32): schema.TensorType.FLOAT32, np.dtype(np.int32): schema.TensorType.INT32}[array.dtype]
    tensor.buffer = len(model.buffers) - 1
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _activation(subgraph, schema, name: str, like: int) -> int:
    """A new run-time tensor shaped and typed like tensor `like`."""
    source = subgraph.tensors[like]
    tensor = schema.TensorT()
    tensor.name = name.encode()
    tensor.shape = np.array(source.shape, np.int32)
    tensor.type = source.type
    tensor.buffer = 0  # buffer 0 is the empty one run-time tensors point to
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _operator(schema, opcode: int, inputs: list[int], outputs: list[int], options_type: int = 0, options: Any = None):
    op = schema.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = inputs
    op.outputs = outputs
    op.builtinOptionsType = options_type
    op.builtinOptions = options
    return op


def builtin_transpose_conv(model, schema, separate_bias: bool = False) -> int:
    """Replace every Convolution2DTransposeBias with TRANSPOSE_CONV (and, with `separate_bias`, an ADD of the bias:
    tflite2onnx reads only the three-input form); returns how many were replaced."""
    replaced = 0
    for subgraph in model.subgraphs:
        for position, op in reversed(list(enumerate(subgraph.operators))):  # from the end: splices keep positions
            if custom_code(model, op) != TRANSPOSE_CONV_BIAS:
                continue
            padding, stride_w, stride_h = struct.unpack_from("<3i", bytes(op.customOptions))
            if padding not in TFLITE_PADDING:
                raise ValueError(f"{TRANSPOSE_CONV_BIAS} with padding code {padding}")
            output = subgraph.tensors[op.outputs[0]]
            shape = _constant(model, subgraph, schema, f"{output.name.decode()}/output_shape", np.array(output.shape, np.int32))
            options = schema.TransposeConvOptionsT()
            options.padding = getattr(schema.Padding, TFLITE_PADDING[padding])
            options.strideW, options.strideH = stride_w, stride_h
            source, weights, bias = op.inputs
            convolved = _activation(subgraph, schema, f"{output.name.decode()}/unbiased", op.outputs[0]) if separate_bias \
                else op.outputs[0]
            replacement = [_operator(
                schema, _opcode(model, schema, schema.BuiltinOperator.TRANSPOSE_CONV, 1 if separate_bias else 3),
                [shape, weights, source] + ([] if separate_bias else [bias]), [convolved],
                schema.BuiltinOptions.TransposeConvOptions, options)]
            if separate_bias:
                replacement.append(_operator(schema, _opcode(model, schema, schema.BuiltinOperator.ADD, 1), [convolved, bias],
                                             list(op.outputs), schema.BuiltinOptions.AddOptions, schema.AddOptionsT()))
            replaced += 1
            subgraph.operators[position:position + 1] = replacement
    return replaced


def expand_hard_swish(model, schema, flatbuffer_utils) -> int:
    """Replace every HARD_SWISH with ADD, RELU6, MUL, MUL; returns how many were replaced."""
    replaced = 0
    for subgraph in model.subgraphs:
        operators = []
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if flatbuffer_utils.get_builtin_code_from_operator_code(code) != schema.BuiltinOperator.HARD_SWISH:
                operators.append(op)
                continue
            x, out = op.inputs[0], op.outputs[0]
            stem = subgraph.tensors[out].name.decode()
            three = _constant(model, subgraph, schema, f"{stem}/three", np.array([3.0], np.float32))
            sixth = _constant(model, subgraph, schema, f"{stem}/sixth", np.array([1 / 6], np.float32))
            shifted, clipped, scaled = (_activation(subgraph, schema, f"{stem}/{part}", x) for part in ("shifted", "relu6", "gate"))
            operators += [
                _operator(schema, _opcode(model, schema, schema.BuiltinOperator.ADD, 1), [x, three], [shifted],
                          schema.BuiltinOptions.AddOptions, schema.AddOptionsT()),
                _operator(schema, _opcode(model, schema, schema.BuiltinOperator.RELU6, 1), [shifted], [clipped]),
                _operator(schema, _opcode(model, schema, schema.BuiltinOperator.MUL, 1), [clipped, sixth], [scaled],
                          schema.BuiltinOptions.MulOptions, schema.MulOptionsT()),
                _operator(schema, _opcode(model, schema, schema.BuiltinOperator.MUL, 1), [x, scaled], [out],
                          schema.BuiltinOptions.MulOptions, schema.MulOptionsT()),
            ]
            replaced += 1
        subgraph.operators = operators
    return replaced
