"""quantize-int4 and quantize-int4-gptq: ONNX Runtime's block-wise int4 weight-only quantization (MatMulNBits)."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UserError
from edgekit.ingest.onnx import load_graph, onnx_files
from edgekit.intent import QuantizeIntent, granularity_fields
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs

# what ORT writes in place of a quantized weight's consumer
QUANTIZED_OPS = ("MatMulNBits", "GatherBlockQuantized")


@dataclass(frozen=True, slots=True)
class QuantizeInt4Config:
    # default: ORT's block-wise affine round-to-nearest (MatMul and Gather); rtn: the bundled
    # neural-compressor RTN (MatMul); hqq: half-quadratic optimized scales and zeros (MatMul, needs torch)
    algorithm: Literal["default", "rtn", "hqq"] = "default"
    block_size: int = field(default=128, metadata={"range": (16, 2048)})  # weights per scale, a power of 2
    symmetric: bool = False  # default and rtn only; hqq is always asymmetric
    # MatMulNBits compute type: 0 unset (as the weights' float type), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations
    accuracy_level: Literal[0, 1, 2, 3, 4] = 0
    op_types: tuple[Literal["MatMul", "Gather"], ...] = ("MatMul",)
    exclude_nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QuantizeInt4GptqConfig:
    block_size: int = field(default=128, metadata={"range": (16, 2048)})  # weights per scale, a power of 2
    symmetric: bool = False
    accuracy_level: Literal[0, 1, 2, 3, 4] = 0
    percdamp: float = field(default=0.01, metadata={"range": (0.0, 1.0)})  # Hessian dampening
    act_order: bool = False  # quantize columns by decreasing Hessian diagonal
    calibration_samples: int = field(default=128, metadata={"range": (1, 100_000)})
    exclude_nodes: tuple[str, ...] = ()


def _nbits():
    try:
        with muted_logs("root"):  # the module calls logging.basicConfig(level=INFO) on import
            from onnxruntime.quantization import matmul_nbits_quantizer
    except ImportError:
        raise MissingBackend("onnxruntime", "onnx", "int4 weight-only quantization") from None
    return matmul_nbits_quantizer


def _check(model: Model, block_size: int, exclude_nodes: tuple[str, ...]) -> None:
    if block_size & (block_size - 1):
        raise UserError(f"quantize-int4: block_size {block_size} is not a power of 2 (use 32, 64, 128 …)")
    names = {node.name for node in load_graph(model.path).graph.node}
    unknown = [name for name in exclude_nodes if name not in names]
    if unknown:
        raise UserError(f"exclude_nodes: no node named {', '.join(unknown)} in the model")


def _run(model: Model, quantizer, out: Path, pass_name: str) -> Model:
    import onnx

    with muted_logs("root", "onnxruntime.quantization.matmul_nbits_quantizer"), redirect_stdout(io.StringIO()):
        quantizer.process()  # rtn and gptq print a progress bar on stdout
    result = quantizer.model
    proto = result.model
    if not any(entry.domain == "com.microsoft" for entry in proto.opset_import):  # rtn and gptq leave it out
        proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    result.save_model_to_file(str(out), use_external_data_format=len(model.files) > 1)
    quantized = sum(1 for node in load_graph(out).graph.node if node.op_type in QUANTIZED_OPS)
    if quantized == 0:
        raise UserError(
            f"{pass_name}: no MatMul/Gather with constant weights to quantize in {model.path.name} "
            f"(weight-only int4 suits transformer-like graphs; a Gemm/Conv model wants int8 instead)"
        )
    files = onnx_files(out)
    return model.derive(files=files, meta={"content_hash": files_sha256(files), "precision": "int4",
                                           "int4_nodes": quantized})


class QuantizeInt4(Pass):
    name = "quantize-int4"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX
    Config = QuantizeInt4Config

    def run(self, model: Model, config: QuantizeInt4Config, ctx: Context) -> Model:
        _check(model, config.block_size, config.exclude_nodes)
        nbits = _nbits()
        ops = tuple(config.op_types)
        if config.algorithm == "hqq":
            if "Gather" in ops:
                raise UserError("quantize-int4: hqq quantizes MatMul only; set op_types: [MatMul] or algorithm: default")
            algo = nbits.HQQWeightOnlyQuantConfig(block_size=config.block_size, bits=4, op_types_to_quantize=ops)
        elif config.algorithm == "rtn":
            if "Gather" in ops:
                raise UserError("quantize-int4: rtn quantizes MatMul only; set op_types: [MatMul] or algorithm: default")
            algo = nbits.RTNWeightOnlyQuantConfig(op_types_to_quantize=ops)
        else:
            algo = nbits.DefaultWeightOnlyQuantConfig(block_size=config.block_size, is_symmetric=config.symmetric,
                                                      accuracy_level=config.accuracy_level or None, bits=4,
                                                      op_types_to_quantize=ops)
        quantizer = nbits.MatMulNBitsQuantizer(
            str(model.path), block_size=config.block_size, is_symmetric=config.symmetric,
            accuracy_level=config.accuracy_level or None, nodes_to_exclude=list(config.exclude_nodes),
            op_types_to_quantize=ops, algo_config=algo,
        )
        return _run(model, quantizer, ctx.step_dir("quantize-int4") / "model.onnx", self.name)

    def from_intent(self, intent: QuantizeIntent, config: QuantizeInt4Config) -> dict[str, Any]:
        return granularity_fields(intent, self.name, {"per-group": {"block_size": intent.group_size or config.block_size}})


class QuantizeInt4Gptq(Pass):
    name = "quantize-int4-gptq"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX
    Config = QuantizeInt4GptqConfig
    uses_calibration = True

    def run(self, model: Model, config: QuantizeInt4GptqConfig, ctx: Context) -> Model:
        if ctx.calibration is None:
            raise UserError("quantize-int4-gptq needs calibration data: give --calib DATA")
        _check(model, config.block_size, config.exclude_nodes)
        nbits = _nbits()
        feeds = list(ctx.calibration.head(config.calibration_samples).feeds())
        algo = nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=_Reader(feeds), percdamp=config.percdamp,
                                               actorder=config.act_order)
        quantizer = nbits.MatMulNBitsQuantizer(
            str(model.path), block_size=config.block_size, is_symmetric=config.symmetric,
            accuracy_level=config.accuracy_level or None, nodes_to_exclude=list(config.exclude_nodes),
            algo_config=algo,
        )
        return _run(model, quantizer, ctx.step_dir("quantize-int4-gptq") / "model.onnx", self.name)


class _Reader:
    """An iterable of feeds; GPTQ deep-copies and iterates it (ORT's CalibrationDataReader protocol)."""

    def __init__(self, feeds: list) -> None:
        self.feeds = feeds

    def __iter__(self):
        return iter(self.feeds)
