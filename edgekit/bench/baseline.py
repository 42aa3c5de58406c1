"""`edgekit bench --baseline OLD.json`: each package's p50 against its record in an earlier `edgekit bench --json`
output; a change is called only beyond the noise (edgekit.bench.noise), and a comparison across CPUs or conditions
says so."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgekit.bench.noise import Median, faster_beyond_noise
from edgekit.errors import UserError
from edgekit.manifest import BenchRecord, _control_characters
from edgekit.schema import build

REGRESSION_MARGIN = 0.05  # slower beyond the noise: the intervals apart and the old p50 at least this far below the new
BASELINE_LIMIT = 64 * 2**20  # bytes; a bench JSON of a few packages with their samples is far smaller
CPU_CONDITIONS = ("cpu", "machine", "cpu_flags")  # a difference here makes the comparison one across CPUs
RUN_CONDITIONS = ("threads", "batch", "input_shapes", "runtime_version")


@dataclass(frozen=True, slots=True)
class Comparison:
    """One package's p50 now against its baseline record (None: no record matched)."""

    package: str
    verdict: Literal["faster", "same", "slower", "unmatched"]
    new: Median
    old: Median | None
    matched_by: str  # "name" (the package's folder or file name), "model" (the same model files), or ""
    differences: tuple[str, ...]  # conditions that differ between the two records, in words
    across_cpus: bool

    @property
    def change(self) -> float | None:
        """The new p50 relative to the old one, minus one (+0.10: 10% slower)."""
        return None if self.old is None else self.new.p50 / self.old.p50 - 1.0


def read_baseline(path: str | Path) -> list[BenchRecord]:
    """The records of an `edgekit bench --json` output; anything else is a UserError naming what is wrong."""
    where = f"--baseline {path}"
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{where}: no such file")
    if path.stat().st_size > BASELINE_LIMIT:
        raise UserError(f"{where}: {path.stat().st_size / 2**20:.0f} MiB is not an `edgekit bench --json` output")
    try:
        data = json.loads(path.read_bytes(), parse_constant=_refuse_constant)
    except OSError as error:  # unreadable: permissions, an I/O error
        raise UserError(f"{where}: cannot read it: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{where}: not the JSON `edgekit bench --json` writes ({error})") from None
    except RecursionError:
        raise UserError(f"{where}: not the JSON `edgekit bench --json` writes (nested too deeply)") from None
    if not isinstance(data, list) or not data:
        raise UserError(f"{where}: expected the list of records `edgekit bench --json` writes, "
                        f"got {'an empty list' if data == [] else type(data).__name__}")
    escaped = _control_characters(data, "baseline")
    if escaped:
        raise UserError(f"{where}: {escaped} holds control characters (terminal escape sequences); refused")
    records = [build(BenchRecord, _record_part(item), f"{where}, record {index}") for index, item in enumerate(data)]
    for index, record in enumerate(records):
        median = Median.of(record.latency_ms)
        if not (0 < median.low <= median.p50 <= median.high and math.isfinite(median.high)):
            raise UserError(f"{where}, record {index}: latency_ms needs 0 < p50_low <= p50 <= p50_high, "
                            f"got {median.low}, {median.p50}, {median.high}")
    return records


def _record_part(item: object) -> object:
    """A record as `bench --device --json` writes it carries the device's identity beside it (its CPU is in the
    record's conditions too); the comparison reads the record."""
    return {key: value for key, value in item.items() if key != "device"} if isinstance(item, dict) else item


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a measured number")


def compare(records: list[BenchRecord], baseline: list[BenchRecord], margin: float = REGRESSION_MARGIN) -> list[Comparison]:
    """Each record against its baseline record: the first unused one of the same package name, else of the same model
    files. Slower (or faster) only when the two p50 intervals are apart and the faster p50 is `margin` below the other."""
    unused = list(baseline)
    comparisons = []
    for record in records:
        old, matched_by = _match(record, unused)
        new = Median.of(record.latency_ms)
        if old is None:
            comparisons.append(Comparison(record.package, "unmatched", new, None, "", (), False))
            continue
        unused.remove(old)
        before = Median.of(old.latency_ms)
        verdict = ("slower" if faster_beyond_noise(before, new, margin) else
                   "faster" if faster_beyond_noise(new, before, margin) else "same")
        differences = tuple(f"{key} {_shown(old.conditions.get(key))} then, {_shown(record.conditions.get(key))} now"
                            for key in (*CPU_CONDITIONS, *RUN_CONDITIONS)
                            if old.conditions.get(key) != record.conditions.get(key))
        across = any(old.conditions.get(key) != record.conditions.get(key) for key in CPU_CONDITIONS)
        comparisons.append(Comparison(record.package, verdict, new, before, matched_by, differences, across))
    return comparisons


def _match(record: BenchRecord, candidates: list[BenchRecord]) -> tuple[BenchRecord | None, str]:
    name = package_name(record.package)
    for old in candidates:
        if package_name(old.package) == name:
            return old, "name"
    for old in candidates:
        if record.model_sha256 and old.model_sha256 == record.model_sha256:
            return old, "model"
    return None, ""


def package_name(package: str) -> str:
    """The package's folder or file name: the same package benched from another directory keeps it."""
    return Path(package).name


def _shown(value: object) -> str:
    if isinstance(value, list):
        return "[" + " ".join(map(str, value)) + "]"
    return "unrecorded" if value is None else str(value)


def regressed(comparisons: list[Comparison]) -> list[Comparison]:
    return [comparison for comparison in comparisons if comparison.verdict == "slower"]
