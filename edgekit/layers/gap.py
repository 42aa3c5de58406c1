"""The error a package adds at each layer: its source's float graph and the package run side by side on the evaluation
data with every layer's output exposed, summed sample by sample (SNR, cosine, max error), worst layer first."""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedOnTarget, UserError
from edgekit.manifest import LayersRecord
from edgekit.model import Format
from edgekit.schema import build
from edgekit.spec import TensorSpec

log = logging.getLogger("edgekit")
SENTINEL = 1e30  # a value this far out is a mask, not a signal
BACKENDS = {"onnx": "edgekit.layers.onnx_layers", "openvino": "edgekit.layers.openvino_layers"}  # by package format


@dataclass(frozen=True, slots=True)
class LayerGap:
    """One layer: how far the package's value is from the float graph's over the samples, errors of the layers
    before it included. `snr_db` is 10·log10(Σref² / Σ(ref−package)²) over every sample (inf: identical); cosines
    are per sample, flattened. `input_snr_db` is the lowest SNR of the compared layers feeding it (inf: it reads only
    the model's inputs and weights), so `input_snr_db - snr_db` is what this layer itself loses."""

    tensor: str  # the layer's output in the float graph
    op: str
    module: str  # the source module path, else the node's name
    snr_db: float
    cosine_mean: float
    cosine_worst: float
    max_abs: float
    precision: str | None  # what the package computes it in (int8 when its inputs come through DequantizeLinear)
    input_snr_db: float = math.inf
    position: int = 0  # its place in the float graph's order (0: first)
    node: str = ""
    package_tensor: str = ""  # the package graph's tensor compared (after the layer's own Q→DQ, where it has one)

    @property
    def loss_db(self) -> float | None:
        """The SNR this layer loses against its inputs'; None where its inputs are exact."""
        return self.input_snr_db - self.snr_db if math.isfinite(self.input_snr_db) else None


@dataclass(frozen=True, slots=True)
class LayerDiff:
    """Every matched layer, worst first, with what was compared and how the float reference was made."""

    source: str
    package: str
    target: str
    precision: str
    data: str
    samples: int
    layers: tuple[LayerGap, ...]
    reference_layers: int  # layers (non-layout ops) of the float graph
    covered_layers: int  # of those, the ones a compared layer holds (its own output, or fused into it)
    matched_by_name: int
    matched_by_node: int
    skipped: int  # matched layers left out: non-float values, or shapes that differ (a pruned layer)
    reference_steps: tuple[str, ...]  # the package's own float steps, replayed on the source
    reference_cached: int  # how many of them came from the step cache
    lossy_step: str | None  # the package's first step that changes numbers
    exposed_cosine_worst: float | None  # package outputs with layers exposed vs as shipped: 1.0 = exposing changed nothing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, each layer's `loss_db` added: an infinite value is null (an SNR: no error at all)."""
        record = dataclasses.asdict(self)
        for layer, gap in zip(record["layers"], self.layers):
            layer["loss_db"] = gap.loss_db
            for key in ("snr_db", "input_snr_db", "max_abs", "loss_db"):
                layer[key] = layer[key] if layer[key] is not None and math.isfinite(layer[key]) else None
        return record

    def record(self) -> LayersRecord:
        """What a manifest keeps of it: all but what the manifest names already (source, package, target, precision)
        and each layer's place in the graphs (position, node, package tensor)."""
        record = {key: value for key, value in self.to_dict().items() if key not in ("source", "package", "target", "precision")}
        record["layers"] = [{key: value for key, value in layer.items() if key not in ("position", "node", "package_tensor")}
                            for layer in record["layers"]]
        return build(LayersRecord, record, "layers record")


class Sums:
    """One layer's running sums over samples; nothing but scalars is kept."""

    def __init__(self) -> None:
        self.signal = self.noise = self.max_abs = 0.0
        self.cosines: list[float] = []

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """One sample; values equal in both (infinities of a mask too) add no error, infinite ones no signal, nor do
        mask sentinels (beyond ±1e30, as float32-min attention masks) where both hold one of the same sign: they would
        swamp the signal of the values beside them (scores + mask before a Softmax)."""
        ref, got = reference.astype(np.float64).ravel(), candidate.astype(np.float64).ravel()
        with np.errstate(invalid="ignore", over="ignore"):
            error = ref - got
            if not (np.abs(ref).max(initial=0.0) <= SENTINEL and np.abs(got).max(initial=0.0) <= SENTINEL):
                sentinel = (np.abs(ref) > SENTINEL) & (np.abs(got) > SENTINEL) & (np.sign(ref) == np.sign(got))
                error = np.where((ref == got) | sentinel, 0.0, error)
                finite = np.isfinite(ref) & np.isfinite(got) & ~sentinel
                ref, got = ref[finite], got[finite]  # else every value is finite and no sentinel: all count
        self.signal += dot(ref, ref)
        self.noise += dot(error, error)
        self.max_abs = max(self.max_abs, float(np.abs(error).max(initial=0.0)))
        self.cosines.append(cosine(ref, got))

    def snr_db(self) -> float:
        if self.noise == 0.0:
            return math.inf
        return 10 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """The dot product of two vectors in numpy's own loop, not BLAS: OpenBLAS splits a long one over threads that wait
    for cores the runtime's own threads keep spinning on (measured 12 ms for 32k values on 2 busy cores, not 0.02)."""
    return float(np.einsum("i,i->", a, b))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of flattened values; two zero vectors agree (1.0), one alone does not (0.0)."""
    norms = math.sqrt(dot(a, a) * dot(b, b))
    if norms == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.clip(dot(a, b) / norms, -1.0, 1.0))


def layer_gap(source: str | Path, package: str | Path, eval_data: str | Path | None = None,
              inputs: tuple[TensorSpec, ...] = (), samples: int = 64, cache_dir: Path | None = None,
              trust_remote_code: bool = False, adapters: tuple[str | Path, ...] = ()) -> list[LayerGap]:
    """The error `package` adds at each layer against `source`, worst (lowest SNR) first; see `diff_layers`."""
    return list(diff_layers(source, package, eval_data, inputs, samples, cache_dir, trust_remote_code, adapters).layers)


def diff_layers(source: str | Path, package: str | Path, eval_data: str | Path | None = None,
                inputs: tuple[TensorSpec, ...] = (), samples: int = 64, cache_dir: Path | None = None,
                trust_remote_code: bool = False, adapters: tuple[str | Path, ...] = ()) -> LayerDiff:
    """Compare `package` with `source` (what `compile` took, with the same `inputs`; default the package's, and the
    same PEFT `adapters` merged in the same order) layer by layer on the first `samples` of `eval_data` (default: the
    data the package was measured on).

    The float reference is `source` through the package's own steps before its first lossy one (from the step cache
    in `cache_dir` where the compile left them). Both run in the package's runtime (ONNX Runtime, OpenVINO) on this CPU
    with every layer's output added as a graph output: the runtime then cannot fuse an exposed op into an integer kernel,
    so an int8 layer runs as its quantize-dequantize arithmetic in float; `exposed_cosine_worst` says how close that
    stays to the package as shipped.
    """
    from edgekit.ingest import ingest
    from edgekit.layers.reference import check_adapters, check_source, evaluation_data, reference_model
    from edgekit.package import read_package
    from edgekit.scratch import owned_scratch

    opened = read_package(package)
    manifest = opened.manifest
    if manifest.format not in BACKENDS:
        raise UnsupportedOnTarget(f"edgekit diff compares {' and '.join(BACKENDS)} packages layer by layer; "
                                  f"{package} is {manifest.format} ({manifest.target.name})")
    check_adapters(manifest, adapters, str(package))
    model = ingest(source, inputs or manifest.inputs, trust_remote_code, adapters)
    check_source(model, manifest, str(source), str(package))
    data = evaluation_data(eval_data, manifest, model, samples)
    work_dir = owned_scratch(tempfile.gettempdir(), "edgekit-diff-")
    try:
        reference = reference_model(model, manifest, work_dir, cache_dir)
        if reference.lossy_step is None:
            log.info("diff: every step of %s keeps the numbers; the layers should agree to float rounding", package)
        return compare_layers(reference, opened, data, work_dir, str(source), str(package))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def compare_layers(reference, opened, data, work_dir: Path, source: str, package: str) -> LayerDiff:
    """The `reference` float model (layers/reference.py) and the `opened` package run on `data`, layer by layer."""
    import importlib

    backend = importlib.import_module(BACKENDS[opened.manifest.format])
    options = opened.manifest.target.options
    lineage = tuple(model.path for model in reference.lineage if model.format is Format.ONNX)
    matching = backend.match_layers(reference.model.path, opened.main_file, lineage)
    if not matching.layers:
        raise UserError(f"no layer of {package} matches one of {source}'s float graph "
                        f"({matching.reference_layers} layers): was it built from another model?")
    feeds = list(data.feeds())
    shipped = backend.plain_outputs(opened.main_file, feeds, options)
    gaps, skipped, exposed_worst = measure_gaps(backend, matching, reference.model.path, opened.main_file, feeds,
                                                work_dir, options, shipped)
    gaps.sort(key=lambda gap: (gap.snr_db, gap.cosine_worst, gap.position))
    return LayerDiff(source, package, opened.manifest.target.name, opened.manifest.precision, data.origin, len(feeds),
                     tuple(gaps), matching.reference_layers, matching.covered, matching.by_name, matching.by_node, skipped,
                     reference.steps, reference.cached, reference.lossy_step, exposed_worst if feeds else None)


def gaps_between(format_module: str, float_path: Path, candidate_path: Path, feeds: list[dict[str, np.ndarray]],
                 work_dir: Path, options: dict[str, Any] | None = None) -> list[LayerGap]:
    """Every layer of the float graph at `float_path` matched in `candidate_path` (a model file of the same format,
    `format_module` its edgekit.layers backend) with the error it holds on `feeds`, in graph order."""
    import importlib

    backend = importlib.import_module(format_module)
    matching = backend.match_layers(float_path, candidate_path)
    return measure_gaps(backend, matching, float_path, candidate_path, feeds, work_dir, options or {})[0]


def measure_gaps(backend, matching, float_path: Path, candidate_path: Path, feeds: list[dict[str, np.ndarray]],
                 work_dir: Path, options: dict[str, Any], shipped=None) -> tuple[list[LayerGap], int, float]:
    """Both graphs run with the matched layers exposed, summed sample by sample: the gaps in graph order, how many
    matched layers were left out (non-float values, or shapes that differ), and the worst cosine between the
    candidate's outputs exposed and `shipped` (its outputs as it runs unexposed, per feed; None: not compared)."""
    float_run = backend.ExposedRun(float_path, [layer.tensor for layer in matching.layers], work_dir, options)
    candidate_run = backend.ExposedRun(candidate_path, [layer.package_tensor for layer in matching.layers], work_dir, options)
    sums = {layer.tensor: Sums() for layer in matching.layers}
    kinds: dict[str, str] = {}
    skipped: set[str] = set()
    exposed_worst = 1.0
    for feed, plain in zip(feeds, shipped if shipped is not None else [None] * len(feeds)):
        expected, got = float_run.run(feed), candidate_run.run(feed)
        for name, value in (plain or {}).items():
            exposed_worst = min(exposed_worst, cosine(value.astype(np.float64).ravel(), got[name].astype(np.float64).ravel()))
        for layer in matching.layers:
            ref, candidate = expected[layer.tensor], got[layer.package_tensor]
            if ref.shape != candidate.shape or not _floating(ref) or not _floating(candidate):
                skipped.add(layer.tensor)
                continue
            kinds[layer.tensor] = "fp16" if candidate.dtype == np.float16 and layer.precision == "fp32" else layer.precision
            sums[layer.tensor].add(ref, candidate)
    snr = {name: layer_sums.snr_db() for name, layer_sums in sums.items() if name not in skipped and layer_sums.cosines}
    gaps = [LayerGap(layer.tensor, layer.op, layer.module, snr[layer.tensor], float(np.mean(sums[layer.tensor].cosines)),
                     float(np.min(sums[layer.tensor].cosines)), sums[layer.tensor].max_abs, kinds[layer.tensor],
                     min((snr[name] for name in layer.inputs if name in snr), default=math.inf), position, layer.node,
                     layer.package_tensor)
            for position, layer in enumerate(matching.layers) if layer.tensor in snr]
    return gaps, len(skipped), exposed_worst


def _floating(value: np.ndarray) -> bool:
    return np.issubdtype(value.dtype, np.floating)
