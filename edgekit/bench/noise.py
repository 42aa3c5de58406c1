"""When one p50 is faster than another beyond the noise: the rule `--recipe auto` chooses by and `bench --baseline`
flags regressions by."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.manifest import Latency


@dataclass(frozen=True, slots=True)
class Median:
    """A p50 (ms) and its confidence interval; without an interval, the p50 stands for both ends."""

    p50: float
    low: float
    high: float

    @classmethod
    def of(cls, latency: Latency) -> Median:
        return cls(latency.p50, latency.p50 if latency.p50_low is None else latency.p50_low,
                   latency.p50 if latency.p50_high is None else latency.p50_high)

    def __str__(self) -> str:
        return f"{self.p50:.3g} ms [{self.low:.3g}, {self.high:.3g}]"


def faster_beyond_noise(fast: Median, slow: Median, margin: float) -> bool:
    """`fast`'s p50 is at least `margin` (a fraction) below `slow`'s and their confidence intervals do not overlap."""
    return fast.high < slow.low and fast.p50 <= slow.p50 * (1.0 - margin)
