"""ExecuTorch backend: a .pte program on the ExecuTorch runtime's Python bindings (XNNPACK delegate).

The bindings take and return torch tensors, so this backend imports torch (inside its functions only).
"""

from __future__ import annotations

import importlib.util
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import MissingBackend, UnsupportedOnTarget, UserError
from edgekit.runtime.session import Session
from edgekit.spec import TensorSpec

PACKAGE = "executorch"
EXTRA = "runtime-executorch"  # what loading needs; compiling needs edgekit[executorch]


@dataclass(frozen=True, slots=True)
class Options:
    """ExecuTorch takes no target options (the program carries its delegates)."""
METHOD = "forward"
BACKEND = "XnnpackBackend"
# ExecuTorch ScalarType codes → numpy dtype names
SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                7: "float64", 11: "bool"}
_THREADPOOL = threading.Lock()


def runtime():
    """The ExecuTorch runtime singleton."""
    try:
        from executorch.runtime import Runtime
    except ImportError:
        raise MissingBackend(PACKAGE, EXTRA, "ExecuTorch (.pte) packages") from None
    return Runtime.get()


def probe(options: dict) -> str | None:
    """None when the ExecuTorch runtime bindings and torch are installed (found, not imported: that takes seconds)."""
    for module in ("torch", "executorch.extension.pybindings"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return str(MissingBackend(PACKAGE, EXTRA, "ExecuTorch (.pte) packages"))
    return None


def _require_xnnpack() -> None:
    found = runtime().backend_registry.registered_backend_names
    if BACKEND not in found:
        raise UnsupportedOnTarget(f"this ExecuTorch build has no {BACKEND} (it has {', '.join(found) or 'none'}): "
                                  f"pip install 'edgekit[{EXTRA}]'")


def load_program(path, enable_etdump: bool = False):
    """The program in a .pte file (recording an ETDump of its runs with `enable_etdump`); a file that is not one is a
    UserError. The flatbuffer header is checked first: ExecuTorch's loader aborts the whole process (SIGABRT) on some
    malformed files instead of raising."""
    with open(path, "rb") as file:
        head = file.read(8)
    root = int.from_bytes(head[:4], "little")
    if len(head) < 8 or not re.fullmatch(rb"ET\d\d", head[4:8]) or not 8 <= root < Path(path).stat().st_size:
        raise UserError(f"{path} is not a valid ExecuTorch program: no ExecuTorch flatbuffer header")
    try:
        return runtime().load_program(path, enable_etdump=enable_etdump)
    except RuntimeError as error:
        first = (str(error).strip().splitlines() or ["unreadable"])[0]
        raise UserError(f"{path} is not a valid ExecuTorch program: {first}") from None


def method_specs(program) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs of the program's `forward`, from its method metadata (shapes are static)."""
    meta = program.metadata(METHOD)

    def spec(info, name: str) -> TensorSpec:
        return TensorSpec(name, tuple(int(d) for d in info.sizes()), SCALAR_TYPES.get(int(info.dtype()), "float32"))

    inputs = tuple(spec(meta.input_tensor_meta(i), f"input_{i}") for i in range(meta.num_inputs()))
    outputs = tuple(spec(meta.output_tensor_meta(i), f"output_{i}") for i in range(meta.num_outputs()))
    return inputs, outputs


def set_threads(count: int) -> None:
    """Size ExecuTorch's thread pool (one pool per process, shared by every session)."""
    import executorch.extension.pybindings.portable_lib as bindings

    with _THREADPOOL:
        if bindings._threadpool_get_thread_count() != count:
            bindings._unsafe_reset_threadpool(count)


class ExecutorchSession(Session):
    """One loaded program per thread: a method reuses its planned memory, so concurrent calls must not share it.

    `threads` sizes ExecuTorch's process-wide thread pool.
    """

    runtime = "executorch"
    etdump = False  # record an ETDump of every run (a profiler's subclass sets it)

    def __init__(self, files, inputs, outputs, options, threads) -> None:
        super().__init__(files, inputs, outputs, options, threads)
        why = probe(self.options)
        if why:
            raise UnsupportedOnTarget(why)
        _require_xnnpack()
        if threads:
            set_threads(threads)
        self._local = threading.local()
        self._method()
        own_inputs, own_outputs = method_specs(self._local.program)
        if len(own_inputs) != len(inputs) or len(own_outputs) != len(outputs):
            raise UserError(f"{files[0]} takes {len(own_inputs)} input(s) and gives {len(own_outputs)} output(s), "
                            f"but the package lists {len(inputs)} and {len(outputs)}")

    def _method(self):
        """This thread's loaded `forward` (its program is kept alive beside it)."""
        method = getattr(self._local, "method", None)
        if method is None:
            self._local.program = load_program(self.files[0], self.etdump)
            method = self._local.method = self._local.program.load_method(METHOD)
        return method

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        method = self._method()
        tensors = [torch.from_numpy(feeds[spec.name]) for spec in self.inputs]
        try:
            results = method.execute(tensors)
        except RuntimeError as error:
            first = (str(error).strip().splitlines() or [""])[0]
            raise UserError(f"ExecuTorch could not run {self.files[0].name} on these inputs: {first}") from None
        return {spec.name: result.numpy() for spec, result in zip(self.outputs, results)}
