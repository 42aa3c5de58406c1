"""Opt-in monitoring of a Session: a latency histogram and running input statistics, judged against the statistics of
the data the package was calibrated on (the manifest's `data.calibration`, else `data.evaluation`).

A run only queues its latency and a copy of its inputs' bytes (the app may reuse its buffers). Every `batch` runs, and
whenever `stats()` is asked, the queue is merged in one vectorised pass: per input, each run's count, mean,
spread, min, max and values outside the reference's [min, max] are added
- cumulatively since load (Chan's parallel form of Welford's update, in float64, so the mean and std equal numpy's over
  all values fed), and
- recently: exponentially weighted over about the last `window` runs (equal weights for the first `window` runs).
The run that fills the queue pays for the merge; the others pay for a copy and an append (a deque: no lock), which
keeps the cost off the median latency. Right after an inference the CPU's caches hold the model, not Python's, so
every extra line run per inference costs several times what it costs in a tight loop: the per-run path is kept short.

The drift score of an input compares its recent statistics with the reference's:
    score = |mean - mean_ref| / std_ref + |ln(std / std_ref)|
(std_ref taken as 1 where the reference was constant), so a mean shifted by one reference std, or a spread e times
wider or narrower, scores 1. The recent share of values outside [min_ref, max_ref] is judged on its own. Once an
input's score or share crosses its threshold (after `min_runs` runs) one warning line is logged for that input.

Inputs with more than `sample_limit` values per run are read with a stride (their min, max and out-of-range share
then describe that subsample). numpy only: this module is part of the runtime-only install.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, astuple, dataclass
from typing import Any

import numpy as np

from edgekit.errors import UserError
from edgekit.spec import TensorSpec

log = logging.getLogger("edgekit.runtime")

# 0.01 ms … 10 s, ten geometric steps per decade (each bound 1.26× the one before, 3 significant digits)
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(float(f"{10 ** (step / 10):.3g}") for step in range(-20, 41))
REFERENCE_ROLES = ("calibration", "evaluation")  # where the manifest keeps per-input statistics, in order of preference
NUMERIC_KINDS = "biuf"  # inputs of other dtypes (complex, strings) are not tracked


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """What the monitor judges and how much it reads."""

    drift_threshold: float = 1.0  # warn when an input's drift score exceeds this
    outside_threshold: float = 0.01  # … or when the recent share of its values outside the reference range exceeds this
    window: int = 1000  # runs the recent statistics weigh (exponentially)
    min_runs: int = 20  # runs seen before a warning may fire
    sample_limit: int = 16384  # values read per input and run; a larger input is read with a stride
    batch: int = 32  # runs queued before their statistics are merged

    def __post_init__(self) -> None:
        if not (self.drift_threshold > 0 and 0 <= self.outside_threshold <= 1):
            raise UserError(f"monitor: drift_threshold must be > 0 and outside_threshold within [0, 1] "
                            f"(got {self.drift_threshold}, {self.outside_threshold})")
        if min(self.window, self.min_runs, self.sample_limit, self.batch) < 1:
            raise UserError(f"monitor: window, min_runs, sample_limit and batch must be at least 1 "
                            f"(got {self.window}, {self.min_runs}, {self.sample_limit}, {self.batch})")


@dataclass(frozen=True, slots=True)
class Reference:
    """One input's statistics over the data the package was built with."""

    mean: float
    std: float
    min: float
    max: float


def reference_statistics(data: Mapping[str, Any]) -> tuple[str | None, dict[str, Reference]]:
    """The manifest's `data` section → (which data it describes, per-input Reference); (None, {}) when it has none."""
    for role in REFERENCE_ROLES:
        statistics = data.get(role)
        if isinstance(statistics, Mapping) and statistics:
            return role, {name: _reference(entry, f"manifest data.{role}.{name}") for name, entry in statistics.items()}
    return None, {}


def _reference(entry: Any, where: str) -> Reference:
    try:
        reference = Reference(*(float(entry[key]) for key in ("mean", "std", "min", "max")))
    except (TypeError, KeyError, ValueError):
        raise UserError(f"{where}: expected numbers mean, std, min and max") from None
    if not all(map(math.isfinite, astuple(reference))) or reference.std < 0 or reference.min > reference.max:
        raise UserError(f"{where}: mean, std, min, max must be finite with std >= 0 and min <= max (got {astuple(reference)})")
    return reference


def sample_stride(size: int, limit: int, last_dim: int) -> int:
    """A stride that reads at most `limit` of `size` values and visits every position of the last dim (an NHWC image's
    channels): the smallest one large enough that shares no factor with that dim."""
    stride = -(-size // limit)
    while math.gcd(stride, last_dim) != 1:
        stride += 1
    return stride


class LatencyHistogram:
    """Counts of latencies per fixed bucket (`bounds_ms`, each bucket holding values ≤ its bound), with sum, min, max."""

    def __init__(self, bounds_ms: tuple[float, ...] = LATENCY_BOUNDS_MS) -> None:
        self.bounds_ms = bounds_ms
        self._bounds = np.array(bounds_ms)
        self.counts = np.zeros(len(bounds_ms) + 1, np.int64)  # the last one: above every bound
        self.count = 0
        self.sum_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = 0.0

    def add(self, milliseconds: np.ndarray) -> None:
        """Add latencies (ms)."""
        if not milliseconds.size:
            return
        self.counts += np.bincount(np.searchsorted(self._bounds, milliseconds, side="left"), minlength=len(self.counts))
        self.count += int(milliseconds.size)
        self.sum_ms += float(milliseconds.sum())
        self.min_ms = min(self.min_ms, float(milliseconds.min()))
        self.max_ms = max(self.max_ms, float(milliseconds.max()))

    def quantile(self, fraction: float) -> float | None:
        """Estimated as Prometheus' histogram_quantile does (linear within the bucket), clamped to the observed range."""
        if not self.count:
            return None
        rank = fraction * self.count
        cumulative = np.cumsum(self.counts)
        index = int(np.searchsorted(cumulative, rank, side="left"))
        below = int(cumulative[index - 1]) if index else 0
        lower = self.bounds_ms[index - 1] if index else 0.0
        upper = self.bounds_ms[index] if index < len(self.bounds_ms) else self.max_ms
        estimate = lower + (upper - lower) * (rank - below) / int(self.counts[index])
        return min(max(estimate, self.min_ms), self.max_ms)

    def to_dict(self) -> dict[str, Any]:
        empty = not self.count
        return {"count": self.count, "sum": self.sum_ms, "mean": None if empty else self.sum_ms / self.count,
                "min": None if empty else self.min_ms, "max": None if empty else self.max_ms,
                "p50": self.quantile(0.50), "p95": self.quantile(0.95), "p99": self.quantile(0.99),
                "bounds_ms": list(self.bounds_ms), "counts": self.counts.tolist()}


class InputTracker:
    """The running statistics of one input: cumulative since load, and recent (exponentially weighted per run)."""

    def __init__(self, spec: TensorSpec, reference: Reference | None, config: MonitorConfig) -> None:
        self.name = spec.name
        self.dtype = np.dtype(spec.dtype)  # of the values queued (Session.check holds feeds to it)
        self.reference = reference
        self.config = config
        # values far from 0 relative to their spread lose precision in sum-of-squares form: centre them first
        self.centre = reference.mean if reference is not None and abs(reference.mean) > reference.std else 0.0
        self.values = self.nonfinite = self.outside = 0
        self.mean = self.m2 = 0.0
        self.min, self.max = math.inf, -math.inf
        self.runs = 0
        self.recent_mean = self.recent_var = self.recent_outside = 0.0
        self.warned = False

    def sample(self, value: np.ndarray) -> bytes:
        """A copy of the values this run's statistics read: all of `value`, or a strided subsample of a large one."""
        if value.dtype != self.dtype:  # only where observe is called with feeds Session.check did not see
            value = value.astype(self.dtype)
        if value.size > self.config.sample_limit:
            return value.reshape(-1)[::sample_stride(value.size, self.config.sample_limit, value.shape[-1])].tobytes()
        return value.tobytes()

    def add(self, samples: list[bytes]) -> str | None:
        """Add queued runs (one sample each, in order); the warning line when they take the input past a threshold for
        the first time. Non-finite values are counted apart and left out of everything else."""
        samples = [sample for sample in samples if sample]  # a run of an empty input adds nothing
        if not samples:
            return None
        sizes = np.array([len(sample) for sample in samples]) // self.dtype.itemsize
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        values = np.frombuffer(b"".join(samples), self.dtype).astype(np.float64)  # a copy: centred and squared in place
        lows, highs = np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)
        finite = None
        nonfinite = np.zeros(len(samples), np.int64)
        if not (np.isfinite(lows).all() and np.isfinite(highs).all()):  # a NaN spreads to both, an infinity shows in one
            finite = np.isfinite(values)
            nonfinite = np.add.reduceat((~finite).astype(np.int64), starts)
            lows = np.minimum.reduceat(np.where(finite, values, np.inf), starts)
            highs = np.maximum.reduceat(np.where(finite, values, -np.inf), starts)
            values[~finite] = self.centre  # adds nothing once centred
        outside = np.zeros(len(samples), np.int64)
        reference = self.reference
        if reference is not None and (lows.min() < reference.min or highs.max() > reference.max):
            beyond = (values < reference.min) | (values > reference.max)
            outside = np.add.reduceat((beyond if finite is None else beyond & finite).astype(np.int64), starts)
        if self.centre:
            values -= self.centre
        sums = np.add.reduceat(values, starts)
        squares = np.add.reduceat(np.multiply(values, values, out=values), starts)
        counts = sizes - nonfinite
        self.nonfinite += int(nonfinite.sum())
        seen = counts > 0
        if not seen.all():
            counts, sums, squares, lows, highs, outside = (part[seen] for part in (counts, sums, squares, lows, highs, outside))
        if not counts.size:
            return None
        self._add_cumulative(int(counts.sum()), float(sums.sum()), float(squares.sum()), float(lows.min()),
                             float(highs.max()), int(outside.sum()))
        means = sums / counts
        self._add_recent((self.centre + means).tolist(), np.maximum(squares / counts - means * means, 0.0).tolist(),
                         (outside / counts).tolist())
        if self.warned or self.runs < self.config.min_runs or not self.drifting():
            return None
        self.warned = True
        return self.warning()

    def _add_cumulative(self, count: int, centred_sum: float, centred_squares: float, low: float, high: float,
                        outside: int) -> None:
        """Chan's merge of a group of values (given as sums about the centre) into all values seen before."""
        mean = self.centre + centred_sum / count
        m2 = max(centred_squares - centred_sum * centred_sum / count, 0.0)
        total = self.values + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.values * count / total
        self.values = total
        self.min, self.max = min(self.min, low), max(self.max, high)
        self.outside += outside

    def _add_recent(self, means: list[float], variances: list[float], shares: list[float]) -> None:
        """One exponential step per run: weight 1/runs until `window` runs, then 1/window (West's weighted update)."""
        floor = 1.0 / self.config.window
        for mean, variance, share in zip(means, variances, shares):
            self.runs += 1
            weight = max(1.0 / self.runs, floor)
            difference = mean - self.recent_mean
            self.recent_mean += weight * difference
            self.recent_var = (1 - weight) * (self.recent_var + weight * difference * difference) + weight * variance
            self.recent_outside += weight * (share - self.recent_outside)

    def drift(self) -> tuple[float, float] | None:
        """(|mean - mean_ref| / std_ref, |ln(std / std_ref)|) of the recent statistics; None without a reference."""
        if self.reference is None or not self.runs:
            return None
        scale = self.reference.std or 1.0
        tiny = 1e-9 * scale  # a constant input stays comparable with a constant reference
        spread = abs(math.log((math.sqrt(self.recent_var) + tiny) / (self.reference.std + tiny)))
        return abs(self.recent_mean - self.reference.mean) / scale, spread

    def drifting(self) -> bool:
        drift = self.drift()
        return drift is not None and (sum(drift) > self.config.drift_threshold
                                      or self.recent_outside > self.config.outside_threshold)

    def warning(self) -> str:
        reference, config = self.reference, self.config
        assert reference is not None
        return (f"input '{self.name}' drifted from the package's data over the last ~{min(self.runs, config.window)} runs: "
                f"drift score {sum(self.drift() or (0.0,)):.2f} (warns above {config.drift_threshold:g}), "
                f"mean {self.recent_mean:.4g} vs {reference.mean:.4g}, std {math.sqrt(self.recent_var):.4g} vs {reference.std:.4g}, "
                f"{self.recent_outside:.1%} of values outside [{reference.min:.4g}, {reference.max:.4g}] "
                f"(warns above {config.outside_threshold:.1%})")

    def to_dict(self) -> dict[str, Any]:
        seen = self.values > 0
        drift = self.drift()
        reference = self.reference
        return {
            "values": self.values, "nonfinite": self.nonfinite,
            "mean": self.mean if seen else None, "std": math.sqrt(self.m2 / self.values) if seen else None,
            "min": self.min if seen else None, "max": self.max if seen else None,
            "outside_share": self.outside / self.values if seen and reference is not None else None,
            "recent": {"runs": min(self.runs, self.config.window), "mean": self.recent_mean if seen else None,
                       "std": math.sqrt(self.recent_var) if seen else None,
                       "outside_share": self.recent_outside if seen and reference is not None else None},
            "reference": None if reference is None else asdict(reference),
            "drift": None if drift is None else {"mean_shift": drift[0], "spread": drift[1], "score": sum(drift)},
            "drifting": self.drifting(), "warned": self.warned,
        }


class Monitor:
    """What a monitored Session keeps; Session.run calls `observe` after each successful run (thread-safe)."""

    def __init__(self, inputs: tuple[TensorSpec, ...], data: Mapping[str, Any], config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self.reference_role, references = reference_statistics(data)
        self._inputs = [InputTracker(spec, references.get(spec.name), self.config) for spec in inputs
                        if np.dtype(spec.dtype).kind in NUMERIC_KINDS]
        self._latency = LatencyHistogram()
        self._queue: deque[tuple[float, list[bytes]]] = deque()  # appends and pops are atomic: no lock per run
        self._merge_lock = threading.Lock()  # held while queued runs are merged and while stats are read

    def observe(self, feeds: Mapping[str, np.ndarray], latency_ms: float) -> None:
        """Queue one run: its latency and a copy of what its statistics read; the run that fills the queue merges it."""
        self._queue.append((latency_ms, [tracker.sample(feeds[tracker.name]) for tracker in self._inputs]))
        if len(self._queue) >= self.config.batch:
            self._merge()

    def _merge(self) -> None:
        with self._merge_lock:
            queued = [self._queue.popleft() for _ in range(len(self._queue))]  # later appends wait for the next merge
            if not queued:
                return
            self._latency.add(np.array([latency for latency, _ in queued]))
            warnings = [tracker.add([samples[index] for _, samples in queued]) for index, tracker in enumerate(self._inputs)]
        for line in warnings:
            if line:
                log.warning("%s", line)

    def stats(self) -> dict[str, Any]:
        """Latency histogram and estimates, per-input statistics and drift, as plain data (None where nothing was seen)."""
        self._merge()
        with self._merge_lock:
            return {"runs": self._latency.count, "latency_ms": self._latency.to_dict(),
                    "inputs": {tracker.name: tracker.to_dict() for tracker in self._inputs},
                    "reference": self.reference_role, "config": asdict(self.config)}
