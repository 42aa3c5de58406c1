"""The embeddable runtime: `load(package)` → Session. Imports numpy and one backend, never torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError, UserError, gist
from edgekit.package import Package, read_package
from edgekit.runtime.session import Session
from edgekit.spec import TensorSpec

if TYPE_CHECKING:
    from edgekit.runtime.monitor import MonitorConfig


@dataclass(frozen=True, slots=True)
class Backend:
    """A runtime backend: its Session class ("module:Class") and the model format (edgekit.model.Format value) it opens.
    The module also defines Options, probe(options), PACKAGE and EXTRA."""

    session: str
    format: str


BACKENDS: dict[str, Backend] = {
    "onnxruntime": Backend("edgekit.runtime.onnxruntime:OrtSession", "onnx"),
    "tensorrt": Backend("edgekit.runtime.tensorrt:TensorrtSession", "tensorrt"),
    "openvino": Backend("edgekit.runtime.openvino:OpenvinoSession", "openvino"),
    "tflite": Backend("edgekit.runtime.tflite:TfliteSession", "tflite"),
    "executorch": Backend("edgekit.runtime.executorch:ExecutorchSession", "executorch"),
}

__all__ = ["BACKENDS", "Backend", "Session", "backend_module", "load", "open_model", "open_package"]


def load(path: str | Path, threads: int | None = None, verify: bool = True,
         trusted_keys: Sequence[str | Path] | None = None, monitor: bool | MonitorConfig = False) -> Session:
    """Open the package at `path` (folder or .zip) with the backend its manifest names. With `trusted_keys` (paths of
    Ed25519 public keys, PEM) the package must carry a signature by one of them over its manifest (then the files'
    hashes are always verified). With `monitor` (True or a MonitorConfig) each run adds to `session.stats()`: latency
    and input statistics against the package's calibration data (edgekit.runtime.monitor)."""
    package = read_package(path, verify=verify or trusted_keys is not None)
    if trusted_keys is not None:
        from edgekit.signing import check_signature

        check_signature(package, trusted_keys)
    session = open_package(package, threads)
    if monitor:  # imported only then: an unmonitored app does not pay for it
        from edgekit.runtime.monitor import Monitor, MonitorConfig

        if monitor is not True and not isinstance(monitor, MonitorConfig):
            raise UserError(f"load: monitor is True, False or a MonitorConfig, not {type(monitor).__name__}")
        session.monitor = Monitor(session.inputs, package.manifest.data, None if monitor is True else monitor)
    return session


def open_package(package: Package, threads: int | None = None, session_class: Callable[..., Session] | None = None) -> Session:
    """A Session over a package already read (and, for a .zip, unpacked once); `session_class` (a subclass of the
    backend's Session, e.g. a profiler's) opens it in place of the backend's own."""
    manifest = package.manifest
    options = manifest.target.options
    check_options(manifest.runtime, options, f"package {package.name}: runtime options")
    refused = getattr(backend_module(manifest.runtime), "package_refusals", lambda _: [])(options)
    if refused:
        raise UserError(f"package {package.name}: its runtime options set {', '.join(refused)}, which only your own "
                        "target file may set (a package is someone else's file)")
    from edgekit.runtime.versions import check_runtime_version  # on load only: import edgekit.runtime stays light

    version_note = check_runtime_version(manifest, str(package.name))  # refuses, warns or passes
    try:
        session = open_model(manifest.runtime, package.files, manifest.inputs, manifest.outputs, options, threads,
                             session_class)
    except EdgekitError:
        raise
    except Exception as error:  # the files match their hashes, but the runtime's parser refuses them
        raise UserError(f"package {package.name}: {manifest.runtime} cannot open {package.main_file.name}: "
                        f"{gist(error)}" + (f" (it was {version_note})" if version_note else "")) from None
    session.package = package
    return session


def open_model(runtime: str, files: tuple[Path, ...], inputs: tuple[TensorSpec, ...],
               outputs: tuple[TensorSpec, ...], options: dict[str, Any] | None = None,
               threads: int | None = None, session_class: Callable[..., Session] | None = None) -> Session:
    """A Session over model files without a package (used for references and benchmarks)."""
    session_class = session_class or getattr(backend_module(runtime), BACKENDS[runtime].session.partition(":")[2])
    return session_class(files, inputs, outputs, options or {}, threads)


def check_options(runtime: str, options: dict[str, Any], where: str) -> None:
    """Refuse an option the runtime does not take (with a did-you-mean) or a value of the wrong type."""
    from edgekit.schema import build

    build(backend_module(runtime).Options, options, where)


def backend_module(runtime: str):
    """The module of a runtime backend (cheap: backends import their runtime lazily)."""
    if runtime not in BACKENDS:
        raise UserError(f"unknown runtime '{runtime}' (known: {', '.join(BACKENDS)})")
    return importlib.import_module(BACKENDS[runtime].session.partition(":")[0])
