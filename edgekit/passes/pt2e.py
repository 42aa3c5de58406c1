"""What the mobile converters share: example inputs and dims for torch.export, and PT2E calibration."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import UserError
from edgekit.model import Format, Model
from edgekit.passes.base import Context
from edgekit.passes.export import dim_name
from edgekit.spec import TensorSpec

EXAMPLE_SIZE = 2  # a symbolic dim's size in the examples: torch.export specialises dims of size 1


def torch_module(model: Model):
    """The nn.Module (or exported program's module) a torch-format model runs."""
    return model.module.module() if model.format is Format.EXPORTED else model.module


def data_sizes(specs: tuple[TensorSpec, ...], data) -> dict[str, int]:
    """Symbolic dim name → its size in the data's first sample (a Dataset, or None: no sizes)."""
    sizes: dict[str, int] = {}
    if data is None:
        return sizes
    for spec in specs:
        array = data.arrays.get(spec.name)
        if array is not None and array.ndim == len(spec.shape) + 1:
            sizes.update({dim: size for dim, size in zip(spec.shape, array.shape[1:]) if isinstance(dim, str)})
    return sizes


def export_inputs(model: Model, dynamic: bool, sizes: dict[str, int] | None = None) -> tuple[tuple, tuple | None]:
    """Example tensors and torch.export `dynamic_shapes` (by position) for the model's inputs.

    With `dynamic`, each symbolic dim becomes one export Dim per name; without, it is fixed to its
    size in `sizes` (the data's), else 1.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    dims: dict[str, Any] = {}
    examples, shapes = [], []
    for spec in model.inputs:
        shape = spec.concrete_shape(None if dynamic else sizes, default=EXAMPLE_SIZE if dynamic else 1)
        dtype = getattr(torch, spec.dtype)
        examples.append(torch.randn(shape, generator=generator).to(dtype) if dtype.is_floating_point
                        else torch.zeros(shape, dtype=dtype))
        axes = {axis: dims.setdefault(dim, torch.export.Dim(dim_name(dim))) for axis, dim in enumerate(spec.shape)
                if isinstance(dim, str)}
        shapes.append(axes or None)
    dynamic_shapes = tuple(shapes) if dynamic and dims else None
    return tuple(examples), dynamic_shapes


def static_specs(specs: tuple[TensorSpec, ...], sizes: dict[str, int] | None = None) -> tuple[TensorSpec, ...]:
    """The specs with every symbolic dim fixed to its size in `sizes`, else 1 (what a static export of them accepts)."""
    return tuple(TensorSpec(spec.name, spec.concrete_shape(sizes, default=1), spec.dtype) for spec in specs)


def calibrated(model: Model, quantizer, examples: tuple, dynamic_shapes: tuple | None, samples: int, ctx: Context,
               pass_name: str, fold_quantize: bool = True):
    """The model exported, annotated by `quantizer`, run on calibration feeds, and converted (PT2E).

    `fold_quantize=False` keeps weights as float constants with quantize ops (litert-torch needs that).
    """
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if ctx.calibration is None:
        raise UserError(f"{pass_name} needs calibration data: give --calib DATA")
    graph = torch.export.export(torch_module(model), examples, dynamic_shapes=dynamic_shapes).module()
    prepared = prepare_pt2e(graph, quantizer)
    calibrate(prepared, model, ctx, samples, pass_name)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)


def calibrate(module: Any, model: Model, ctx: Context, samples: int, name: str) -> None:
    """Run `module` on up to `samples` calibration feeds, advancing the progress bar."""
    import torch

    if ctx.calibration is None:
        raise UserError(f"{name} needs calibration data: give --calib DATA")
    data = ctx.calibration.head(samples)
    ctx.progress.start("calibrating", len(data))
    with torch.no_grad():
        for feed in data.feeds():
            module(*[torch.from_numpy(np.require(feed[spec.name], requirements="C")) for spec in model.inputs])
            ctx.progress.advance()
    ctx.progress.finish()
