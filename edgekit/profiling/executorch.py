"""ExecuTorch's own profiler: an ETDump of the runs, read by executorch.devtools.Inspector.

Delegated ops (XNNPACK's operators) come from the delegate's own events; the time of a delegate call outside
its ops is a row of its own. Module names need an ETRecord from the export, which a package does not carry.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.package import Package
from edgekit.profiling.naming import PRECISIONS
from edgekit.profiling.record import NotProfiled, OpSample
from edgekit.runtime import open_package
from edgekit.runtime.executorch import ExecutorchSession

EXECUTE_BLOCK = "Execute"
DELEGATE_CALL = "DELEGATE_CALL"
WRAPPERS = frozenset({"OPERATOR_CALL", "Method::execute"})  # events that enclose the ops, not ops
NATIVE_PREFIX = "native_call_"  # an op run by ExecuTorch's own kernels: native_call_mean.out
_INDEX = re.compile(r"\s*#\d+$")


class ProfiledExecutorchSession(ExecutorchSession):
    """An ExecutorchSession whose program records an ETDump of every run."""

    etdump = True

    def write_etdump(self, path: Path) -> None:
        """This thread's program's ETDump so far, to `path` (its debug buffer, empty here, beside it)."""
        self._local.program.write_etdump_result_to_file(str(path), str(path.with_suffix(".debug")))


class Profiler:
    """Runs of one package with ETDump on; `ops` reads the dump with the Inspector once they are done."""

    profiler = "ExecuTorch ETDump read by executorch.devtools.Inspector: per-op and per-delegate-op time"

    def __init__(self, package: Package, threads: int | None, folder: Path) -> None:
        from importlib.metadata import version

        try:
            from executorch.devtools import Inspector
        except ImportError as error:
            raise NotProfiled(f"not available: ExecuTorch's devtools (executorch.devtools.Inspector) do not import "
                              f"here ({error})") from None
        self.version = version("executorch")
        self._inspector = Inspector
        self._dump = folder / "run.etdp"
        self.session = open_package(package, threads, ProfiledExecutorchSession)

    def after_run(self, measured: bool) -> None:
        """Nothing: the ETDump holds every run."""

    def ops(self, runs: int) -> list[OpSample]:
        try:
            self.session.write_etdump(self._dump)
            blocks = self._inspector(etdump_path=str(self._dump)).event_blocks
        except (RuntimeError, ValueError) as error:
            raise NotProfiled(f"not available: these ExecuTorch Python bindings wrote no readable ETDump ({error})") from None
        executed = [block for block in blocks if block.name == EXECUTE_BLOCK]
        if not executed:
            raise NotProfiled("not available: the ETDump holds no Execute events (bindings built without ETDump?)")
        return event_times(executed[0].events, runs)


def event_times(events: list, runs: int) -> list[OpSample]:
    """Each op's time in each of the last `runs` runs; a delegate call's time outside its ops is a row of its own."""
    samples: list[OpSample] = []
    inside: list[OpSample] = []  # the delegated ops since the last delegate call
    calls = 0
    for event in events:
        times = list(event.perf_data.raw)[-runs:] if event.perf_data is not None else []
        if len(times) < runs or event.name in WRAPPERS:
            continue
        times = [float(time) for time in times]
        if event.is_delegated_op:
            inside.append(_delegated(event.name, times, event.delegate_backend_name or "delegate", calls + 1))
        elif event.name == DELEGATE_CALL:
            calls += 1
            provider = inside[0].provider if inside else "delegate"
            outside = [max(time - sum(op.times_ms[run] for op in inside), 0.0) for run, time in enumerate(times)]
            samples += inside + [OpSample(f"delegate call {calls} (outside its ops)", "DelegateCall", outside, None,
                                          None, provider)]
            inside = []
        else:
            kind = event.name.removeprefix(NATIVE_PREFIX).split(".")[0]
            samples.append(OpSample(event.name, kind, times, None, event.name, "ExecuTorch kernels"))
    return samples + inside


def _delegated(name: str, times: list[float], provider: str, call: int) -> OpSample:
    """A delegate's op: XNNPACK names them `Convolution (NHWC, QC8) IGEMM #1`: type (layout, element types) kernel #index."""
    kernel = _INDEX.sub("", name)
    kind, _, rest = kernel.partition(" (")
    found = [PRECISIONS[token] for token in re.split(r"[,\s]+", rest.partition(")")[0].lower()) if token in PRECISIONS]
    precision = next((p for p in ("int4", "int8") if p in found), found[0] if found else None)
    return OpSample(f"delegate call {call}: {name}", kind.strip(), times, precision, kernel, provider)
