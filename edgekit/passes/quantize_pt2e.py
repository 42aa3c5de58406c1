"""quantize-pt2e: PyTorch 2 export quantization (torchao PT2E) with the x86 or XNNPACK quantizer.

The module is exported, observers inserted by the quantizer, calibrated on ctx.calibration,
converted to quantize/dequantize + float ops, and exported again: the result is an
ExportedProgram in the Q/DQ form that export-onnx turns into QuantizeLinear/DequantizeLinear.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from edgekit.errors import EdgekitError, MissingBackend, UnsupportedOnTarget, UserError
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs
from edgekit.passes.pt2e import calibrate, torch_module

LOGGERS = ("torch.export", "torch._dynamo", "torch.fx", "torchao")


@dataclass(frozen=True, slots=True)
class QuantizePt2eConfig:
    quantizer: Literal["x86", "xnnpack"] = "x86"
    # x86 quantizes activations to uint8 (for Inductor's VNNI kernels). ONNX Runtime's u8×s8 kernels
    # saturate on AVX2 CPUs without VNNI, so int8 activations are the default (x86 quantizer only).
    activation_type: Literal["int8", "uint8"] = "int8"
    reduce_range: bool = False  # 7-bit activations (x86, uint8): the quantizer's fix for CPUs without VNNI
    per_channel: bool = True  # xnnpack only; x86 weights are always per channel
    calibration_samples: int = field(default=128, metadata={"range": (1, 100_000)})


def _pt2e():
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        raise MissingBackend("torchao", "torch", "PT2E quantization") from None
    return prepare_pt2e, convert_pt2e


def make_quantizer(config: QuantizePt2eConfig) -> Any:
    """The torchao/ExecuTorch quantizer object the config names."""
    import torch

    if config.quantizer == "xnnpack":
        try:
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
        except ImportError:
            raise MissingBackend("executorch", "executorch", "the XNNPACK PT2E quantizer") from None
        if config.activation_type != "int8":
            raise UserError("quantize-pt2e: the xnnpack quantizer takes int8 activations only: set activation_type: int8")
        return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=config.per_channel))
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    if config.activation_type == "int8" and config.reduce_range:
        raise UserError("quantize-pt2e: reduce_range applies to uint8 activations: set activation_type: uint8")
    chosen = x86.get_default_x86_inductor_quantization_config(reduce_range=config.reduce_range)
    if config.activation_type == "int8":
        activation = dataclasses.replace(chosen.input_activation, dtype=torch.int8, quant_min=-128, quant_max=127)
        chosen = dataclasses.replace(chosen, input_activation=activation, output_activation=activation)
    return x86.X86InductorQuantizer().set_global(chosen)


def export_program(model: Model, module: Any = None) -> Any:
    """torch.export of `module` (default: the model's own) on its examples, symbolic dims kept dynamic."""
    import torch

    module = module if module is not None else torch_module(model)
    if model.example_inputs is None:
        raise UserError("quantize-pt2e: the model has no example inputs to export it with")
    shapes = tuple({axis: torch.export.Dim.DYNAMIC for axis, dim in enumerate(spec.shape) if isinstance(dim, str)} or None
                   for spec in model.inputs)
    return torch.export.export(module, tuple(model.example_inputs), dynamic_shapes=shapes)


class QuantizePt2e(Pass):
    name = "quantize-pt2e"
    accepts = frozenset({Format.TORCH, Format.EXPORTED})
    produces = Format.EXPORTED
    Config = QuantizePt2eConfig
    uses_calibration = True

    def run(self, model: Model, config: QuantizePt2eConfig, ctx: Context) -> Model:
        prepare_pt2e, convert_pt2e = _pt2e()
        quantizer = make_quantizer(config)
        with muted_logs(*LOGGERS):
            try:
                program = export_program(model)
            except Exception as error:
                raise UnsupportedOnTarget(f"quantize-pt2e: torch.export cannot capture the model: {_first_line(error)}") from error
            try:
                prepared = prepare_pt2e(program.module(), quantizer)
                calibrate(prepared, model, ctx, config.calibration_samples, self.name)
                converted = convert_pt2e(prepared)
            except EdgekitError:
                raise
            except Exception as error:  # the quantizers fail on graphs they do not pattern-match (e.g. BERT)
                raise UnsupportedOnTarget(
                    f"quantize-pt2e: the {config.quantizer} quantizer cannot quantize this graph "
                    f"({type(error).__name__}: {_first_line(error)}); use quantize-static or quantize-dynamic on ONNX instead"
                ) from error
            quantized = export_program(model, converted)
        return model.derive(format=Format.EXPORTED, module=quantized, files=(), meta={"precision": "int8"})


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
