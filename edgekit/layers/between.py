"""The error one model file adds at each layer against its float graph, on given feeds: both run with every matched
layer's output exposed (the backend of edgekit.layers.gap.BACKENDS), summed sample by sample."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.layers.gap import LayerGap, Sums


def gaps_between(format_module: str, float_path: Path, candidate_path: Path, feeds: list[dict[str, np.ndarray]],
                 work_dir: Path, options: dict[str, Any] | None = None) -> list[LayerGap]:
    """Every layer of `float_path` matched in `candidate_path` with its SNR, cosines and max error, in graph order."""
    backend = importlib.import_module(format_module)
    matching = backend.match_layers(float_path, candidate_path)
    float_run = backend.ExposedRun(float_path, [layer.tensor for layer in matching.layers], work_dir, options)
    candidate_run = backend.ExposedRun(candidate_path, [layer.package_tensor for layer in matching.layers], work_dir, options)
    sums = {layer.tensor: Sums() for layer in matching.layers}
    skipped: set[str] = set()
    for feed in feeds:
        expected, got = float_run.run(feed), candidate_run.run(feed)
        for layer in matching.layers:
            ref, value = expected[layer.tensor], got[layer.package_tensor]
            if ref.shape != value.shape or not _floating(ref) or not _floating(value):
                skipped.add(layer.tensor)
                continue
            sums[layer.tensor].add(ref, value)
    snr = {name: layer_sums.snr_db() for name, layer_sums in sums.items() if name not in skipped and layer_sums.cosines}
    return [LayerGap(layer.tensor, layer.op, layer.module, snr[layer.tensor], float(np.mean(sums[layer.tensor].cosines)),
                     float(np.min(sums[layer.tensor].cosines)), sums[layer.tensor].max_abs, layer.precision,
                     min((snr[name] for name in layer.inputs if name in snr), default=math.inf), position, layer.node,
                     layer.package_tensor)
            for position, layer in enumerate(matching.layers) if layer.tensor in snr]


def _floating(value: np.ndarray) -> bool:
    return np.issubdtype(value.dtype, np.floating)
