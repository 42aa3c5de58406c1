"""The normalized per-op profile every runtime's profiler is turned into, and the table of ops it sums to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class OpTime:
    """One op of a profile: its mean time per run, its share of all ops' time, and what ran it."""

    name: str  # the op's name in the runtime's graph (after the runtime's own fusions)
    type: str  # the op type the runtime ran (QLinearConv, Convolution, Convolution (XNNPACK) …)
    ms: float  # mean per measured run
    p50_ms: float  # median per measured run (robust to a run the machine disturbed)
    share: float  # of the ops' total (of the means)
    precision: str | None  # fp32, int8, fp32→int8 (a conversion) …; None where the profiler does not say
    kernel: str | None  # the runtime's implementation (OpenVINO exec type, XNNPACK operator); None where not given
    provider: str | None  # the execution provider, device or delegate that ran it
    module: str | None  # the source module it came from, where its name survived export


@dataclass(frozen=True, slots=True)
class Profile:
    """Per-op times of one package from its runtime's own profiler, or why there are none."""

    package: str
    target: str
    runtime: str
    precision: str  # the package's, as its manifest says
    available: bool
    reason: str | None  # why not available
    profiler: str | None  # what measured the ops
    runtime_version: str | None
    ops_ms: float | None  # the ops' times summed, mean per run
    wall_ms: float | None  # one `Session.run` with the profiler on, mean per run (the ops and the runtime around them)
    wall_p50_ms: float | None  # its median
    ops: list[OpTime]
    conditions: dict[str, Any]  # runs, warm-up, threads, input shapes, CPU and its ISA flags


@dataclass(frozen=True, slots=True)
class OpSample:
    """One op as a runtime's profiler saw it: its time in each measured run and what it ran as."""

    name: str
    type: str
    times_ms: list[float]  # per measured run (an op that ran several times in a run: their sum)
    precision: str | None = None
    kernel: str | None = None
    provider: str | None = None
    module: str | None = None


class NotProfiled(Exception):
    """The runtime here cannot give per-op times (its message says why); the profile says so instead of failing."""


def op_table(samples: list[OpSample]) -> tuple[list[OpTime], float]:
    """Ops by mean time, slowest first, with their median and share; and the ops' mean total per run."""
    means = [float(np.mean(sample.times_ms)) for sample in samples]
    total = sum(means)
    rows = [OpTime(sample.name, sample.type, mean, float(np.median(sample.times_ms)), mean / total if total else 0.0,
                   sample.precision, sample.kernel, sample.provider, sample.module) for sample, mean in zip(samples, means)]
    return sorted(rows, key=lambda row: -row.ms), total
