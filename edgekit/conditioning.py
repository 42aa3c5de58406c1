"""How much a model amplifies fp32 rounding: its fp32 outputs against the same graph computed in float64.

Some models are ill-conditioned in fp32 (a LayerNorm written as E[x²] - E[x]², a sigmoid mask over a
deep decoder): two correct fp32 implementations of them — ONNX Runtime and LiteRT, with their own
kernels and fast transcendental approximations — differ by far more than a well-conditioned model's
1e-6. The probe runs the graph with onnx-to-torch's module in fp32 and in float64 on the fidelity
feeds; `float_noise` is the largest deviation relative to the outputs' magnitude (first output, as
FidelityCheck compares). ONNX models are probed directly, .tflite ones through tflite-to-onnx, a
torch model only when it is onnx-to-torch's module. Any model the probe cannot express gives None.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from edgekit.model import Format, Model
from edgekit.spec import TensorSpec

log = logging.getLogger("edgekit")


def float_noise(model: Model, feeds: list[dict[str, np.ndarray]]) -> float | None:
    """The model's fp32 rounding noise on `feeds` (those shaped as the first), or None where it cannot be probed."""
    if not feeds:
        return None
    shapes = {name: np.shape(value) for name, value in feeds[0].items()}
    same = [feed for feed in feeds if {name: np.shape(value) for name, value in feed.items()} == shapes]
    try:
        module = _module(model, same[0])
        if module is None:
            return None
        from edgekit.passes.onnx_module import float_noise as module_noise

        return module_noise(module, same)
    except Exception as error:  # the probe is optional: a graph it cannot express (or run in float64) gives None
        log.debug("no float-noise probe for this %s model: %s: %s", model.format.value, type(error).__name__, error)
        return None


def _module(model: Model, feed: dict[str, np.ndarray]):
    from edgekit.passes.onnx_module import OnnxGraph, build_module
    from edgekit.passes.onnx_torch import static_graph, unsupported_ops

    if model.format is Format.TORCH:
        return model.module if isinstance(model.module, OnnxGraph) else None
    if model.format is Format.TFLITE:
        return _tflite_module(model, feed)
    if model.format is not Format.ONNX:
        return None
    specs = tuple(TensorSpec(spec.name, tuple(np.shape(feed[spec.name])), spec.dtype) for spec in model.inputs)
    proto = static_graph(model, specs)
    if unsupported_ops(proto):
        return None
    return build_module(proto, tuple(spec.name for spec in specs), tuple(spec.name for spec in model.outputs))


def _tflite_module(model: Model, feed: dict[str, np.ndarray]):
    from edgekit.passes.base import Context
    from edgekit.passes.tflite_onnx import convert_tflite_to_onnx

    with tempfile.TemporaryDirectory(prefix="edgekit-noise-") as work:
        out = Path(work) / "model.onnx"
        convert_tflite_to_onnx(model, out, Context(Path(work)))
        return _module(model.derive(format=Format.ONNX, files=(out,)), feed)
