"""The package manifest: typed and versioned, written by the compile side and checked by the runtime before use.

Its JSON Schema is generated from these classes and published at `docs/manifest.schema.json` (a test keeps it
current). `Manifest.from_dict` accepts the current schema and earlier ones (upgraded on read); anything else,
an unknown field or a value of the wrong type is refused naming the field. Records that passes fill in their own
words (a pruning report, a fallback list) stay mappings; what the runtime, bench, console and demo read is typed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from edgekit.errors import UserError
from edgekit.schema import build, json_schema
from edgekit.spec import TensorSpec

SCHEMA_VERSION = 6
# v1 → v2: an unmeasured package's `metrics` is null instead of {}; v1 packages of earlier edgekits may also lack
# `cpu`, `isa_choice`, `float_ops`, `fallback`, `reports` and `data.report`, which later versions keep optional.
# v2 → v3: `golden` (the self-test samples) is new and optional, so a v2 manifest reads as it is.
# v3 → v4: a verdict names its output, why its metric, the worst sample and its limit; `metrics.judged` holds every
# judged output's verdict and the latency its p50's confidence interval — all optional, so a v3 manifest reads as it is.
# v4 → v5: the bench record keeps its raw samples, the warm load, whether the load was cold, and the model files' hash —
# all optional, so a v4 manifest reads as it is.
# v5 → v6: `layers` (the error the package adds at each layer, measured at build time), `layers_skipped` (why it was
# not) and `precision_plan` (a mixed-precision pass's choices) — all optional, so a v5 manifest reads as it is.
UPGRADES = {1: lambda data: {**data, "metrics": data.get("metrics") or None}, 2: lambda data: data, 3: lambda data: data,
            4: lambda data: data, 5: lambda data: data}


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file of the package, relative to its root, with the sha256 the runtime checks before loading it."""

    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """The target the package was built for: its runtime options are the ones the runtime opens it with."""

    name: str
    device: str
    runtime: str
    format: str
    options: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    isa: dict[str, Any] = field(default_factory=dict)  # the instruction set its CPU-dependent choices were made for


@dataclass(frozen=True, slots=True)
class CpuRecord:
    """The machine the figures were measured on."""

    model: str
    machine: str
    flags: tuple[str, ...]
    isa: str


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds per run over the timed runs (percentiles by linear interpolation)."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    std: float
    p50_low: float | None = None  # the p50's 95% confidence interval, from the order statistics of the timed runs
    p50_high: float | None = None
    samples: tuple[float, ...] = ()  # every timed run, in the order it ran (p50 is their median)


@dataclass(frozen=True, slots=True)
class BenchRecord:
    """What `edgekit bench` measured, with the conditions it measured under."""

    package: str
    target: str
    runtime: str
    precision: str
    file_bytes: int
    load_ms: float  # the first load in the measuring process: cold (the runtime's import included) where `cold_load`
    first_run_ms: float
    latency_ms: Latency
    throughput_per_s: float
    peak_rss_mb: float
    rss_growth_mb: float
    conditions: dict[str, Any]  # threads, batch, runs, warmup, input shapes, CPU, its flags and frequency, runtime version
    warm_load_ms: float | None = None  # a second load of the same package in that process
    cold_load: bool | None = None  # whether the first load imported the runtime (a fresh process, as `edgekit bench`)
    model_sha256: str = ""  # one hash over the model files' paths and sha256s: the same model wherever it lies


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """One output's metric: the mean over samples, the source's value, the drop and its limit; the worst sample's
    value, drop and limit; how many samples' task reading (class, text, mask) changed; why this metric."""

    metric: str
    value: float
    reference: float | None
    drop: float
    limit: float | None
    ok: bool
    output: str = ""
    reason: str = ""
    worst: float | None = None
    worst_drop: float | None = None
    worst_limit: float | None = None
    worst_sample: int | None = None
    changed: int | None = None
    samples: int = 0


@dataclass(frozen=True, slots=True)
class Metrics:
    """The package measured against the source on the evaluation data, and its speed."""

    fidelity: dict[str, Any]  # cosine_mean, cosine_min, max_abs, mse …; top1_agreement and accuracy where they apply
    verdict: VerdictRecord  # the deciding one of `judged`: a failing output's, else the one nearest its limits
    bench: BenchRecord
    judged: tuple[VerdictRecord, ...] = ()  # every judged output's verdict


@dataclass(frozen=True, slots=True)
class Golden:
    """The package's self-test: sample inputs and the outputs it gave where it was built (an .npz, no pickles)."""

    file: FileEntry
    samples: int
    precision: str  # what the runtime computed in when the outputs were recorded


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """One layer's error against the source's float graph over the samples, errors of the layers before it included
    (`edgekit diff` explains each field). An infinite value is null: `snr_db` no error at all (or, at cosine 0, no
    signal), `input_snr_db` and `loss_db` it reads only the model's inputs and weights, `max_abs` an infinite error."""

    tensor: str  # the layer's output in the float graph
    op: str
    module: str  # the source module path, else the node's name
    snr_db: float | None
    cosine_mean: float
    cosine_worst: float
    max_abs: float | None
    precision: str | None  # what the package computes it in
    input_snr_db: float | None = None  # the lowest SNR of the compared layers feeding it
    loss_db: float | None = None  # input_snr_db - snr_db: what this layer itself loses


@dataclass(frozen=True, slots=True)
class LayersRecord:
    """The error the package adds at each layer, measured when it was built (`edgekit diff` on fewer samples): the
    float graph before its first lossy step and the package, both with every layer's output exposed, on this CPU."""

    samples: int
    data: str  # the evaluation data's origin (its first `samples`)
    reference_steps: tuple[str, ...]  # the package's steps that made the float graph
    reference_cached: int
    lossy_step: str | None
    reference_layers: int  # layers (non-layout ops) of the float graph
    covered_layers: int  # of those, the ones a compared layer holds
    matched_by_name: int
    matched_by_node: int
    skipped: int  # matched layers left out: non-float values, or shapes that differ
    exposed_cosine_worst: float | None  # package outputs with layers exposed vs as shipped
    layers: tuple[LayerRecord, ...]  # every compared layer, worst (lowest SNR) first


@dataclass(frozen=True, slots=True)
class Manifest:
    """manifest.json of an edgekit package."""

    schema: Literal[6]  # SCHEMA_VERSION
    edgekit: str
    created: str
    target: TargetRecord
    runtime: str
    format: str
    precision: str
    files: tuple[FileEntry, ...]  # the main model file first
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    cpu: CpuRecord | None = None
    recipe: dict[str, Any] = field(default_factory=dict)  # the recipe as given and the passes as applied
    reports: tuple[dict[str, Any], ...] = ()  # what passes measured: pruning sizes, distillation losses
    fallback: dict[str, Any] | None = None  # nodes an accuracy-aware quantizer kept in float, and what each cost
    isa_choice: dict[str, Any] | None = None  # CPU-dependent choices a pass made for the target's ISA
    float_ops: dict[str, Any] | None = None  # op types a quantizer left in float, with counts
    steps: tuple[dict[str, Any], ...] = ()  # each step's time, whether it came from the cache, its fidelity check
    provenance: dict[str, Any] = field(default_factory=dict)  # source, exporter, library versions
    data: dict[str, Any] = field(default_factory=dict)  # calibration / evaluation statistics and the data report
    metrics: Metrics | None = None  # None: the target cannot run where the package was built
    auto: dict[str, Any] | None = None  # `--recipe auto`: the tolerance and every candidate measured
    golden: Golden | None = None  # None: the target cannot run where the package was built
    layers: LayersRecord | None = None  # None: no lossy step, not ONNX/OpenVINO, not run here, or `layers_skipped`
    layers_skipped: str | None = None  # why the layers of a lossy package were not measured
    precision_plan: dict[str, Any] | None = None  # a mixed-precision pass's choice per layer, and what it measured

    @property
    def entries(self) -> tuple[FileEntry, ...]:
        """Every file the manifest lists and hashes: the model files and the golden self-test samples."""
        return (*self.files, *((self.golden.file,) if self.golden else ()))

    @property
    def file_bytes(self) -> int:
        return sum(entry.bytes for entry in self.files)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        """A checked Manifest from parsed JSON; an earlier schema version is upgraded, any other refused."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: the manifest is not a JSON object")
        version = data.get("schema")
        escaped = _control_characters(data, "manifest")
        if escaped:
            raise UserError(f"{where}: {escaped} holds control characters (terminal escape sequences); refused")
        known = isinstance(version, int) and not isinstance(version, bool) and 1 <= version <= SCHEMA_VERSION
        if not known:
            newer = isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION
            raise UserError(f"{where}: manifest schema {version!r} is not one of 1..{SCHEMA_VERSION}; "
                            + ("upgrade edgekit to open it" if newer else "rebuild the package"))
        while data["schema"] != SCHEMA_VERSION:
            data = {**UPGRADES[data["schema"]](data), "schema": data["schema"] + 1}
        return build(cls, data, f"{where}: manifest")


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 (but tab and newline), DEL, C1


def _control_characters(value: Any, where: str) -> str | None:
    """Where in parsed JSON a string (or key) holds a control character that would drive a terminal, or None."""
    if isinstance(value, str):
        return where if CONTROL.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _control_characters(key, f"{where} key") or _control_characters(item, f"{where}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _control_characters(item, f"{where}[{index}]")
            if found:
                return found
    return None


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema published at docs/manifest.schema.json."""
    return json_schema(Manifest, title=f"edgekit package manifest, schema {SCHEMA_VERSION}")


if __name__ == "__main__":  # python -m edgekit.manifest > docs/manifest.schema.json
    import json

    print(json.dumps(manifest_schema(), indent=2))
