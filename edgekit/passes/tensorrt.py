"""build-tensorrt: an ONNX model → a serialized TensorRT engine (TensorRT 10 builder API; 11 strongly typed).

Precision: fp32 by default (TF32 off, so outputs stay within 1e-3 of the source); `fp16: true` lets
the builder pick fp16 kernels; a Q/DQ network (quantize-static with symmetric int8) is built with
explicit quantization: TensorRT uses the Q/DQ scales, no calibrator. TensorRT 11 dropped the
precision flags (strong typing only): there an fp16 engine comes from an fp16 ONNX graph.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UnsupportedOnTarget, UserError
from edgekit.ingest.onnx import load_graph
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass
from edgekit.spec import TensorSpec

Range = tuple[int, int, int]  # min, opt, max of one dim in the optimization profile
_DIM_RE = re.compile(r"^(?P<name>[^=]+)=(?P<min>\d+):(?P<opt>\d+):(?P<max>\d+)$")


@dataclass(frozen=True, slots=True)
class BuildTensorrtConfig:
    fp16: bool = False  # let the builder choose fp16 kernels (weak typing: TensorRT 10)
    strongly_typed: bool = False  # types come from the graph only (forced on TensorRT 11)
    tf32: bool = False  # TF32 for fp32 conv/matmul on Ampere+: faster, about 1e-3 relative error
    workspace_mb: int = field(default=1024, metadata={"range": (16, 1 << 20)})
    optimization_level: int = field(default=3, metadata={"range": (0, 5)})
    # a symbolic dim on axis 0 is the batch: its profile is min/opt/max_batch
    min_batch: int = field(default=1, metadata={"range": (1, 1 << 20)})
    opt_batch: int = field(default=1, metadata={"range": (1, 1 << 20)})
    max_batch: int = field(default=32, metadata={"range": (1, 1 << 20)})
    dims: tuple[str, ...] = ()  # other symbolic dims (or the batch, overriding): NAME=MIN:OPT:MAX, e.g. seq=1:128:512
    timing_cache: str = ""  # file to reuse and update across builds; empty: a fresh cache in the step's work dir


class BuildTensorrt(Pass):
    name = "build-tensorrt"
    accepts = frozenset({Format.ONNX})
    produces = Format.TENSORRT
    Config = BuildTensorrtConfig
    conversion = True

    def run(self, model: Model, config: BuildTensorrtConfig, ctx: Context) -> Model:
        graph = load_graph(model.path)
        quantized = explicit_quantization(graph)
        ranges = {spec.name: profile_ranges(spec, config) for spec in model.inputs if not spec.is_static}
        trt = _tensorrt()
        out = ctx.step_dir("build-tensorrt") / "model.engine"
        logger = _logger(trt, ctx.logger)
        strongly_typed = config.strongly_typed or not hasattr(trt.BuilderFlag, "FP16")
        if strongly_typed and config.fp16:
            why = "strongly_typed is set" if config.strongly_typed else f"TensorRT {trt.__version__} has no fp16 builder flag"
            raise UserError(f"build-tensorrt: fp16 needs weak typing, but {why}; convert the graph to fp16 first "
                            "(a convert-fp16 step before build-tensorrt) and build with fp16: false")
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(model.path)):
            raise UnsupportedOnTarget(_parser_failure(parser, model.path))
        build_config = builder.create_builder_config()
        build_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
        build_config.builder_optimization_level = config.optimization_level
        if not config.tf32:
            build_config.clear_flag(trt.BuilderFlag.TF32)
        if not strongly_typed:
            if config.fp16:
                build_config.set_flag(trt.BuilderFlag.FP16)
            if quantized:
                build_config.set_flag(trt.BuilderFlag.INT8)
        if ranges:
            build_config.add_optimization_profile(_profile(builder, network, ranges))
        cache_path = Path(config.timing_cache).expanduser() if config.timing_cache else ctx.work_dir / "timing.cache"
        cache = build_config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        build_config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, build_config)
        if serialized is None:
            raise UnsupportedOnTarget(f"TensorRT could not build an engine from {model.path.name}: {logger.last_error()}")
        out.write_bytes(bytes(serialized))
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(cache.serialize()))
        precision = "int8" if quantized else "fp16" if config.fp16 else "fp32"
        return model.derive(
            format=Format.TENSORRT, files=(out,), module=None, example_inputs=None,
            meta={"content_hash": files_sha256((out,)), "precision": precision, "tensorrt": trt.__version__,
                  "strongly_typed": strongly_typed, "profile": {k: [list(r) for r in v] for k, v in ranges.items()}},
        )


def _tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise MissingBackend("tensorrt", "tensorrt", "building TensorRT engines") from None
    return tensorrt


def explicit_quantization(graph) -> bool:
    """Whether the graph holds Q/DQ nodes; TensorRT takes only int8 ones with zero point 0."""
    from onnx import TensorProto, numpy_helper

    initializers = {init.name: init for init in graph.graph.initializer}
    fix = ("TensorRT takes symmetric int8 Q/DQ only: quantize with quantize-static activation_type int8, "
           "symmetric_activations true, quantize_bias false (gpu-tensorrt's quantize int8/static entry)")
    quantized = False
    for node in graph.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        quantized = True
        source = initializers.get(node.input[0])
        if node.op_type == "DequantizeLinear" and source is not None and source.data_type == TensorProto.INT32:
            raise UserError(f"build-tensorrt: DequantizeLinear node '{node.name}' takes an int32 (bias) tensor; {fix}")
        zero_point = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is not None and (zero_point.data_type != TensorProto.INT8 or np.any(numpy_helper.to_array(zero_point))):
            raise UserError(f"build-tensorrt: {node.op_type} node '{node.name}' has an asymmetric or uint8 zero point; {fix}")
    return quantized


def profile_ranges(spec: TensorSpec, config: BuildTensorrtConfig) -> list[Range]:
    """min/opt/max for every axis of an input: fixed dims as is, the batch and named dims from the config."""
    named = _named_dims(config.dims)
    batch = (config.min_batch, config.opt_batch, config.max_batch)
    ranges = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            ranges.append((dim, dim, dim))
        elif dim in named:
            ranges.append(named[dim])
        elif axis == 0:
            ranges.append(batch)
        else:
            raise UserError(
                f"build-tensorrt: input '{spec.name}' has symbolic dim '{dim}' (axis {axis}) with no profile range; "
                f"give it in the step's dims, e.g. dims: ['{dim}=1:64:256'], or fix it with --input"
            )
        low, opt, high = ranges[-1]
        if not low <= opt <= high:
            raise UserError(f"build-tensorrt: dim '{dim}' of input '{spec.name}' needs min <= opt <= max, got {low}:{opt}:{high}")
    return ranges


def _named_dims(texts: tuple[str, ...]) -> dict[str, Range]:
    named = {}
    for text in texts:
        match = _DIM_RE.match(text.replace(" ", ""))
        if not match:
            raise UserError(f"build-tensorrt: dims entry '{text}' is not NAME=MIN:OPT:MAX, e.g. seq=1:128:512")
        named[match["name"]] = (int(match["min"]), int(match["opt"]), int(match["max"]))
    return named


def _profile(builder, network, ranges: dict[str, list[Range]]):
    profile = builder.create_optimization_profile()
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    for name, axes in ranges.items():
        if name not in names:
            raise UserError(f"build-tensorrt: input '{name}' is not an input of the TensorRT network ({', '.join(sorted(names))})")
        profile.set_shape(name, *(tuple(r[k] for r in axes) for k in range(3)))
    return profile


def _parser_failure(parser, source: Path) -> str:
    first = parser.get_error(0)
    where = f"{first.node_operator()} node '{first.node_name()}'" if first.node_name() else "the graph"
    return (f"TensorRT's ONNX parser rejected {source.name} ({parser.num_errors} error(s)); "
            f"first, at {where}: {first.desc()}")


def _logger(trt, log: logging.Logger):
    """A TensorRT logger that forwards to `log` and remembers the last error for messages."""
    levels = {trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR, trt.ILogger.Severity.ERROR: logging.ERROR,
              trt.ILogger.Severity.WARNING: logging.WARNING, trt.ILogger.Severity.INFO: logging.DEBUG,
              trt.ILogger.Severity.VERBOSE: logging.DEBUG}

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg: str) -> None:
            level = levels.get(severity, logging.DEBUG)
            if level >= logging.ERROR:
                self.errors.append(msg)
            log.log(level, "tensorrt: %s", msg)

        def last_error(self) -> str:
            return self.errors[-1] if self.errors else "no error was logged (run with -vv for TensorRT's log)"

    return Logger()
