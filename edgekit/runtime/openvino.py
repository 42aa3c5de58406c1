"""OpenVINO backend: an IR (.xml + .bin) compiled for the device the target names (CPU, GPU, NPU)."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import MissingBackend, UnsupportedOnTarget
from edgekit.runtime.session import Session

PACKAGE = "openvino"
EXTRA = "runtime-openvino"  # what loading needs; compiling needs edgekit[openvino]


@dataclass(frozen=True, slots=True)
class Options:
    """What a target's `options:` may say to OpenVINO."""

    device: str = "CPU"  # CPU, GPU, NPU, or an OpenVINO device string (AUTO:GPU,CPU …)
    config: dict[str, Any] = field(default_factory=dict)  # compile_model properties (INFERENCE_PRECISION_HINT …)
# OpenVINO computes in bf16 by default on CPUs with AVX512_BF16 or AMX: edgekit runs the precision the
# package was built and measured in, so f32 unless the options ask for another precision
# what a package (someone else's file) may set in compile_model's config: precision and performance hints, never a
# place to write or read (CACHE_DIR, a plugin's config file) — a user's own target file may set anything
PACKAGE_CONFIG = frozenset({"INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT", "PERFORMANCE_HINT_NUM_REQUESTS",
                            "NUM_STREAMS", "INFERENCE_NUM_THREADS", "EXECUTION_MODE_HINT", "ENABLE_CPU_PINNING",
                            "ENABLE_HYPER_THREADING", "SCHEDULING_CORE_TYPE", "DYNAMIC_QUANTIZATION_GROUP_SIZE",
                            "KV_CACHE_PRECISION"})
PRECISION_HINT = "INFERENCE_PRECISION_HINT"
EXACT_PRECISION = "f32"
PRECISION_NAMES = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "f16": "fp16", "float16": "fp16"}
DEVICE_NEEDS = {
    "GPU": "an Intel GPU (integrated or Arc) with its OpenCL/Level Zero driver",
    "NPU": "an Intel NPU (Core Ultra) with the intel-npu-driver",
}


def _openvino():
    try:
        import openvino
    except ImportError:
        raise MissingBackend(PACKAGE, EXTRA, "OpenVINO packages") from None
    return openvino


@functools.cache
def core():
    """One OpenVINO Core per process (it is thread-safe and slow-ish to create)."""
    return _openvino().Core()


def probe(options: dict) -> str | None:
    """None when OpenVINO is installed and sees the device the options name, else why not."""
    try:
        devices = core().available_devices
    except MissingBackend as missing:
        return str(missing)
    device = str(options.get("device", "CPU"))
    wanted = device.split(":")[-1].split(",")[0]  # "AUTO:GPU,CPU" → GPU; "GPU.1" stays exact
    if any(found == wanted or found.startswith(wanted + ".") for found in devices):
        return None
    needs = DEVICE_NEEDS.get(wanted.split(".")[0], f"a {wanted} device")
    return f"OpenVINO sees no {wanted} device here (available: {', '.join(devices) or 'none'}); it needs {needs}"


class OpenvinoSession(Session):
    """One compiled model; each thread gets its own infer request, so concurrent `run` calls are safe."""

    runtime = "openvino"

    def __init__(self, files, inputs, outputs, options, threads) -> None:
        super().__init__(files, inputs, outputs, options, threads)
        why = probe(self.options)
        if why:
            raise UnsupportedOnTarget(why)
        model = core().read_model(str(files[0]), str(files[1]) if len(files) > 1 else None)
        _fit_shapes(model, inputs)
        self._compiled = compile_for(model, self.options, threads)
        self._local = threading.local()

    @property
    def execution_precision(self) -> str:
        return execution_precision(self._compiled)

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return request

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ordered = [feeds[spec.name] for spec in self.inputs]
        result = self._request().infer(ordered, share_inputs=True, share_outputs=False)  # inputs live through this call
        return {spec.name: result[index] for index, spec in enumerate(self.outputs)}


def compile_for(model, options: dict, threads: int | None = None):
    """`model` (an ov.Model) compiled with the target's options: its device and config; on a CPU f32 unless they say otherwise."""
    device = str(options.get("device", "CPU"))
    config: dict[str, Any] = {PRECISION_HINT: EXACT_PRECISION} if device.startswith("CPU") else {}
    config.update(options.get("config") or {})
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core().compile_model(model, device, config)


def execution_precision(compiled) -> str:
    """The float precision a compiled model computes in, as the plugin reports it (fp32, bf16, fp16)."""
    try:
        hint = compiled.get_property(PRECISION_HINT)
    except RuntimeError:  # a plugin without the property computes in its model's precision
        return "fp32"
    name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint).lower()
    return PRECISION_NAMES.get(name, name)


def _fit_shapes(model, inputs) -> None:
    """Reshape the IR to the specs' static dims where it is dynamic (an NPU compiles static shapes only)."""
    wanted = {}
    for index, (port, spec) in enumerate(zip(model.inputs, inputs)):
        shape = port.get_partial_shape()
        dims = [d if isinstance(d, int) else -1 for d in spec.shape]
        if shape.rank.is_static and len(shape) == len(dims) and any(d >= 0 and shape[i].is_dynamic for i, d in enumerate(dims)):
            wanted[index] = dims
    if wanted:
        model.reshape(wanted)


def package_refusals(options: dict[str, Any]) -> list[str]:
    """The options a package sets that only a user's own target may (see PACKAGE_CONFIG)."""
    return [f"config.{key}" for key in (options.get("config") or {}) if key not in PACKAGE_CONFIG]
