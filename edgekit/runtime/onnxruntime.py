"""ONNX Runtime backend (CPU by default; CUDA / TensorRT execution providers by options)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edgekit.errors import MissingBackend, UnsupportedOnTarget, UserError, gist
from edgekit.runtime.session import Session
from edgekit.spec import TensorSpec

PACKAGE = "onnxruntime"
EXTRA = "runtime-ort"  # what loading needs; compiling for cpu-ort needs edgekit[onnx]


@dataclass(frozen=True, slots=True)
class Options:
    """What a target's `options:` may say to ONNX Runtime."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    provider_options: list[dict[str, Any]] | None = None  # one mapping per provider
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    preload_dlls: bool = False  # CUDA and cuDNN from the nvidia-* wheels


# what a package may pass to an execution provider: which device and how much memory, never a path
# (an engine cache, a dump folder, a library to load) — a user's own target file may set anything
PACKAGE_PROVIDER_OPTIONS = frozenset({"device_id", "gpu_mem_limit", "arena_extend_strategy", "cudnn_conv_algo_search",
                                      "do_copy_in_default_stream", "use_tf32"})


def package_refusals(options: dict[str, Any]) -> list[str]:
    """The provider options a package sets that only a user's own target may (see PACKAGE_PROVIDER_OPTIONS)."""
    return [f"provider_options.{key}" for entry in options.get("provider_options") or [] for key in entry
            if key not in PACKAGE_PROVIDER_OPTIONS]


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise MissingBackend(PACKAGE, EXTRA, "ONNX Runtime packages") from None
    return onnxruntime


def probe(options: dict) -> str | None:
    """None when every provider the options ask for is available here, else why not."""
    try:
        ort = _ort()
    except MissingBackend as missing:
        return str(missing)
    wanted = options.get("providers", ["CPUExecutionProvider"])
    present = ort.get_available_providers()
    absent = [p for p in wanted if p not in present]
    if absent:
        return (f"{', '.join(absent)} not in this onnxruntime ({', '.join(present)}); "
                f"install onnxruntime-gpu on a machine with an NVIDIA GPU: pip install 'edgekit[ort-cuda]'")
    return None


class OrtSession(Session):
    """InferenceSession.run is thread-safe, so concurrent `run` calls share one session."""

    runtime = "onnxruntime"

    def __init__(self, files, inputs, outputs, options, threads) -> None:
        super().__init__(files, inputs, outputs, options, threads)
        ort = _ort()
        why = probe(self.options)
        if why:
            raise UnsupportedOnTarget(why)
        session_options = ort.SessionOptions()
        if threads:
            session_options.intra_op_num_threads = threads
            session_options.inter_op_num_threads = 1
        level = self.options.get("graph_optimization_level", "all")
        session_options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        providers = self.options.get("providers", ["CPUExecutionProvider"])
        provider_options = self.options.get("provider_options")
        if self.options.get("preload_dlls") and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels (onnxruntime-gpu[cuda,cudnn])
        self._configure(session_options)
        self._session = ort.InferenceSession(str(files[0]), session_options, providers=providers,
                                             provider_options=provider_options)
        dropped = [p for p in providers if p not in self._session.get_providers()]
        if dropped:  # ORT falls back to the CPU silently when a provider fails to start
            raise UnsupportedOnTarget(
                f"onnxruntime could not start {', '.join(dropped)} (running on {', '.join(self._session.get_providers())}): "
                "its CUDA, cuDNN or TensorRT libraries are missing or of another version (see onnxruntime's log above)"
            )
        self._output_names = [o.name for o in self._session.get_outputs()]
        _check_specs(self._session, inputs, outputs, files[0].name)
        self._invalid = ort.capi.onnxruntime_pybind11_state.InvalidArgument

    def _configure(self, session_options) -> None:
        """Add to the SessionOptions built from the target's options (a profiler turns ORT's profiling on here)."""

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run(self._output_names, feeds)
        except self._invalid as error:  # feeds that fit the package's specs but not the model (a dim the specs leave free)
            raise UserError(f"onnxruntime refused these inputs for {self.files[0].name}: {gist(error)}") from None
        return dict(zip(self._output_names, values))


ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _check_specs(session, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], name: str) -> None:
    """The specs a package lists are the model's: its input names, ranks, dtypes and fixed dims, its output names in
    order (specs that say otherwise would fail inside onnxruntime at every run, or key the results wrongly)."""
    own = {value.name: value for value in session.get_inputs()}
    if sorted(own) != sorted(spec.name for spec in inputs):
        raise UserError(f"{name} takes inputs {', '.join(own)}, but its package lists {', '.join(s.name for s in inputs) or 'none'}")
    for spec in inputs:
        value = own[spec.name]
        wanted = ONNX_TYPES.get(value.type, spec.dtype)
        fixed = [(axis, dim) for axis, dim in enumerate(value.shape) if isinstance(dim, int)]
        if len(value.shape) != len(spec.shape) or wanted != spec.dtype or any(
                isinstance(spec.shape[axis], int) and spec.shape[axis] != dim for axis, dim in fixed):
            raise UserError(f"{name} takes input '{spec.name}' as {value.type} {value.shape}, but its package lists "
                            f"{spec.dtype} [{spec.shape_text()}]")
    given = [value.name for value in session.get_outputs()]
    if given != [spec.name for spec in outputs]:
        raise UserError(f"{name} gives outputs {', '.join(given)}, but its package lists "
                        f"{', '.join(s.name for s in outputs) or 'none'}")
