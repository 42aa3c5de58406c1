"""convert-tflite and quantize-tflite: PyTorch → LiteRT (.tflite) with litert-torch (no TensorFlow needed).

quantize-tflite quantizes on the way: int8 through litert-torch's PT2E quantizer calibrated on the
compile's data (int8 weights and activations; the model's inputs and outputs become int8 tensors,
which the runtime quantizes and dequantizes with the model's own scales), or fp16 weights.
A .tflite source is quantized by LiteRT's own quantizer instead (passes/litert_quantizer.py):
int8 with float32 inputs and outputs; fp16 keeps a source whose weights are fp16 already as it is.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UnsupportedOnTarget, gist
from edgekit.ingest.tflite import interpreter_specs
from edgekit.intent import QuantizeIntent, granularity_fields
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs
from edgekit.passes.pt2e import calibrated, data_sizes, export_inputs, torch_module
from edgekit.spec import TensorSpec


@dataclass(frozen=True, slots=True)
class ConvertTfliteConfig:
    dynamic_dims: bool = True  # keep symbolic dims (a batch) dynamic; False fixes each to 1


@dataclass(frozen=True, slots=True)
class QuantizeTfliteConfig:
    mode: Literal["int8", "int4", "fp16"] = "int8"  # the weights' type (fp16: weights stored as fp16)
    per_channel: bool = True  # weights per output channel (else per tensor); int4 with block_size: per block
    # static (weights and activations, calibrated: integer kernels), dynamic (weights, activations quantized at
    # run time) or weight-only (weights, float compute). Static int8 of a PyTorch source goes through
    # litert-torch's PT2E quantizer; everything else through LiteRT's quantizer on the float .tflite.
    scheme: Literal["static", "dynamic", "weight-only"] = "static"
    block_size: Literal[32, 64, 128, 256] | None = None  # int4 dynamic: weights per scale (FULLY_CONNECTED)
    calibration_samples: int = field(default=128, metadata={"range": (1, 100_000)})
    dynamic_dims: bool = True


def _litert():
    try:
        import litert_torch
    except ImportError:
        raise MissingBackend("litert-torch", "tflite", "converting PyTorch to .tflite") from None
    return litert_torch


@contextlib.contextmanager
def _quiet(litert_torch):
    """litert-torch and ai-edge-quantizer print progress to stdout; keep it off edgekit's output."""
    shown = litert_torch.config.show_progress
    litert_torch.config.show_progress = False
    try:
        with contextlib.redirect_stdout(io.StringIO()), muted_logs("root", "absl", "torch.export"):
            yield
    finally:
        litert_torch.config.show_progress = shown


def _convert(model: Model, module, out: Path, quant_config, examples: tuple, shapes: tuple | None) -> Model:
    """Convert `module` (the model's, or a quantized version of it) on `examples` and describe the file it wrote."""
    litert_torch = _litert()
    with _quiet(litert_torch):
        litert_torch.convert(module, examples, dynamic_shapes=shapes, quant_config=quant_config).export(str(out))
    inputs, outputs = _specs(model, out)
    return model.derive(format=Format.TFLITE, files=(out,), module=None, example_inputs=None, inputs=inputs,
                        outputs=outputs, meta={"content_hash": files_sha256((out,))})


def _specs(model: Model, out: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The source's names and dtypes with the shapes the .tflite really takes.

    A dim the model keeps dynamic (-1) keeps the source's symbolic name; a fixed one is that size.
    Outputs keep the source's shapes while an input is dynamic (LiteRT reports output shapes
    of the example batch then), else take the model's own.
    """
    own_inputs, own_outputs = interpreter_specs(out)
    inputs = tuple(
        TensorSpec(src.name, tuple(s if isinstance(o, str) else o for s, o in zip(src.shape, own.shape)), src.dtype)
        for src, own in zip(model.inputs, own_inputs)
    )
    if all(spec.is_static for spec in inputs):
        outputs = tuple(TensorSpec(src.name, own.shape, src.dtype) for src, own in zip(model.outputs, own_outputs))
    else:
        outputs = model.outputs
    return inputs, outputs


class ConvertTflite(Pass):
    name = "convert-tflite"
    accepts = frozenset({Format.TORCH, Format.EXPORTED})
    produces = Format.TFLITE
    Config = ConvertTfliteConfig
    tolerance = 1e-4
    conversion = True
    uses_calibration = True  # when dynamic dims cannot be exported, they are fixed to the data's sizes

    def run(self, model: Model, config: ConvertTfliteConfig, ctx: Context) -> Model:
        out = ctx.step_dir("convert-tflite") / "model.tflite"
        return _exported(model, ctx, config.dynamic_dims, self.name,
                         lambda examples, shapes: _convert(model, torch_module(model), out, None, examples, shapes))


def _exported(model: Model, ctx: Context, dynamic: bool, pass_name: str, attempt: Callable[[tuple, tuple | None], Model]) -> Model:
    """`attempt(examples, dynamic_shapes)` with the model's symbolic dims dynamic; where torch.export cannot keep
    them so (the model specialises a dim), again with them fixed to the compile data's sizes, saying why."""
    sizes = data_sizes(model.inputs, ctx.calibration or ctx.evaluation)
    if not (dynamic and any(not spec.is_static for spec in model.inputs)):
        return attempt(*export_inputs(model, False, sizes))
    try:
        return attempt(*export_inputs(model, True))
    except Exception as error:  # torch.export raises its own UserError / constraint violations
        why = f"{type(error).__name__}: {gist(error)}"
        ctx.logger.warning("%s: dynamic dims failed to export (%s); fixed to the data's sizes %s", pass_name, why[:300],
                           sizes or "(1)")
        return attempt(*export_inputs(model, False, sizes)).derive(meta={"static_reason": why})


class QuantizeTflite(Pass):
    name = "quantize-tflite"
    accepts = frozenset({Format.TORCH, Format.EXPORTED, Format.TFLITE})
    produces = Format.TFLITE
    Config = QuantizeTfliteConfig
    uses_calibration = True

    def run(self, model: Model, config: QuantizeTfliteConfig, ctx: Context) -> Model:
        out = ctx.step_dir("quantize-tflite") / "model.tflite"
        if model.format is Format.TFLITE:
            return _quantize_tflite_source(model, config, ctx, out)
        if config.mode == "int4" or (config.mode == "int8" and config.scheme != "static"):
            float_tflite = ctx.step_dir("quantize-tflite-float") / "model.tflite"
            converted = _exported(model, ctx, config.dynamic_dims, self.name, lambda examples, shapes: _convert(
                model, torch_module(model), float_tflite, None, examples, shapes))
            return _quantize_tflite_source(converted, config, ctx, out)
        litert_torch = _litert()
        if config.mode == "fp16":
            from litert_torch.generative.quantize.quant_recipes import full_fp16_recipe

            result = _exported(model, ctx, config.dynamic_dims, self.name, lambda examples, shapes: _convert(
                model, torch_module(model), out, full_fp16_recipe(), examples, shapes))
            return result.derive(meta={"precision": "fp16"})
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig

        def quantize(examples: tuple, shapes: tuple | None) -> Model:
            quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=config.per_channel))
            with _quiet(litert_torch):
                quantized = calibrated(model, quantizer, examples, shapes, config.calibration_samples, ctx, self.name,
                                       fold_quantize=False)
            return _convert(model, quantized, out, QuantConfig(pt2e_quantizer=quantizer), examples, shapes)

        return _exported(model, ctx, config.dynamic_dims, self.name, quantize).derive(meta={"precision": "int8"})

    def from_intent(self, intent: QuantizeIntent, config: QuantizeTfliteConfig) -> dict[str, Any]:
        samples = {"calibration_samples": intent.calibration_samples} if intent.calibration_samples else {}
        offered: dict[str, dict[str, Any]] = {"per-channel": {"per_channel": True, "block_size": None},
                                              "per-tensor": {"per_channel": False, "block_size": None}}
        if config.mode == "int4" and config.scheme == "dynamic":  # LiteRT's dynamic int4 kernels also take blocks
            offered["per-group"] = {"block_size": intent.group_size or config.block_size or 128}
        if intent.group_size and intent.group_size not in (32, 64, 128, 256):
            raise UnsupportedOnTarget(f"{self.name}: LiteRT's int4 blocks hold 32, 64, 128 or 256 weights, "
                                      f"not {intent.group_size}")
        return {**granularity_fields(intent, self.name, offered), **samples}


def _quantize_tflite_source(model: Model, config: QuantizeTfliteConfig, ctx: Context, out: Path) -> Model:
    from edgekit.passes.litert_quantizer import has_fp16_weights, quantize_tflite_source

    if config.mode == "fp16":
        if not has_fp16_weights(model.path):
            raise UnsupportedOnTarget("quantize-tflite: fp16 of a float32 .tflite source is not supported; "
                                      "compile it with recipe fp32 or int8")
        ctx.logger.info("quantize-tflite: the .tflite already stores its weights as fp16; kept as it is")
        return model.derive(meta={"precision": "fp16"})
    if model.meta.get("precision") == "int8":
        raise UnsupportedOnTarget("quantize-tflite: the .tflite is quantized already (int8 inputs); "
                                  "compile it with recipe fp32 to package it as it is")
    meta = quantize_tflite_source(model, config, ctx, out)
    inputs, outputs = _specs(model, out)
    return model.derive(files=(out,), inputs=inputs, outputs=outputs,
                        meta={"content_hash": files_sha256((out,)), **meta})
