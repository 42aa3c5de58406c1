"""quantize-dynamic and quantize-static: ONNX Runtime's int8 quantization of an ONNX model."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UserError
from edgekit.ingest.onnx import load_graph, onnx_files
from edgekit.intent import Budget, QuantizeIntent, granularity_fields
from edgekit.isa import Isa, resolve_isa
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, Variant, muted_logs

PER_CHANNEL_OR_TENSOR = {"per-channel": {"per_channel": True}, "per-tensor": {"per_channel": False}}

# Convolutions are left out of dynamic quantization by default: ORT turns them into
# ConvInteger, which ran 6x slower than fp32 on an AVX2 CPU.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "Attention", "LSTM", "GRU", "EmbedLayerNormalization")


@dataclass(frozen=True, slots=True)
class QuantizeDynamicConfig:
    op_types: tuple[str, ...] = DYNAMIC_OP_TYPES
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    # 7-bit weights; None follows the target's ISA: on for x86 without VNNI, where u8 activations × s8
    # weights saturate (tiny MLP: full range cosine 0.942 / top-1 agreement 0.875; 7-bit 0.9999 / 1.0)
    reduce_range: bool | None = None
    exclude_nodes: tuple[str, ...] = ()
    budget: Budget | None = None  # mixed precision: MatMul layers in int8 dynamic or fp32 (passes/mixed.py)


@dataclass(frozen=True, slots=True)
class QuantizeStaticConfig:
    quant_format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    # auto follows the target's ISA (see isa_choice): u8 on x86 (without VNNI with 7-bit weights: full-range
    # u8 × s8 saturates there, digits CNN 99.7% → 80.6% top-1 on AVX2), s8 on ARM
    activation_type: Literal["auto", "int8", "uint8"] = "auto"
    weight_type: Literal["int8", "uint8"] = "int8"
    reduce_range: bool | None = None  # None: follows the ISA
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
    # mixed precision: each layer in int8 static or fp32 within the budget (passes/mixed.py)
    budget: Budget | None = None


def isa_choice(isa: Isa) -> dict:
    """The activation type and 7-bit weights ORT's int8 kernels want on `isa`, and why."""
    if isa.arch == "x86-64" and isa.int8_dot:
        return {"isa": isa.name, "activation_type": "uint8", "reduce_range": False,
                "why": "VNNI/AMX multiply u8 × s8 without saturation: ORT's fastest x86 int8 kernels"}
    if isa.arch == "x86-64":
        return {"isa": isa.name, "activation_type": "uint8", "reduce_range": True,
                "why": "no VNNI: u8 × s8 pairs saturate in VPMADDUBSW at full range, so 7-bit weights; ORT's s8 × s8 "
                       "path is slower (pruned digits CNN: 0.41 ms s8 vs 0.23 ms u8 with 7-bit weights, AVX2 EPYC)"}
    return {"isa": isa.name, "activation_type": "int8", "reduce_range": False,
            "why": "ARM64: ORT's int8 kernels take s8 × s8 (SDOT where present)"}


def _target_isa(ctx: Context) -> Isa:
    return ctx.target.instruction_set if ctx.target is not None else resolve_isa("host")


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


# ops that do arithmetic worth quantizing; a node of these types reading no DequantizeLinear output stayed in float
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Attention", "LSTM", "GRU", "Add", "Mul", "AveragePool",
                         "GlobalAveragePool", "MaxPool", "Concat", "Sigmoid", "Softmax", "LeakyRelu", "Resize"})


def float_ops(path: Path) -> dict[str, int]:
    """Compute ops of a quantized graph with a float operand (the quantizer left them in float), by type."""
    graph = load_graph(path).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    integer = {"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear"}
    dynamic = {out for node in graph.node if node.op_type in integer for out in node.output}
    found: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        operands = node.input[:2] if node.op_type in ("Conv", "ConvTranspose", "Gemm") else node.input  # a bias may stay float
        if any(name and name not in dequantized and name not in dynamic for name in operands):
            found[node.op_type] = found.get(node.op_type, 0) + 1
    return found


def _result_files(out: Path) -> dict[str, Any]:
    """The meta of a quantized ONNX file: its hash, precision and the ops left in float."""
    return {"content_hash": files_sha256(onnx_files(out)), "precision": "int8", "float_ops": float_ops(Path(out))}


def _result(model: Model, out, choice: dict) -> Model:
    return model.derive(files=onnx_files(out), meta={**_result_files(Path(out)), "isa_choice": choice})


def _mixed(model: Model, budget: Budget, base: str, ctx: Context, quantize, choice: dict) -> Model:
    """The mixed-precision search (passes/mixed.py) over ORT's rungs; the manifest's precision_plan records it."""
    from edgekit.passes.mixed import search
    from edgekit.passes.mixed_ort import OrtLayers

    chosen, record = search(model, OrtLayers(model, base, ctx, quantize), budget, ctx, base=f"int8-{base}")
    return chosen.derive(meta={**_result_files(chosen.path), "isa_choice": choice, "precision_plan": record})


class QuantizeDynamic(Pass):
    name = "quantize-dynamic"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX
    Config = QuantizeDynamicConfig
    uses_isa = True
    uses_evaluation = True  # a budget's mixed precision is measured on the evaluation data
    uses_target = ("format", "runtime", "options")  # … as the target runs the candidates
    min_opset = 13  # per-channel DequantizeLinear takes `axis` from opset 13

    def run(self, model: Model, config: QuantizeDynamicConfig, ctx: Context) -> Model:
        q = _quantization()
        choice = isa_choice(_target_isa(ctx))
        reduce_range = choice["reduce_range"] if config.reduce_range is None else config.reduce_range
        if config.budget is not None:
            from edgekit.passes.mixed_ort import DYNAMIC_CAPABLE

            config.budget.objective()
            excluded = _nodes_to_exclude(model, config.exclude_nodes, ())

            def quantize(promoted: list[str], out: Path) -> None:
                with muted_logs("root"):
                    q.quantize_dynamic(str(model.path), str(out), op_types_to_quantize=sorted(DYNAMIC_CAPABLE),
                                       per_channel=config.per_channel, reduce_range=reduce_range,
                                       weight_type=_quant_type(config.weight_type), nodes_to_exclude=[*excluded, *promoted],
                                       use_external_data_format=len(model.files) > 1)

            return _mixed(model, config.budget, "dynamic", ctx, quantize,
                          {**choice, "reduce_range": reduce_range, "activation_type": "uint8"})
        out = ctx.step_dir("quantize-dynamic") / "model.onnx"
        with muted_logs("root"):
            q.quantize_dynamic(
                str(model.path), str(out),
                op_types_to_quantize=list(config.op_types),
                per_channel=config.per_channel,
                reduce_range=reduce_range,
                weight_type=_quant_type(config.weight_type),
                nodes_to_exclude=_nodes_to_exclude(model, config.exclude_nodes, ()),
                use_external_data_format=len(model.files) > 1,
            )
        return _result(model, out, {**choice, "reduce_range": reduce_range, "activation_type": "uint8"})

    def from_intent(self, intent: QuantizeIntent, config: QuantizeDynamicConfig) -> dict[str, Any]:
        return granularity_fields(intent, self.name, PER_CHANNEL_OR_TENSOR)


class QuantizeStatic(Pass):
    name = "quantize-static"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX
    Config = QuantizeStaticConfig
    uses_calibration = True
    uses_evaluation = True
    uses_isa = True
    uses_target = ("format", "runtime", "options")  # the accuracy-aware fallback scores candidates as the target runs them
    min_opset = 13  # per-channel QDQ: DequantizeLinear `axis` exists from opset 13

    def run(self, model: Model, config: QuantizeStaticConfig, ctx: Context) -> Model:
        if ctx.calibration is None:
            raise UserError("quantize-static needs calibration data: give --calib DATA")
        isa = _target_isa(ctx)
        choice = isa_choice(isa)
        activation = choice["activation_type"] if config.activation_type == "auto" else config.activation_type
        saturates = activation == "uint8" and isa.arch == "x86-64" and not isa.int8_dot  # u8 × s8 without VNNI
        reduce_range = saturates if config.reduce_range is None else config.reduce_range
        config = replace(config, activation_type=activation, reduce_range=reduce_range)
        choice = {**choice, "activation_type": activation, "reduce_range": reduce_range}
        excluded = _nodes_to_exclude(model, config.exclude_nodes, config.exclude_op_types)
        attempts = itertools.count()

        def quantize(revert, only) -> Path:
            out = ctx.step_dir(f"quantize-static-{next(attempts)}") / "model.onnx"
            _quantize_static(model, config, ctx, out, [*excluded, *revert], only)
            return out

        if config.budget is not None:
            if config.max_drop is not None:
                raise UserError("quantize-static: give max_drop (node fallback) or budget (mixed precision), not both")
            config.budget.objective()
            return _mixed(model, config.budget, "static", ctx,
                          lambda promoted, out: _quantize_static(model, config, ctx, out, [*excluded, *promoted], None),
                          choice)
        if config.max_drop is None:
            return _result(model, quantize((), None), choice)
        from edgekit.metrics import Evaluation
        from edgekit.passes.fallback import Scorer, within_tolerance

        data = ctx.evaluation or ctx.calibration
        scorer = Scorer.of(model, list(data.feeds(config.eval_samples)),
                           None if data.labels is None else data.labels[: config.eval_samples],
                           Evaluation(config.metric, max_drop=config.max_drop, relative=config.relative), ctx.target)
        path, report = within_tolerance(model, quantize, scorer, config.max_reverted, ctx.logger)
        return _result(model, path, choice).derive(meta={"fallback": {**report, "data": data.origin}})

    def from_intent(self, intent: QuantizeIntent, config: QuantizeStaticConfig) -> dict[str, Any]:
        samples = {"calibration_samples": intent.calibration_samples} if intent.calibration_samples else {}
        return {**granularity_fields(intent, self.name, PER_CHANNEL_OR_TENSOR), **samples}

    def variants(self, config: QuantizeStaticConfig, isa: Isa) -> tuple[Variant, ...]:
        """The other calibration methods, and the activation type the ISA does not favour (unless the target fixed it,
        as TensorRT's symmetric int8 does)."""
        methods = tuple(Variant(method, replace(config, calibrate_method=method))
                        for method in ("minmax", "percentile", "entropy") if method != config.calibrate_method)
        if config.activation_type != "auto":
            return methods
        other = "int8" if isa_choice(isa)["activation_type"] == "uint8" else "uint8"
        return (*methods, Variant("s8" if other == "int8" else "u8", replace(config, activation_type=other)))


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
