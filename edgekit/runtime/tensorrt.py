"""TensorRT backend: runs a serialized engine on an NVIDIA GPU with the TensorRT 10 I/O tensor API.

Device memory, copies and streams go through cuda-python's runtime bindings (`cuda.bindings.runtime`,
or `cuda.cudart` in cuda-python < 12.6), so loading a package needs neither torch nor pycuda.
Each thread gets its own execution context, CUDA stream and device buffers (grown on demand),
so concurrent `run` calls share one engine safely. An engine runs only with the TensorRT version
and GPU architecture it was built for: deserializing elsewhere fails with that message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import MissingBackend, UnsupportedOnTarget, UserError
from edgekit.runtime.session import Session

PACKAGE = "tensorrt"
EXTRA = "tensorrt"


@dataclass(frozen=True, slots=True)
class Options:
    """What a target's `options:` may say to TensorRT."""

    device_id: int = 0  # the CUDA device the engine is built and run on


def _tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise MissingBackend(PACKAGE, EXTRA, "TensorRT engines") from None
    return tensorrt


def _cudart():
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise MissingBackend("cuda-python", EXTRA, "GPU memory for TensorRT engines") from None
    return runtime


def _check(result: tuple, call: str) -> Any:
    """The value(s) of a cuda-python call, or RuntimeError naming the CUDA error."""
    error, *values = result
    if int(error) != 0:
        raise RuntimeError(f"{call} failed: {_error_name(error)}")
    return values[0] if len(values) == 1 else values or None


def _error_name(error) -> str:
    return getattr(error, "name", None) or str(error)


def probe(options: dict) -> str | None:
    """None when TensorRT, cuda-python and the CUDA device the options name are all here, else why not."""
    try:
        _tensorrt()
        cudart = _cudart()
    except MissingBackend as missing:
        return str(missing)
    error, count = cudart.cudaGetDeviceCount()
    if int(error) != 0:
        return f"no usable NVIDIA GPU here ({_error_name(error)}); TensorRT needs a CUDA device and driver"
    device = int(options.get("device_id", 0))
    if device >= count:
        return f"CUDA device {device} is not present ({count} found); set the target option device_id"
    return None


class _Worker:
    """One thread's execution context, stream and device buffers."""

    def __init__(self, engine, cudart, device: int) -> None:
        self.cudart = cudart
        _check(cudart.cudaSetDevice(device), "cudaSetDevice")
        self.context = engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.buffers: dict[str, tuple[int, int]] = {}  # tensor name → (device pointer, bytes)

    def buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least `nbytes` for the tensor, bound to the context."""
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _check(self.cudart.cudaFree(pointer), "cudaFree")
            pointer = _check(self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes}) for '{name}'")
            self.buffers[name] = (pointer, nbytes)
            self.context.set_tensor_address(name, pointer)
        return pointer

    def close(self) -> None:
        for pointer, _ in self.buffers.values():
            self.cudart.cudaFree(pointer)
        self.buffers.clear()
        self.cudart.cudaStreamDestroy(self.stream)


class TensorrtSession(Session):
    runtime = "tensorrt"

    def __init__(self, files, inputs, outputs, options, threads) -> None:
        super().__init__(files, inputs, outputs, options, threads)
        trt = _tensorrt()
        self._cudart = _cudart()
        why = probe(self.options)
        if why:
            raise UnsupportedOnTarget(why)
        self._device = int(self.options.get("device_id", 0))
        _check(self._cudart.cudaSetDevice(self._device), "cudaSetDevice")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self._engine = self._runtime.deserialize_cuda_engine(files[0].read_bytes())
        if self._engine is None:
            raise UserError(
                f"{files[0].name} is not an engine this TensorRT {trt.__version__} can run on this GPU: "
                "engines are tied to the TensorRT version and GPU they were built with; recompile the package here"
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        wanted = [spec.name for spec in (*inputs, *outputs)]
        absent = [name for name in wanted if name not in names]
        if absent:
            raise UserError(f"the engine has no tensor {', '.join(absent)} (it has {', '.join(names)})")
        self._dtypes = {name: np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))) for name in names}
        self._input_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._output_names = [n for n in names if n not in self._input_names]
        self._local = threading.local()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def _worker(self) -> _Worker:
        worker = getattr(self._local, "worker", None)
        if worker is None:
            worker = _Worker(self._engine, self._cudart, self._device)
            self._local.worker = worker
            with self._lock:
                self._workers.append(worker)
        return worker

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        worker = self._worker()
        context = worker.context
        held = []  # host arrays stay alive until the stream is synchronized
        for name in self._input_names:
            array = np.require(feeds[name], self._dtypes[name], "C")
            if not context.set_input_shape(name, array.shape):
                low, _, high = self._engine.get_tensor_profile_shape(name, 0)
                raise UserError(f"input '{name}': shape {list(array.shape)} is outside the engine's profile "
                                f"{list(low)} .. {list(high)}; rebuild with a wider min/max range")
            pointer = worker.buffer(name, max(array.nbytes, 1))
            _check(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, worker.stream), "cudaMemcpyAsync")
            held.append(array)
        results = {}
        for name in self._output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise UnsupportedOnTarget(f"output '{name}' has a data-dependent shape {list(shape)}, "
                                          "which this backend does not run")
            results[name] = np.empty(shape, dtype=self._dtypes[name])
            worker.buffer(name, max(results[name].nbytes, 1))
        if not context.execute_async_v3(int(worker.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for name, host in results.items():
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, worker.buffers[name][0], host.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, worker.stream), "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(worker.stream), "cudaStreamSynchronize")
        return {spec.name: results[spec.name].astype(spec.dtype, copy=False) for spec in self.outputs}

    def close(self) -> None:
        """Free every thread's device buffers and streams (also done when the session is collected)."""
        with self._lock:
            for worker in self._workers:
                worker.close()
            self._workers.clear()

    def __del__(self) -> None:
        if getattr(self, "_workers", None):
            self.close()
