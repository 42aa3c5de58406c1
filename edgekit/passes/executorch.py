"""convert-executorch and quantize-executorch: PyTorch → ExecuTorch (.pte), delegated to XNNPACK.

torch.export → to_edge_transform_and_lower(XnnpackPartitioner) → to_executorch. Symbolic dims
are fixed to 1 (the package's specs say so): give other sizes with --input. quantize-executorch
first quantizes: int8 with the PT2E XNNPACKQuantizer (static: calibrated on the compile's data;
dynamic: activations quantized at run time), int4 with torchao's int8-dynamic-activation /
int4-weight Linear layers (groups of `group_size` weights), the scheme ExecuTorch's XNNPACK runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UnsupportedOnTarget, gist
from edgekit.intent import QuantizeIntent, granularity_fields
from edgekit.model import Format, Model
from edgekit.passes.base import Context, NoConfig, Pass, muted_logs
from edgekit.passes.pt2e import calibrated, data_sizes, export_inputs, static_specs, torch_module
from edgekit.spec import TensorSpec


@dataclass(frozen=True, slots=True)
class QuantizeExecutorchConfig:
    precision: Literal["int8", "int4"] = "int8"  # the weights' type
    scheme: Literal["static", "dynamic"] = "static"  # int4 is dynamic (int8 activations at run time)
    per_channel: bool = True  # int8 weights per output channel (else per tensor)
    group_size: int = field(default=128, metadata={"range": (16, 4096)})  # int4: weights per scale
    calibration_samples: int = field(default=128, metadata={"range": (1, 100_000)})


def _static(model: Model, ctx: Context) -> tuple[tuple, dict[str, int]]:
    """Examples for a static export: symbolic dims at their size in the compile's data, else 1."""
    sizes = data_sizes(model.inputs, ctx.calibration or ctx.evaluation)
    examples, _ = export_inputs(model, dynamic=False, sizes=sizes)
    return examples, sizes


def _lower(model: Model, module, examples: tuple, sizes: dict[str, int], out: Path, ctx: Context,
           quantized: bool = False) -> Model:
    """Export `module` with static shapes, lower it to XNNPACK, write the .pte and describe it.

    A float graph XNNPACK's lowering rejects runs on the portable kernels; a quantized one cannot (they have no
    quantized ops), which is one clear refusal."""
    import torch

    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise MissingBackend("executorch", "executorch", "converting PyTorch to .pte") from None
    symbolic = sorted({d for spec in model.inputs for d in spec.shape if isinstance(d, str)})
    if symbolic:
        ctx.logger.info("ExecuTorch takes static shapes: symbolic dim(s) %s fixed to %s (the data's sizes, else 1; "
                        "set them with --input)", ", ".join(symbolic), ", ".join(str(sizes.get(d, 1)) for d in symbolic))
    delegate = "xnnpack"
    with muted_logs("root", "torch.export", "executorch"):
        program = torch.export.export(module, examples)
        try:
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
        except Exception as error:  # XNNPACK's lowering passes reject some graphs: run them on portable kernels
            why = f"XNNPACK's lowering failed ({type(error).__name__}: {gist(error)})"
            if quantized:
                raise UnsupportedOnTarget(f"quantize-executorch: {why}, and ExecuTorch's portable kernels have no "
                                          "quantized ops: no int8 .pte for this model") from None
            delegate = f"none: {why}"
            ctx.logger.warning("convert-executorch: %s; the program runs on ExecuTorch's portable kernels", delegate)
            lowered = to_edge_transform_and_lower(program).to_executorch()
    out.write_bytes(lowered.buffer)
    return model.derive(format=Format.EXECUTORCH, files=(out,), module=None, example_inputs=None,
                        inputs=static_specs(model.inputs, sizes), outputs=_output_specs(model, out),
                        meta={"content_hash": files_sha256((out,)), "delegate": delegate})


def _output_specs(model: Model, out: Path) -> tuple[TensorSpec, ...]:
    """The source's output names and dtypes with the static shapes the program really gives."""
    from edgekit.runtime.executorch import load_program, method_specs

    own = method_specs(load_program(out))[1]
    return tuple(TensorSpec(src.name, spec.shape, src.dtype) for src, spec in zip(model.outputs, own))


class ConvertExecutorch(Pass):
    name = "convert-executorch"
    accepts = frozenset({Format.TORCH, Format.EXPORTED})
    produces = Format.EXECUTORCH
    Config = NoConfig
    tolerance = 1e-4
    conversion = True
    uses_calibration = True  # symbolic dims are fixed to the data's sizes

    def run(self, model: Model, config: NoConfig, ctx: Context) -> Model:
        examples, sizes = _static(model, ctx)
        return _lower(model, torch_module(model), examples, sizes, ctx.step_dir(self.name) / "model.pte", ctx)


class QuantizeExecutorch(Pass):
    name = "quantize-executorch"
    accepts = frozenset({Format.TORCH, Format.EXPORTED})
    produces = Format.EXECUTORCH
    Config = QuantizeExecutorchConfig
    uses_calibration = True

    def run(self, model: Model, config: QuantizeExecutorchConfig, ctx: Context) -> Model:
        examples, sizes = _static(model, ctx)
        if config.precision == "int4":
            if config.scheme != "dynamic":
                raise UnsupportedOnTarget("quantize-executorch: int4 runs with dynamic int8 activations (scheme: dynamic)")
            quantized, layers = _int4_linears(model, config.group_size)
            meta = {"precision": "int4", "scheme": "int8 dynamic activations, int4 weights", "int4_layers": layers}
        else:
            quantized = _pt2e_int8(model, config, examples, ctx, self.name)
            meta = {"precision": "int8", "scheme": config.scheme}
        result = _lower(model, quantized, examples, sizes, ctx.step_dir(self.name) / "model.pte", ctx, quantized=True)
        return result.derive(meta=meta)

    def from_intent(self, intent: QuantizeIntent, config: QuantizeExecutorchConfig) -> dict[str, Any]:
        samples = {"calibration_samples": intent.calibration_samples} if intent.calibration_samples else {}
        offered = ({"per-group": {"group_size": intent.group_size or config.group_size}} if config.precision == "int4"
                   else {"per-channel": {"per_channel": True}, "per-tensor": {"per_channel": False}})
        return {**granularity_fields(intent, self.name, offered), **samples}


def _pt2e_int8(model: Model, config: QuantizeExecutorchConfig, examples: tuple, ctx: Context, name: str):
    """The module quantized to int8 by the PT2E XNNPACKQuantizer (static: calibrated; dynamic: at run time)."""
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
    except ImportError:
        raise MissingBackend("executorch", "executorch", "quantizing for ExecuTorch") from None
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=config.per_channel, is_dynamic=config.scheme == "dynamic"))
    with muted_logs("root", "torch.export"):
        return calibrated(model, quantizer, examples, None, config.calibration_samples, ctx, name)


def _int4_linears(model: Model, group_size: int):
    """A copy of the module with each Linear whose input size `group_size` divides in int4 weights (groups of
    `group_size`, int8 dynamic activations), and how many were quantized; none is a refusal."""
    import copy

    import torch

    try:
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
        from torchao.quantization.granularity import PerGroup
    except ImportError:
        raise MissingBackend("torchao", "executorch", "int4 weights for ExecuTorch") from None
    module = copy.deepcopy(torch_module(model))
    eligible = [name for name, layer in module.named_modules()
                if isinstance(layer, torch.nn.Linear) and layer.in_features % group_size == 0]
    if not eligible:
        raise UnsupportedOnTarget(f"quantize-executorch: no Linear layer whose input size is a multiple of the group "
                                  f"size {group_size}: nothing to store in int4 (use int8, or a smaller group_size)")
    with muted_logs("root", "torchao"):
        quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                                weight_granularity=PerGroup(group_size)),
                  filter_fn=lambda layer, name: name in eligible)
    return module, len(eligible)
