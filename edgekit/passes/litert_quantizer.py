"""quantize-tflite for a .tflite source: LiteRT's own quantizer (ai-edge-quantizer) on the float model.

The source is first made plain for the quantizer: fp16 weights stored as fp16 constants behind
DEQUANTIZE ops (how MediaPipe and the TFLite converter's fp16 mode ship them) are folded to fp32
constants, operator codes of old schema files get their `builtin_code` set, and a model without
a signature gets one (`serving_default`, the subgraph's own inputs and outputs), which the
quantizer's calibration needs. The model's inputs and outputs stay float32: the quantizer puts a
QUANTIZE after each input and a DEQUANTIZE before each output, so the Session specs do not change.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import MissingBackend, PassFailed, UnsupportedOnTarget, UserError
from edgekit.model import Model
from edgekit.passes.base import Context, muted_logs

if TYPE_CHECKING:
    from edgekit.passes.tflite import QuantizeTfliteConfig

SIGNATURE = "serving_default"
QUANTIZER = "ai-edge-quantizer"  # its successor is to be published as litert-quantizer
FLOAT_OPS_IGNORED = frozenset({"QUANTIZE", "DEQUANTIZE"})


def _modules():
    try:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils
        from ai_edge_quantizer import qtyping, quantizer, recipe
    except ImportError:
        raise MissingBackend(QUANTIZER, "tflite", "quantizing a .tflite model") from None
    return schema, flatbuffer_utils, quantizer, recipe, qtyping


def has_fp16_weights(path: Path) -> bool:
    """Whether the .tflite stores float weights as fp16 constants (dequantized when the model loads)."""
    schema, flatbuffer_utils, *_ = _modules()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    return bool(_fp16_dequantize_ops(model, schema, flatbuffer_utils))


def _fp16_dequantize_ops(model, schema, flatbuffer_utils) -> list[tuple[Any, Any]]:
    """(subgraph, op) of every DEQUANTIZE whose input is an fp16 constant."""
    codes = [flatbuffer_utils.get_builtin_code_from_operator_code(code) for code in model.operatorCodes or []]
    found = []
    for subgraph in model.subgraphs or []:
        for op in subgraph.operators or []:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.DEQUANTIZE:
                continue
            source = subgraph.tensors[op.inputs[0]]
            data = model.buffers[source.buffer].data
            if source.type == schema.TensorType.FLOAT16 and data is not None and len(data):
                found.append((subgraph, op))
    return found


def plain_float_model(data: bytes, for_tflite2onnx: bool = False) -> tuple[bytes, int]:
    """The model as the quantizer reads it (see the module doc) and how many fp16 weights were folded.

    MediaPipe's custom transposed conv becomes the builtin TRANSPOSE_CONV; `for_tflite2onnx` also spells
    it and HARD_SWISH in the ops tflite2onnx converts (tflite_rewrite).
    """
    from edgekit.passes import tflite_rewrite

    schema, flatbuffer_utils, *_ = _modules()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    for code in model.operatorCodes or []:
        code.builtinCode = flatbuffer_utils.get_builtin_code_from_operator_code(code)
    tflite_rewrite.builtin_transpose_conv(model, schema, separate_bias=for_tflite2onnx)
    if for_tflite2onnx:
        tflite_rewrite.expand_hard_swish(model, schema, flatbuffer_utils)
    folded = _fp16_dequantize_ops(model, schema, flatbuffer_utils)
    for subgraph, op in folded:
        source = subgraph.tensors[op.inputs[0]]
        values = np.frombuffer(bytes(model.buffers[source.buffer].data), dtype=np.float16).astype("<f4")
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
        model.buffers.append(buffer)
        subgraph.tensors[op.outputs[0]].buffer = len(model.buffers) - 1
        subgraph.operators.remove(op)
    for subgraph in model.subgraphs:
        _drop_unused_tensors(subgraph, model)
    if not model.signatureDefs:
        model.signatureDefs = [_signature(model.subgraphs[0], schema)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), len(folded)


def _drop_unused_tensors(subgraph, model) -> None:
    """Remove tensors no op, input or output refers to (the fp16 constants once folded), and their data."""
    used = {i for op in subgraph.operators for i in [*op.inputs, *op.outputs, *(op.intermediates or [])] if i >= 0}
    used |= set(subgraph.inputs) | set(subgraph.outputs)
    keep = [i for i in range(len(subgraph.tensors)) if i in used]
    if len(keep) == len(subgraph.tensors):
        return
    new_index = {old: new for new, old in enumerate(keep)}
    for old in set(range(len(subgraph.tensors))) - used:
        buffer = subgraph.tensors[old].buffer
        if buffer and not any(subgraph.tensors[i].buffer == buffer for i in keep):
            model.buffers[buffer].data = None
    subgraph.tensors = [subgraph.tensors[i] for i in keep]
    for op in subgraph.operators:
        op.inputs = [new_index[i] if i >= 0 else i for i in op.inputs]
        op.outputs = [new_index[i] for i in op.outputs]
        if op.intermediates:
            op.intermediates = [new_index[i] for i in op.intermediates]
    subgraph.inputs = [new_index[i] for i in subgraph.inputs]
    subgraph.outputs = [new_index[i] for i in subgraph.outputs]
    for signature in model.signatureDefs or []:
        for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
            entry.tensorIndex = new_index.get(entry.tensorIndex, entry.tensorIndex)


def _signature(subgraph, schema):
    def entries(indices):
        mapped = []
        for index in indices:
            entry = schema.TensorMapT()
            entry.name = subgraph.tensors[index].name
            entry.tensorIndex = index
            mapped.append(entry)
        return mapped

    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE
    signature.subgraphIndex = 0
    signature.inputs = entries(subgraph.inputs)
    signature.outputs = entries(subgraph.outputs)
    return signature


def _recipe(config: QuantizeTfliteConfig, qtyping, quantizer_obj) -> None:
    scheme, per_channel = config.scheme, config.per_channel
    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    every = qtyping.TFLOperationName.ALL_SUPPORTED
    if config.mode == "int4":
        if scheme == "static":
            raise UnsupportedOnTarget("quantize-tflite: int4 is dynamic or weight-only (activations stay float)")
        if scheme == "dynamic":  # LiteRT's int4 kernels: FULLY_CONNECTED (and EMBEDDING_LOOKUP) weights
            if config.block_size:
                granularity = getattr(qtyping.QuantGranularity, f"BLOCKWISE_{config.block_size}")
            for op in (qtyping.TFLOperationName.FULLY_CONNECTED, qtyping.TFLOperationName.EMBEDDING_LOOKUP):
                quantizer_obj.add_dynamic_config(".*", op, num_bits=4, granularity=granularity)
        else:
            quantizer_obj.add_weight_only_config(".*", every, num_bits=4, granularity=granularity)
        return
    if scheme == "static":
        quantizer_obj.add_static_config(".*", every, activation_num_bits=8, weight_num_bits=8,
                                        weight_granularity=granularity)
        for end in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):  # keep float I/O
            quantizer_obj.update_quantization_recipe(".*", end, algorithm_key="no_quantize")
    elif scheme == "dynamic":
        quantizer_obj.add_dynamic_config(".*", every, num_bits=8, granularity=granularity)
    else:
        quantizer_obj.add_weight_only_config(".*", every, num_bits=8, granularity=granularity)


def _signature_feeds(plain: bytes, model: Model, ctx: Context, samples: int) -> list[dict[str, np.ndarray]]:
    """Calibration feeds keyed by the signature's input names (matched to the model's inputs by tensor)."""
    from edgekit.runtime.tflite import interpreter_class

    if ctx.calibration is None:
        raise UserError("quantize-tflite (static int8) needs calibration data: give --calib DATA")
    interpreter = interpreter_class()(model_content=plain)
    runner = interpreter.get_signature_runner(SIGNATURE)
    by_tensor = {detail["index"]: key for key, detail in runner.get_input_details().items()}
    keys = [by_tensor.get(detail["index"]) for detail in interpreter.get_input_details()]
    if None in keys or len(keys) != len(model.inputs):
        raise UnsupportedOnTarget("quantize-tflite: the .tflite's signature does not list the model's inputs; "
                                  "give a model whose serving_default signature takes every input")
    return [{key: np.require(feed[spec.name], requirements="C") for key, spec in zip(keys, model.inputs)}
            for feed in ctx.calibration.head(samples).feeds()]


def _failed(error: BaseException) -> PassFailed:
    from importlib.metadata import version

    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return PassFailed("quantize-tflite", RuntimeError(f"LiteRT's quantizer ({QUANTIZER} {version(QUANTIZER)}) "
                                                      f"refused the model: {first}"))


@contextlib.contextmanager
def _quiet():
    """The quantizer prints progress bars and a size report; keep them off edgekit's output."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            muted_logs("root", "absl"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # calibration keeps every tensor, which LiteRT warns is for debugging
        yield


def float_ops(path: Path) -> dict[str, int]:
    """Ops of the quantized model that still compute in float (besides the QUANTIZE/DEQUANTIZE at its ends)."""
    from edgekit.runtime.tflite import interpreter_class

    interpreter = interpreter_class()(model_path=str(path))
    found: Counter[str] = Counter()
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only per-op dtype view LiteRT's Python API has
        if op["op_name"] not in FLOAT_OPS_IGNORED and any(np.dtype(t) == np.float32 for t in op["result_types"]):
            found[op["op_name"]] += 1
    return dict(sorted(found.items()))


def quantize_tflite_source(model: Model, config: QuantizeTfliteConfig, ctx: Context, out: Path) -> dict[str, Any]:
    """Write `model` (a float .tflite) quantized as `config` says at `out`; returns meta for the result."""
    scheme = config.scheme
    _, _, quantizer, recipe, qtyping = _modules()
    try:
        plain, folded = plain_float_model(model.path.read_bytes())
    except Exception as error:  # a flatbuffer the schema cannot read
        raise _failed(error) from error
    try:
        with _quiet():
            quantizer_obj = quantizer.Quantizer(plain)
            _recipe(config, qtyping, quantizer_obj)
        calibration = None
        if quantizer_obj.need_calibration:
            feeds = _signature_feeds(plain, model, ctx, config.calibration_samples)
            ctx.progress.start("calibrating", len(feeds))
            with _quiet():
                calibration = quantizer_obj.calibrate({SIGNATURE: feeds}, num_threads=os.cpu_count() or 1)
            ctx.progress.finish()
        with _quiet():
            result = quantizer_obj.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
    except (UserError, UnsupportedOnTarget):
        raise
    except Exception as error:
        raise _failed(error) from error
    out.write_bytes(bytes(result.quantized_model))
    left_float = float_ops(out) if scheme == "static" else {}
    if left_float:
        ctx.logger.warning("quantize-tflite: ops left in float: %s",
                                             ", ".join(f"{name}×{count}" for name, count in left_float.items()))
    return {"precision": config.mode, "quantizer": QUANTIZER, "scheme": scheme, "fp16_weights_folded": folded,
            "float_ops": left_float}
