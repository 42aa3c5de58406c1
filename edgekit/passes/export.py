"""export-onnx: a PyTorch module or exported program → ONNX (dynamo exporter, legacy fallback)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

from edgekit.digest import files_sha256
from edgekit.errors import UserError
from edgekit.ingest.onnx import graph_specs, load_graph, onnx_files, opset_of
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs


@dataclass(frozen=True, slots=True)
class ExportOnnxConfig:
    opset: int = field(default=18, metadata={"range": (13, 23)})
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    fallback: bool = True  # try the other exporter when the first fails
    single_file: bool = True  # weights inside the .onnx when under 2 GB


class ExportOnnx(Pass):
    name = "export-onnx"
    accepts = frozenset({Format.TORCH, Format.EXPORTED})
    produces = Format.ONNX
    Config = ExportOnnxConfig
    tolerance = 1e-4
    conversion = True

    def run(self, model: Model, config: ExportOnnxConfig, ctx: Context) -> Model:
        out = ctx.step_dir("export-onnx") / "model.onnx"
        other = "torchscript" if config.exporter == "dynamo" else "dynamo"
        order = [config.exporter, other] if config.fallback else [config.exporter]
        failures = []
        for exporter in order:
            try:
                _export(model, out, exporter, config)
                break
            except Exception as error:  # exporters raise many kinds; keep the reason
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                failures.append(f"{exporter}: {type(error).__name__}: {reason}")
                ctx.logger.warning("export-onnx: the %s exporter failed (%s)", exporter, reason)
                for stale in out.parent.iterdir():
                    stale.unlink()
        else:
            raise UserError("export-onnx failed: " + " | ".join(failures))
        if failures:
            ctx.logger.warning("export-onnx: fell back to the %s exporter because %s", exporter, failures[0])
        graph = load_graph(out)
        files = onnx_files(out, graph)
        initializers = {init.name for init in graph.graph.initializer}
        return model.derive(
            format=Format.ONNX, files=files, module=None, example_inputs=None,
            inputs=graph_specs(graph.graph.input, initializers), outputs=graph_specs(graph.graph.output, set()),
            meta={"content_hash": files_sha256(files), "opset": opset_of(graph), "exporter": exporter,
                  "export_fallback_reason": failures[0] if failures else None},
        )


def _export(model: Model, out, exporter: str, config: ExportOnnxConfig) -> None:
    import torch

    input_names = [spec.name for spec in model.inputs]
    output_names = [spec.name for spec in model.outputs]
    symbolic = {spec.name: {axis: dim for axis, dim in enumerate(spec.shape) if isinstance(dim, str)} for spec in model.inputs}
    with warnings.catch_warnings(), muted_logs("torch.onnx", "torch.export", "onnxscript"):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dims = {}
            shapes = {}
            for name, axes in symbolic.items():
                shapes[name] = {axis: dims.setdefault(dim, torch.export.Dim(dim_name(dim))) for axis, dim in axes.items()} or None
            if model.format is Format.EXPORTED:
                shapes = None  # the program carries its own dynamic dims
            torch.onnx.export(
                model.module, model.example_inputs, str(out), dynamo=True, opset_version=config.opset,
                input_names=input_names, output_names=output_names,
                dynamic_shapes=_by_forward_names(model, shapes), external_data=not config.single_file,
                verbose=False,
            )
        else:
            axes = {name: {axis: dim for axis, dim in dims.items()} for name, dims in symbolic.items() if dims}
            for spec in model.outputs:
                out_axes = {axis: dim for axis, dim in enumerate(spec.shape) if isinstance(dim, str)}
                if out_axes:
                    axes[spec.name] = out_axes
            torch.onnx.export(
                model.module, model.example_inputs, str(out), dynamo=False, opset_version=config.opset,
                input_names=input_names, output_names=output_names, dynamic_axes=axes or None,
            )


def dim_name(dim: str) -> str:
    """A symbolic dim's name as a valid torch.export Dim name."""
    return dim if dim.isidentifier() else "d_" + "".join(c if c.isalnum() else "_" for c in dim)


def _by_forward_names(model: Model, shapes):
    """dynamic_shapes keyed by forward()'s own argument names, as torch.export wants."""
    if shapes is None:
        return None
    from edgekit.ingest.torch import forward_names

    names = forward_names(model.module)
    return {name: shapes.get(spec.name) for name, spec in zip(names, model.inputs)}
