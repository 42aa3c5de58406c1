"""upgrade-onnx-opset: raise an ONNX model's opset with ONNX's version converter.

The planner inserts it before a pass (or a target) that needs a newer opset than the model has:
a foreign model exported at opset 11 must not reach ORT's QDQ quantizer, which writes
per-channel `DequantizeLinear(axis=…)` (opset 13).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend, UnsupportedOnTarget
from edgekit.ingest.onnx import load_graph, onnx_files, opset_of
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass
from edgekit.passes.optimize import EXTERNAL_DATA_BYTES


@dataclass(frozen=True, slots=True)
class UpgradeOnnxOpsetConfig:
    opset: int = field(default=13, metadata={"range": (7, 23)})


class UpgradeOnnxOpset(Pass):
    name = "upgrade-onnx-opset"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX
    Config = UpgradeOnnxOpsetConfig
    tolerance = 1e-5  # the converter rewrites op signatures, not arithmetic

    def run(self, model: Model, config: UpgradeOnnxOpsetConfig, ctx: Context) -> Model:
        try:
            import onnx
            from onnx import version_converter
        except ImportError:
            raise MissingBackend("onnx", "onnx", "upgrade-onnx-opset") from None
        proto = load_graph(model.path, with_weights=True)
        if opset_of(proto) >= config.opset:
            return model
        try:
            upgraded = version_converter.convert_version(proto, config.opset)
            onnx.checker.check_model(upgraded)
        except Exception as error:  # the converter raises RuntimeError/ValidationError naming the op it cannot adapt
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UnsupportedOnTarget(
                f"upgrade-onnx-opset: the model's opset {opset_of(proto)} cannot be raised to {config.opset} "
                f"(needed downstream): {first}"
            ) from None
        out = ctx.step_dir("upgrade-onnx-opset") / "model.onnx"
        external = model.size_bytes() > EXTERNAL_DATA_BYTES
        onnx.save(upgraded, str(out), save_as_external_data=external, location=out.name + ".data")
        files = onnx_files(out)
        return model.derive(files=files, meta={"content_hash": files_sha256(files), "opset": config.opset})
