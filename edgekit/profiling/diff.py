"""Where the time went between two profiles of one model: quantize/dequantize, layout, float ops left in an int8
package, ops no int8 kernel covers, the int8 kernels themselves, and each source module."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

from edgekit.errors import UserError
from edgekit.profiling.naming import FLOATS, LOW_PRECISIONS
from edgekit.profiling.record import OpTime, Profile
from edgekit.schema import build

# ORT's (Dynamic)QuantizeLinear / DequantizeLinear, OpenVINO's FakeQuantize / Convert, XNNPACK's Convert, ExecuTorch's
# quantize_per_tensor / dequantize_per_channel / choose_qparams_…, ONNX Cast
CONVERSION = re.compile(r"(dynamic)?(de)?quantize(linear|_per_\w+)?|fakequantize|convert|cast|choose_qparams\w*")
LAYOUT = frozenset({"transpose", "reorder", "reorderinput", "reorderoutput", "permute", "permute_copy", "transpose_copy"})
OVERHEAD = "DelegateCall"
# buckets in the order findings are listed, with their titles
TITLES = {
    "conversion": "Quantize/Dequantize overhead",
    "layout": "layout transposes/reorders",
    "float_left": "ops left in float in the int8 package",
    "not_covered": "ops the int8 kernels do not cover (int8 in neither package)",
    "int8": "int8 compute kernels (and their float counterparts)",
    "unknown": "compute the profiler gives no precision for",
    "compute": "other compute",
    "overhead": "delegate calls outside their ops",
}
ALWAYS = frozenset({"conversion", "layout"})  # listed even when empty ("none"); with an int8 side, its buckets too
INT8_BUCKETS = frozenset({"float_left", "not_covered", "int8"})
MODULE_LINES = 8


def diff_profiles(first: Profile | dict[str, Any], second: Profile | dict[str, Any]) -> dict[str, Any]:
    """Profiles A and B (as profile_package gives them) compared by each op's median time per run: one finding per
    bucket of ops with each side's time and share, the deltas per source module, and a line that says where the
    difference went."""
    a, b = (value if isinstance(value, Profile) else build(Profile, value, f"profile {side}")
            for side, value in (("A", first), ("B", second)))
    for side, value in (("A", a), ("B", b)):
        if not value.available:
            raise UserError(f"profile {side} ({value.package}) has no per-op times: {value.reason}")
    quantized = _quantized_side(a, b)
    families = _families(a, b, quantized)
    sides = {"A": _buckets(a, families, quantized == "A"), "B": _buckets(b, families, quantized == "B")}
    listed = ALWAYS | (INT8_BUCKETS if quantized else frozenset())
    findings = [_total(a, b)]
    for bucket, title in TITLES.items():
        if bucket not in listed and not any(bucket in ops for ops in sides.values()):
            continue
        findings.append(_finding(bucket, title, sides["A"].get(bucket, []), sides["B"].get(bucket, []), a, b))
    return {"a": _side(a), "b": _side(b), "quantized": quantized, "findings": findings,
            "modules": _modules(a, b), "summary": _summary(findings)}


def family(op_type: str) -> str:
    """The float op an int8 one stands for: QLinearConv, ConvInteger, FusedConv → Conv; QGemm → Gemm;
    FullyConnectedQuantizedLegacy → FullyConnected."""
    name = re.sub(r"^(QLinear|Fused)", "", op_type)
    name = re.sub(r"^Q(?=[A-Z][a-z])", "", name)
    return re.sub(r"(Integer|QuantizedLegacy|Quantized)$", "", name)


def kind(op: OpTime) -> str:
    """conversion, layout, overhead or compute."""
    if CONVERSION.fullmatch(op.type.lower()) or "→" in (op.precision or ""):
        return "conversion"
    if op.type.lower() in LAYOUT:
        return "layout"
    return "overhead" if op.type == OVERHEAD else "compute"


def _quantized_side(a: Profile, b: Profile) -> str | None:
    """The side built in an int precision (its manifest's), else the one whose compute runs more in int8, else None."""
    built = [side for side, value in (("A", a), ("B", b)) if value.precision.startswith("int")]
    if len(built) == 1:
        return built[0]
    low = {side: sum(op.p50_ms for op in value.ops if kind(op) == "compute" and op.precision in LOW_PRECISIONS)
           for side, value in (("A", a), ("B", b))}
    return max(low, key=low.get) if low["A"] != low["B"] else None


def _families(a: Profile, b: Profile, quantized: str | None) -> dict[str, set[str]]:
    """Op families by bucket: int8 (where either side runs one in int8), and what the quantized side runs the others
    in: float though int8 kernels run that family (float_left), float with no int8 kernel of it (not_covered), unknown."""
    low = {family(op.type) for value in (a, b) for op in value.ops if kind(op) == "compute" and op.precision in LOW_PRECISIONS}
    families: dict[str, set[str]] = {"int8": low, "float_left": set(), "not_covered": set(), "unknown": set()}
    target = {"A": a, "B": b}.get(quantized or "")
    for op in target.ops if target else []:
        if kind(op) == "compute":
            families[_compute_bucket(op, families, True)].add(family(op.type))
    return families


def _buckets(value: Profile, families: dict[str, set[str]], quantized: bool) -> dict[str, list[OpTime]]:
    buckets: dict[str, list[OpTime]] = defaultdict(list)
    for op in value.ops:
        bucket = kind(op)
        if bucket == "compute" and families["int8"]:
            bucket = _compute_bucket(op, families, quantized)
        buckets[bucket].append(op)
    return buckets


def _compute_bucket(op: OpTime, families: dict[str, set[str]], quantized: bool) -> str:
    name = family(op.type)
    if quantized:  # what it ran in says it
        if op.precision in LOW_PRECISIONS:
            return "int8"
        if op.precision in FLOATS:
            return "float_left" if name in families["int8"] else "not_covered"
        return "unknown"
    # the float side: by what its op's family runs in on the quantized side
    return next((bucket for bucket in ("int8", "not_covered", "unknown") if name in families[bucket]), "compute")


def _finding(bucket: str, title: str, a_ops: list[OpTime], b_ops: list[OpTime], a: Profile, b: Profile) -> dict[str, Any]:
    a_ms, b_ms = _sum(a_ops), _sum(b_ops)
    a_share, b_share = _share(a_ms, _sum(a.ops)), _share(b_ms, _sum(b.ops))
    line = f"{title}: none" if not a_ops and not b_ops else (
            f"{title}: B {_ms(b_ms)} ({b_share:.0%} of B){_listed(b_ops)}; A {_ms(a_ms)} ({a_share:.0%} of A)"
            f"{_listed(a_ops)}; B−A {_signed(b_ms - a_ms)}")
    return {"bucket": bucket, "title": title, "a_ms": a_ms, "b_ms": b_ms, "delta_ms": b_ms - a_ms, "a_share": a_share,
            "b_share": b_share, "a_ops": [op.name for op in a_ops], "b_ops": [op.name for op in b_ops], "line": line}


def _total(a: Profile, b: Profile) -> dict[str, Any]:
    a_ms, b_ms = _sum(a.ops), _sum(b.ops)
    ratio = f" (B/A {b_ms / a_ms:.2f}x)" if a_ms else ""
    line = (f"ops total (medians): A {a.precision} {_ms(a_ms)} in {len(a.ops)} ops, B {b.precision} {_ms(b_ms)} in "
            f"{len(b.ops)} ops: B−A {_signed(b_ms - a_ms)}{ratio}; one whole run with the profiler on (median): "
            f"A {_ms(a.wall_p50_ms)}, B {_ms(b.wall_p50_ms)}")
    return {"bucket": "total", "title": "ops total", "a_ms": a_ms, "b_ms": b_ms, "delta_ms": b_ms - a_ms,
            "a_share": 1.0, "b_share": 1.0, "a_ops": [op.name for op in a.ops], "b_ops": [op.name for op in b.ops],
            "line": line}


def _modules(a: Profile, b: Profile) -> list[dict[str, Any]]:
    """Time per source module on each side, largest change first (ops whose names carry no module are left out)."""
    times: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for index, value in enumerate((a, b)):
        for op in value.ops:
            if op.module:
                times[op.module][index] += op.p50_ms
    rows = [{"module": name, "a_ms": a_ms, "b_ms": b_ms, "delta_ms": b_ms - a_ms} for name, (a_ms, b_ms) in times.items()]
    return sorted(rows, key=lambda row: -abs(row["delta_ms"]))


def _summary(findings: list[dict[str, Any]]) -> str:
    """Where B−A went, bucket by bucket, largest change first."""
    parts = sorted(findings[1:], key=lambda finding: -abs(finding["delta_ms"]))
    changes = "; ".join(f"{f['title']} {_signed(f['delta_ms'])}" for f in parts if abs(f["delta_ms"]) >= 5e-4)
    return f"where B−A {_signed(findings[0]['delta_ms'])} went: {changes or 'no bucket changed by 0.5 µs or more'}"


def module_lines(modules: list[dict[str, Any]], limit: int = MODULE_LINES) -> list[str]:
    """One line per source module with the largest changes; or why there are none."""
    if not modules:
        return ["per source module: no op names in either package carry a source module name (the exporter's names, "
                "e.g. node_Conv_17, or an ExecuTorch program without an ETRecord)"]
    return [f"module {row['module']}: A {_ms(row['a_ms'])}, B {_ms(row['b_ms'])}, B−A {_signed(row['delta_ms'])}"
            for row in modules[:limit]]


def _side(value: Profile) -> dict[str, Any]:
    return {"package": value.package, "precision": value.precision, "runtime": value.runtime,
            "ops_ms": value.ops_ms, "wall_ms": value.wall_ms, "wall_p50_ms": value.wall_p50_ms, "ops": len(value.ops)}


def _listed(ops: list[OpTime]) -> str:
    if not ops:
        return ""
    counts = Counter(op.type for op in ops)
    return " in " + ", ".join(f"{name} ×{count}" if count > 1 else name for name, count in counts.most_common())


def _sum(ops: list[OpTime]) -> float:
    return sum(op.p50_ms for op in ops)


def _share(part: float, whole: float | None) -> float:
    return part / whole if whole else 0.0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f} ms" if abs(value) < 1 else f"{value:.2f} ms"


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + _ms(abs(value))
