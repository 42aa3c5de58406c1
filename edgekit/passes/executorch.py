"""convert-executorch and quantize-executorch: PyTorch → ExecuTorch (.pte), delegated to XNNPACK.

torch.export → to_edge_transform_and_lower(XnnpackPartitioner) → to_executorch. Symbolic dims
are fixed to 1 (the package's specs say so): give other sizes with --input. quantize-executorch
first quantizes with the PT2E XNNPACKQuantizer calibrated on the compile's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UnsupportedOnTarget, gist
from edgekit.model import Format, Model
from edgekit.passes.base import Context, NoConfig, Pass, muted_logs
from edgekit.passes.pt2e import calibrated, data_sizes, export_inputs, static_specs, torch_module
from edgekit.spec import TensorSpec


@dataclass(frozen=True, slots=True)
class QuantizeExecutorchConfig:
    per_channel: bool = True  # int8 weights per output channel (else per tensor)
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
        try:
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
        except ImportError:
            raise MissingBackend("executorch", "executorch", "quantizing for ExecuTorch") from None
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=config.per_channel))
        examples, sizes = _static(model, ctx)
        with muted_logs("root", "torch.export"):
            quantized = calibrated(model, quantizer, examples, None, config.calibration_samples, ctx, self.name)
        result = _lower(model, quantized, examples, sizes, ctx.step_dir(self.name) / "model.pte", ctx, quantized=True)
        return result.derive(meta={"precision": "int8"})
