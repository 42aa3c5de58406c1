"""ONNX Runtime's own profiler: SessionOptions.enable_profiling writes a JSON trace with one event per node run."""

from __future__ import annotations

import bisect
import functools
import json
from collections import defaultdict
from pathlib import Path

from edgekit.package import Package
from edgekit.profiling.naming import conversion, module_of, precision_of
from edgekit.profiling.record import NotProfiled, OpSample
from edgekit.runtime import open_package
from edgekit.runtime.onnxruntime import OrtSession

NODE_SUFFIX = "_kernel_time"  # a node's kernel run; its _fence_before / _fence_after events are the executor's


class ProfiledOrtSession(OrtSession):
    """An OrtSession with ORT's profiler on, writing its trace under `folder`."""

    def __init__(self, files, inputs, outputs, options, threads, folder: Path) -> None:
        self._prefix = folder / "onnxruntime"
        super().__init__(files, inputs, outputs, options, threads)

    def _configure(self, session_options) -> None:
        session_options.enable_profiling = True
        session_options.profile_file_prefix = str(self._prefix)

    def trace(self) -> list[dict]:
        """The profiler's events so far (this ends profiling)."""
        return json.loads(Path(self._session.end_profiling()).read_text())


class Profiler:
    """Runs of one package under ORT's profiler; `ops` reads the trace once they are done."""

    profiler = "ONNX Runtime profiler (SessionOptions.enable_profiling): per-node kernel time"

    def __init__(self, package: Package, threads: int | None, folder: Path) -> None:
        import onnxruntime

        self.version = onnxruntime.__version__
        self.session = open_package(package, threads, functools.partial(ProfiledOrtSession, folder=folder))

    def after_run(self, measured: bool) -> None:
        """Nothing: the trace holds every run."""

    def ops(self, runs: int) -> list[OpSample]:
        return node_times(self.session.trace(), runs)


def node_times(events: list[dict], runs: int) -> list[OpSample]:
    """Each node's kernel time in each of the last `runs` model runs of an ORT trace (the runs before are warm-up)."""
    windows = sorted((event["ts"], event["ts"] + event["dur"]) for event in events
                     if event.get("cat") == "Session" and event.get("name") == "model_run")[-runs:]
    if len(windows) < runs:
        raise NotProfiled(f"not available: ONNX Runtime's trace holds {len(windows)} runs, not the {runs} measured")
    starts = [start for start, _ in windows]
    times: dict[str, list[float]] = defaultdict(lambda: [0.0] * runs)
    first: dict[str, dict] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith(NODE_SUFFIX):
            continue
        index = bisect.bisect_right(starts, event["ts"]) - 1
        if index < 0 or event["ts"] > windows[index][1]:
            continue  # a warm-up run's
        name = event["name"].removesuffix(NODE_SUFFIX)
        times[name][index] += event["dur"] / 1e3
        first.setdefault(name, event["args"])
    return [_sample(name, per_run, first[name]) for name, per_run in times.items()]


def _sample(name: str, times_ms: list[float], args: dict) -> OpSample:
    inputs, outputs = args.get("input_type_shape") or [], args.get("output_type_shape") or []
    source = precision_of(next(iter(inputs[0]), None)) if inputs else None
    result = precision_of(next(iter(outputs[0]), None)) if outputs else None
    return OpSample(name, args.get("op_name", "?"), times_ms, conversion(source, result), None, args.get("provider"),
                    module_of([name]))
