"""Quantization intents: a recipe says `quantize: {precision: int8, scheme: static}`; the target says which
passes do that on its toolchain (its `quantize:` section), and the pass maps the intent onto its own config."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from edgekit.errors import UnsupportedOnTarget, UserError
from edgekit.schema import build, to_dict

if TYPE_CHECKING:
    from edgekit.passes.base import Step
    from edgekit.target import Target

Scheme = Literal["static", "dynamic", "weight-only"]
Granularity = Literal["per-tensor", "per-channel", "per-group"]


@dataclass(frozen=True, slots=True)
class Budget:
    """What the mixed precision must hold: exactly one of `max_drop` (fidelity: promote until it holds), `size_mb`
    or `latency_ms` (cost: promote while it fits)."""

    max_drop: float | None = field(default=None, metadata={"range": (0.0, 1e9)})  # the mean's drop on `metric`
    worst: float | None = field(default=None, metadata={"range": (0.0, 1e9)})  # with max_drop: the worst sample's drop
    size_mb: float | None = field(default=None, metadata={"range": (0.001, 1e6)})  # model files, MB (10^6 bytes)
    latency_ms: float | None = field(default=None, metadata={"range": (0.001, 1e7)})  # p50 at batch 1, runtime threads
    metric: str = "auto"  # as a recipe's evaluate.metric (auto: judged by what the output is)
    eval_samples: int = field(default=1000, metadata={"range": (1, 100_000)})  # evaluation samples fidelity is measured on
    layer_samples: int = field(default=8, metadata={"range": (1, 10_000)})  # samples the layer gaps are measured on
    max_rounds: int = field(default=12, metadata={"range": (1, 1000)})  # candidates built after the first

    def objective(self) -> Literal["max_drop", "size_mb", "latency_ms"]:
        given = [name for name in ("max_drop", "size_mb", "latency_ms") if getattr(self, name) is not None]
        if len(given) != 1:
            raise UserError(f"budget: give exactly one of max_drop, size_mb, latency_ms (got {', '.join(given) or 'none'})")
        if self.worst is not None and given[0] != "max_drop":
            raise UserError("budget: worst bounds the worst sample's drop together with max_drop")
        return given[0]  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class QuantizeIntent:
    """What to quantize to, not with which toolchain. A field left unset takes the target's choice."""

    precision: Literal["int8", "int4"]
    # static: weights and activations, calibrated; dynamic: weights, activations quantized at run time;
    # weight-only: weights, float compute. Unset: the first scheme the target lists for the precision.
    scheme: Scheme | None = None
    granularity: Granularity | None = None  # of the weight scales
    group_size: int | None = field(default=None, metadata={"range": (8, 4096)})  # weights per scale, per-group only
    calibration_samples: int | None = field(default=None, metadata={"range": (1, 100_000)})  # static only
    budget: Budget | None = None  # mixed precision: each layer's precision chosen within it (passes/mixed.py)

    def key(self) -> str:
        return f"{self.precision}/{self.scheme}"

    def to_dict(self) -> dict:
        return {"quantize": {k: v for k, v in to_dict(self).items() if v is not None}}


def parse_intent(raw: dict, where: str) -> QuantizeIntent:
    """`{quantize: {...}}` → a checked QuantizeIntent."""
    extra = [key for key in raw if key != "quantize"]
    if extra:
        raise UserError(f"{where}: put the quantize intent's fields under 'quantize', not beside it: {', '.join(extra)}")
    intent = build(QuantizeIntent, raw["quantize"], f"{where} (quantize)")
    if intent.group_size is not None:
        if intent.granularity not in (None, "per-group"):
            raise UserError(f"{where} (quantize): group_size applies to granularity per-group, not {intent.granularity}")
        intent = replace(intent, granularity="per-group")
    return intent


def lower_intent(intent: QuantizeIntent, target: Target) -> tuple[tuple[Step, ...], str]:
    """The target's steps for `intent`, the last one configured from it, and which entry was used."""
    from edgekit.passes.base import get_pass

    offered = [key for key in target.quantize if key.startswith(f"{intent.precision}/")]
    key = offered[0] if intent.scheme is None and offered else intent.key()
    if key not in target.quantize:
        have = ", ".join(target.quantize) or "none"
        raise UnsupportedOnTarget(f"target {target.name} has no {intent.key() if intent.scheme else intent.precision} "
                                  f"quantization; it offers: {have}")
    steps = target.quantize[key]
    last = steps[-1]
    chosen = get_pass(last.pass_name)
    where = f"quantize {key} on target {target.name} ({last.pass_name})"
    overrides = chosen.from_intent(intent, last.config)
    if intent.budget is not None:
        if "budget" not in {item.name for item in fields(last.config)}:
            raise UnsupportedOnTarget(f"{where}: {last.pass_name} has no per-layer mixed precision, so no budget; "
                                      f"targets on ONNX Runtime (int8 static/dynamic) and OpenVINO (int8) have it")
        intent.budget.objective()
        overrides = {**overrides, "budget": to_dict(intent.budget)}
    config = build(type(last.config), {**to_dict(last.config), **overrides}, where)
    return (*steps[:-1], replace(last, config=config)), key


def granularity_fields(intent: QuantizeIntent, pass_name: str, granularities: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The config fields for the intent's granularity from `granularities` (what the pass offers); others refused."""
    if intent.granularity is None:
        return {}
    if intent.granularity not in granularities:
        raise UnsupportedOnTarget(f"{pass_name} cannot quantize {intent.precision} weights {intent.granularity}; "
                                  f"it offers {', '.join(granularities)}")
    return dict(granularities[intent.granularity])
