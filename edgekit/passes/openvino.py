"""convert-openvino (ONNX / PyTorch / .tflite → OpenVINO IR) and compress-fp16-openvino (fp16 weights in the IR)."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UnsupportedOnTarget
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass, muted_logs
from edgekit.spec import TensorSpec


def _openvino():
    try:
        import openvino
    except ImportError:
        raise MissingBackend("openvino", "openvino", "OpenVINO conversion") from None
    return openvino


def read_ir(model: Model):
    """The openvino.Model of an IR Model (xml + bin)."""
    from edgekit.runtime.openvino import core

    return core().read_model(str(model.files[0]), str(model.files[1]))


def save_ir(ov_model, folder: Path, compress_to_fp16: bool = False) -> tuple[Path, Path]:
    """Write `ov_model` as folder/model.xml + model.bin; weights stay as they are unless compress_to_fp16."""
    xml = folder / "model.xml"
    _openvino().save_model(ov_model, str(xml), compress_to_fp16=compress_to_fp16)
    return xml, xml.with_suffix(".bin")


def ir_result(model: Model, files: tuple[Path, ...], **meta) -> Model:
    """`model` as the IR in `files`, with a fresh content hash and the given meta."""
    return model.derive(format=Format.OPENVINO, files=files, module=None, example_inputs=None,
                        meta={"content_hash": files_sha256(files), **meta})


@dataclass(frozen=True, slots=True)
class ConvertOpenvinoConfig:
    # PyTorch sources: False traces with TorchScript, True converts through torch.export
    dynamo: bool = False


class ConvertOpenvino(Pass):
    """Float32 IR with the model's own input/output names; symbolic dims stay dynamic, fixed dims static."""

    name = "convert-openvino"
    accepts = frozenset({Format.ONNX, Format.TORCH, Format.EXPORTED, Format.TFLITE})
    produces = Format.OPENVINO
    Config = ConvertOpenvinoConfig
    tolerance = 1e-4
    conversion = True

    def run(self, model: Model, config: ConvertOpenvinoConfig, ctx: Context) -> Model:
        ov = _openvino()
        shapes = [(spec.name, [d if isinstance(d, int) else -1 for d in spec.shape], ov.Type(np.dtype(spec.dtype)))
                  for spec in model.inputs]
        with warnings.catch_warnings(), muted_logs("torch.export", "torch.jit", "openvino"):
            warnings.simplefilter("ignore")
            if model.format is Format.ONNX:
                converted = ov.convert_model(str(model.path), input=shapes)
            elif model.format is Format.TFLITE:  # OpenVINO's TFLite frontend; its tensor names differ: by position
                converted = _convert_tflite(ov, model, [shape[1:] for shape in shapes], ctx.step_dir("builtin-tflite"))
            elif model.format is Format.EXPORTED:
                converted = ov.convert_model(model.module, input=shapes)
            else:
                converted = ov.convert_model(model.module, example_input=model.example_inputs, input=shapes,
                                             dynamo=config.dynamo)
        _name_ports(converted.inputs, model.inputs)
        _name_ports(converted.outputs, model.outputs)
        files = save_ir(converted, ctx.step_dir("convert-openvino"))
        return ir_result(model, files)


def _convert_tflite(ov, model: Model, shapes: list, work: Path, path: Path | None = None):
    """OpenVINO's TFLite frontend on the model; a custom op edgekit can spell in builtins (tflite_rewrite) is
    rewritten first and converted again."""
    from edgekit.passes.tflite_rewrite import TRANSPOSE_CONV_BIAS

    try:
        return ov.convert_model(str(path or model.path), input=shapes)
    except Exception as error:
        missing = re.search(r"No translator found for (\S+) node", str(error))
        if not missing:
            raise
        if missing.group(1) == TRANSPOSE_CONV_BIAS and path is None:
            from edgekit.passes.litert_quantizer import plain_float_model

            builtin = work / "builtin.tflite"
            builtin.write_bytes(plain_float_model(model.path.read_bytes())[0])
            return _convert_tflite(ov, model, shapes, work, builtin)
        raise UnsupportedOnTarget(f"OpenVINO's TFLite frontend cannot convert op {missing.group(1)} "
                                  f"of {model.path.name}") from None


def _name_ports(ports, specs: tuple[TensorSpec, ...]) -> None:
    """Give each IR port its spec's name, so the IR speaks the same names as the source model."""
    if len(ports) != len(specs):
        raise ValueError(f"the IR has {len(ports)} ports where the model has {len(specs)}: "
                         f"{', '.join(spec.name for spec in specs)}")
    for port, spec in zip(ports, specs):
        if spec.name not in port.get_names():
            port.get_tensor().set_names({spec.name})


class CompressFp16Openvino(Pass):
    """Store the IR's float weights as fp16: half the file; CPUs decompress them and compute in fp32."""

    name = "compress-fp16-openvino"
    accepts = frozenset({Format.OPENVINO})
    produces = Format.OPENVINO
    tolerance = 1e-2  # fp16 rounds each weight by up to 2^-11 relative

    def run(self, model: Model, config, ctx: Context) -> Model:
        files = save_ir(read_ir(model), ctx.step_dir("compress-fp16-openvino"), compress_to_fp16=True)
        return ir_result(model, files, precision="fp16")
