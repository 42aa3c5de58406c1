"""optimize-onnx: shape inference, constant folding and fusions by a maintained optimizer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from edgekit.digest import files_sha256
from edgekit.errors import MissingBackend
from edgekit.ingest.onnx import graph_specs, load_graph, onnx_files
from edgekit.model import Format, Model
from edgekit.passes.base import Context, Pass

EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB cap, with headroom


@dataclass(frozen=True, slots=True)
class OptimizeOnnxConfig:
    # onnxslim: portable graph rewrites; ort-basic: ONNX Runtime's offline basic level (portable too)
    engine: Literal["onnxslim", "ort-basic"] = "onnxslim"


class OptimizeOnnx(Pass):
    name = "optimize-onnx"
    accepts = frozenset({Format.ONNX})
    produces = Format.ONNX
    Config = OptimizeOnnxConfig
    tolerance = 1e-4

    def run(self, model: Model, config: OptimizeOnnxConfig, ctx: Context) -> Model:
        out = ctx.step_dir("optimize-onnx") / "model.onnx"
        if config.engine == "onnxslim":
            _slim(model, out)
        else:
            _ort_basic(model, out)
        graph = load_graph(out)
        files = onnx_files(out, graph)
        # the inputs are the model's (the user's --input wins over the file); outputs as the optimizer inferred them
        return model.derive(files=files, outputs=graph_specs(graph.graph.output, set()),
                            meta={"content_hash": files_sha256(files)})


def _slim(model: Model, out) -> None:
    try:
        import onnx
        import onnxslim
    except ImportError:
        raise MissingBackend("onnxslim", "onnx", "optimize-onnx") from None
    logging.getLogger("onnxslim").setLevel(logging.WARNING)
    slimmed = onnxslim.slim(str(model.path))
    external = model.size_bytes() > EXTERNAL_DATA_BYTES
    onnx.save(slimmed, str(out), save_as_external_data=external, location=out.name + ".data")


def _ort_basic(model: Model, out) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingBackend("onnxruntime", "onnx", "optimize-onnx with engine ort-basic") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    if model.size_bytes() > EXTERNAL_DATA_BYTES:
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", out.name + ".data")
    ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
