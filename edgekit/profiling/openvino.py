"""OpenVINO's own profiler: the performance counters of an infer request compiled with PERF_COUNT (enable_profiling)."""

from __future__ import annotations

from pathlib import Path

from edgekit.package import Package
from edgekit.profiling.naming import module_of, precision_of
from edgekit.profiling.record import OpSample
from edgekit.runtime import open_package
from edgekit.runtime.openvino import OpenvinoSession


class ProfiledOpenvinoSession(OpenvinoSession):
    """An OpenvinoSession compiled with performance counters on."""

    def __init__(self, files, inputs, outputs, options, threads) -> None:
        import openvino.properties

        config = {**(options.get("config") or {}), openvino.properties.enable_profiling(): True}
        super().__init__(files, inputs, outputs, {**options, "config": config}, threads)

    def counters(self) -> list:
        """This thread's infer request's counters for its last run (ProfilingInfo: node_name, exec_type, real_time …)."""
        return self._request().profiling_info

    def fused_names(self) -> dict[str, list[str]]:
        """For each node of the compiled (runtime) graph, the names of the model's nodes fused into it."""
        return {op.get_friendly_name(): op.get_rt_info()["originalLayersNames"].astype(str).split(",")
                for op in self._compiled.get_runtime_model().get_ordered_ops()
                if "originalLayersNames" in op.get_rt_info()}


class Profiler:
    """Runs of one package with OpenVINO's counters read after each measured run."""

    profiler = "OpenVINO performance counters (ov.properties.enable_profiling): per-node real time and exec type"

    def __init__(self, package: Package, threads: int | None, folder: Path) -> None:
        import openvino

        self.version = openvino.__version__
        self.session = open_package(package, threads, ProfiledOpenvinoSession)
        self._executed = openvino.ProfilingInfo.Status.EXECUTED
        self._device = str(package.manifest.target.options.get("device", "CPU"))
        self._times: dict[str, list[float]] = {}
        self._kinds: dict[str, tuple[str, str]] = {}
        self._measured = 0

    def after_run(self, measured: bool) -> None:
        if not measured:
            return
        self._measured += 1
        for info in self.session.counters():
            if info.status == self._executed:
                times = self._times.setdefault(info.node_name, [])
                times += [0.0] * (self._measured - 1 - len(times))  # runs it did not execute in
                times.append(info.real_time.total_seconds() * 1e3)
                self._kinds.setdefault(info.node_name, (info.node_type, info.exec_type))

    def ops(self, runs: int) -> list[OpSample]:
        fused = self.session.fused_names()
        samples = []
        for name, times in self._times.items():
            node_type, exec_type = self._kinds[name]
            precision = precision_of(exec_type.rsplit("_", 1)[-1])  # brgconv_avx512_I8 → int8, jit_uni_f32 → fp32
            times += [0.0] * (runs - len(times))
            samples.append(OpSample(name, node_type, times, precision, exec_type, self._device,
                                    module_of([name, *fused.get(name, [])])))
        return samples
