"""quantize-dynamic and quantize-static: ONNX Runtime's int8 quantization of an ONNX model."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UserError
from edgekit.ingest.onnx import load_graph, onnx_files
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs

# Convolutions are left out of dynamic quantization by default: ORT turns them into
# ConvInteger, which ran 6x slower than fp32 on an AVX2 CPU.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "Attention", "LSTM", "GRU", "EmbedLayerNormalization")


@dataclass(frozen=True, slots=True)
class QuantizeDynamicConfig:
    op_types: tuple[str, ...] = DYNAMIC_OP_TYPES
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    # 7-bit weights: u8 activations × s8 weights saturate on AVX2 CPUs without VNNI. On the
    # tiny MLP, full range kept cosine 0.942 / top-1 agreement 0.875; reduce_range 0.9999 / 1.0.
    reduce_range: bool = True
    exclude_nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QuantizeStaticConfig:
    quant_format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    # int8 activations (S8S8): on AVX2 CPUs without VNNI, u8 activations × s8 weights saturate
    # (the digits CNN fell from 99.7% to 80.6% top-1 with uint8; int8 kept 99.7%)
    activation_type: Literal["int8", "uint8"] = "int8"
    weight_type: Literal["int8", "uint8"] = "int8"
    reduce_range: bool = False
    symmetric_activations: bool = False  # zero point 0 for activations, as TensorRT requires
    quantize_bias: bool = True  # int32 biases; TensorRT takes only int8 Q/DQ, so false there
    calibrate_method: Literal["minmax", "percentile", "entropy"] = "minmax"
    percentile: float = field(default=99.999, metadata={"range": (90.0, 100.0)})
    calibration_samples: int = field(default=128, metadata={"range": (1, 100_000)})
    op_types: tuple[str, ...] = ()  # empty: every op type ORT can quantize
    exclude_op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    # accuracy-aware fallback, off while max_drop is None: measured against the float model on the
    # evaluation data (else the calibration data), reverting the most sensitive nodes to float
    max_drop: float | None = field(default=None, metadata={"range": (0.0, 1e9)})
    metric: Literal["auto", "top1", "cosine", "mse", "max_abs"] = "auto"
    relative: bool = False
    max_reverted: int | None = field(default=None, metadata={"range": (1, 100_000)})  # None: half the quantized nodes
    eval_samples: int = field(default=64, metadata={"range": (1, 100_000)})


def _quantization():
    try:
        from onnxruntime import quantization
    except ImportError:
        raise MissingBackend("onnxruntime", "onnx", "ONNX Runtime quantization") from None
    return quantization


def _quant_type(name: str):
    q = _quantization()
    return q.QuantType.QInt8 if name == "int8" else q.QuantType.QUInt8


def _nodes_to_exclude(model: Model, exclude_nodes: tuple[str, ...], exclude_op_types: tuple[str, ...]) -> list[str]:
    graph = load_graph(model.path).graph
    names = {node.name for node in graph.node}
    unknown = [name for name in exclude_nodes if name not in names]
    if unknown:
        raise UserError(f"exclude_nodes: no node named {', '.join(unknown)} in the model")
    by_type = [node.name for node in graph.node if node.op_type in exclude_op_types]
    return sorted(set(exclude_nodes) | set(by_type))


def _result(model: Model, out) -> Model:
    files = onnx_files(out)
    return model.derive(files=files, meta={"content_hash": files_sha256(files), "precision": "int8"})


class QuantizeDynamic(Pass):
    name = "quantize-dynamic"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX
    Config = QuantizeDynamicConfig

    def run(self, model: Model, config: QuantizeDynamicConfig, ctx: Context) -> Model:
        q = _quantization()
        out = ctx.step_dir("quantize-dynamic") / "model.onnx"
        with muted_logs("root"):
            q.quantize_dynamic(
                str(model.path), str(out),
                op_types_to_quantize=list(config.op_types),
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                weight_type=_quant_type(config.weight_type),
                nodes_to_exclude=_nodes_to_exclude(model, config.exclude_nodes, ()),
                use_external_data_format=len(model.files) > 1,
            )
        return _result(model, out)


class QuantizeStatic(Pass):
    name = "quantize-static"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX
    Config = QuantizeStaticConfig
    uses_calibration = True
    uses_evaluation = True

    def run(self, model: Model, config: QuantizeStaticConfig, ctx: Context) -> Model:
        if ctx.calibration is None:
            raise UserError("quantize-static needs calibration data: give --calib DATA")
        excluded = _nodes_to_exclude(model, config.exclude_nodes, config.exclude_op_types)
        attempts = itertools.count()

        def quantize(revert, only) -> Path:
            out = ctx.step_dir(f"quantize-static-{next(attempts)}") / "model.onnx"
            _quantize_static(model, config, ctx, out, [*excluded, *revert], only)
            return out

        if config.max_drop is None:
            return _result(model, quantize((), None))
        from edgekit.passes.fallback import Scorer, within_tolerance
        from edgekit.recipe import Evaluation

        data = ctx.evaluation or ctx.calibration
        scorer = Scorer.of(model, list(data.feeds(config.eval_samples)),
                           None if data.labels is None else data.labels[: config.eval_samples],
                           Evaluation(config.metric, config.max_drop, config.relative))
        path, report = within_tolerance(model, quantize, scorer, config.max_reverted, ctx.logger)
        return _result(model, path).derive(meta={"fallback": {**report, "data": data.origin}})


def _quantize_static(model: Model, config: QuantizeStaticConfig, ctx: Context, out: Path,
                     exclude: list[str], only) -> None:
    """One call of ORT's quantize_static (calibrating on ctx.calibration) writing `out`."""
    q = _quantization()
    samples = ctx.calibration.head(config.calibration_samples)
    ctx.progress.start("calibrating", len(samples))
    method = {
        "minmax": q.CalibrationMethod.MinMax,
        "percentile": q.CalibrationMethod.Percentile,
        "entropy": q.CalibrationMethod.Entropy,
    }[config.calibrate_method]
    extra = {"CalibPercentile": config.percentile} if config.calibrate_method == "percentile" else {}
    extra.update(ActivationSymmetric=config.symmetric_activations, QuantizeBias=config.quantize_bias)
    with muted_logs("root"):
        q.quantize_static(
            str(model.path), str(out), _reader(samples, ctx),
            quant_format=q.QuantFormat.QDQ if config.quant_format == "qdq" else q.QuantFormat.QOperator,
            op_types_to_quantize=list(config.op_types) or None,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=_quant_type(config.activation_type),
            weight_type=_quant_type(config.weight_type),
            nodes_to_quantize=list(only) if only else None,
            nodes_to_exclude=exclude,
            use_external_data_format=len(model.files) > 1,
            calibrate_method=method,
            extra_options=extra,
        )
    ctx.progress.finish()


def _reader(samples, ctx: Context):
    """ORT's CalibrationDataReader over a Dataset, advancing the progress bar."""
    q = _quantization()

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = samples.feeds()

        def get_next(self):
            feed = next(self.feeds, None)
            if feed is not None:
                ctx.progress.advance()
            return feed

    return Reader()
