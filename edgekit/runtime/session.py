"""The Session every runtime backend implements: io specs, checked feeds, thread-safe run."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import UserError
from edgekit.spec import TensorSpec

if TYPE_CHECKING:
    from edgekit.golden import GoldenResult
    from edgekit.runtime.monitor import Monitor


class Session:
    """Runs one model. Backends implement `_run`; `run` checks the feeds first.

    `run` may be called from several threads at once: each backend makes that safe.
    """

    runtime: str = ""
    package: Any = None  # the Package `runtime.load` opened
    monitor: Monitor | None = None  # set by `runtime.load(..., monitor=True)`: latency and input statistics of each run

    def __init__(self, files: tuple[Path, ...], inputs: tuple[TensorSpec, ...],
                 outputs: tuple[TensorSpec, ...], options: Mapping[str, Any], threads: int | None) -> None:
        self.files = files
        self.inputs = inputs
        self.outputs = outputs
        self.options = dict(options)
        self.threads = threads

    @property
    def execution_precision(self) -> str:
        """The float precision the runtime computes in (backends that may change it report the effective one)."""
        return "fp32"

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for `feeds` (input name → array); a monitored session also queues the run's latency and
        inputs for `stats()`."""
        monitor = self.monitor
        started = time.perf_counter() if monitor is not None else 0.0  # unmonitored: no clock read
        self.check(feeds)
        ordered = {spec.name: np.require(feeds[spec.name], requirements="C") for spec in self.inputs}
        outputs = self._run(ordered)
        if monitor is not None:
            monitor.observe(ordered, (time.perf_counter() - started) * 1e3)
        return outputs

    def stats(self) -> dict[str, Any]:
        """The monitor's latency histogram, input statistics and drift scores as plain data (edgekit.runtime.monitor)."""
        if self.monitor is None:
            raise UserError("this session is not monitored: open it with edgekit.runtime.load(path, monitor=True)")
        return self.monitor.stats()

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def self_test(self) -> GoldenResult:
        """Run the package's golden inputs here and judge the outputs against the ones recorded where it was built,
        within the package's own tolerance: `ok`, and the output that came closest to its bound with its figures."""
        from edgekit.golden import run_golden

        if self.package is None:
            raise UserError("self_test: this session was opened from model files (open_model), which carry no golden "
                            "samples; open a package with edgekit.runtime.load to self-test it")
        manifest = self.package.manifest
        if manifest.golden is None:
            raise UserError(f"package {self.package.name}: holds no self-test samples (an edgekit before self-tests built "
                            "it, or its target could not run where it was built)")
        return run_golden(self, manifest.golden, manifest.precision.startswith("int"))

    def check(self, feeds: Mapping[str, Any]) -> None:
        """Raise UserError naming the input when a feed is missing, unknown, or of the wrong dtype or shape."""
        expected = [spec.name for spec in self.inputs]
        if not isinstance(feeds, Mapping):
            raise UserError(f"feeds: expected a mapping of input name → numpy array, got {type(feeds).__name__} "
                            f"(the model takes {', '.join(expected)})")
        missing = [name for name in expected if name not in feeds]
        unknown = [name for name in feeds if name not in expected]
        if missing or unknown:
            parts = [f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(unknown)}" if unknown else ""]
            raise UserError(f"feeds: {'; '.join(p for p in parts if p)} (the model takes {', '.join(expected)})")
        sizes: dict[str, tuple[str, int]] = {}
        for spec in self.inputs:
            value = feeds[spec.name]
            if not isinstance(value, np.ndarray):
                raise UserError(f"input '{spec.name}': expected a numpy array, got {type(value).__name__}")
            why = spec.mismatch(value.shape, value.dtype)
            if why:
                raise UserError(f"input '{spec.name}': {why}")
            for dim, size in zip(spec.shape, value.shape):
                if isinstance(dim, str):
                    first = sizes.setdefault(dim, (spec.name, size))
                    if first[1] != size:
                        raise UserError(f"input '{spec.name}': dim '{dim}' is {size} but {first[0]} gave it {first[1]}")
