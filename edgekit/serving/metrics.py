"""The server's Prometheus metrics, in a registry of its own: requests by status and their time, and at each scrape the
session's monitor (inference latency histogram, per-input drift and out-of-range share)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from edgekit.runtime.monitor import LATENCY_BOUNDS_MS
from edgekit.runtime.session import Session

SECONDS_BOUNDS = tuple(bound / 1e3 for bound in LATENCY_BOUNDS_MS)


class ServerMetrics:
    """What /metrics shows; `requests` and `request_seconds` are updated by the /infer handler."""

    def __init__(self, session: Session) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("edgekit_infer_requests", "POST /infer requests by HTTP status", ["status"],
                                registry=self.registry)
        self.request_seconds = Histogram("edgekit_infer_request_seconds", "Time to answer POST /infer: reading and "
                                         "decoding the body, waiting for a worker, inference, encoding",
                                         buckets=SECONDS_BOUNDS, registry=self.registry)
        self.registry.register(MonitorCollector(session))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MonitorCollector:
    """Reads `session.stats()` at each scrape (prometheus_client's custom-collector protocol)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def collect(self) -> Iterator[Metric]:
        stats = self.session.stats()
        latency = stats["latency_ms"]
        inference = HistogramMetricFamily("edgekit_inference_seconds", "Session.run time: feed checks and inference")
        buckets = [(floatToGoString(bound), count) for bound, count in zip(SECONDS_BOUNDS, accumulate(latency["counts"]))]
        inference.add_metric([], [*buckets, ("+Inf", latency["count"])], sum_value=latency["sum"] / 1e3)
        yield inference
        score = GaugeMetricFamily("edgekit_input_drift_score", "Drift of an input's recent values from the package's "
                                  "data: |mean - mean_ref| / std_ref + |ln(std / std_ref)|", labels=["input"])
        outside = GaugeMetricFamily("edgekit_input_outside_share", "Recent share of an input's values outside the "
                                    "package data's [min, max]", labels=["input"])
        for name, entry in stats["inputs"].items():
            if entry["drift"] is not None:
                score.add_metric([name], entry["drift"]["score"])
            if entry["recent"]["outside_share"] is not None:
                outside.add_metric([name], entry["recent"]["outside_share"])
        yield score
        yield outside
        config = stats["config"]
        yield GaugeMetricFamily("edgekit_input_drift_threshold", "Drift score above which an input is drifting",
                                value=config["drift_threshold"])
        yield GaugeMetricFamily("edgekit_input_outside_threshold", "Outside share above which an input is drifting",
                                value=config["outside_threshold"])
