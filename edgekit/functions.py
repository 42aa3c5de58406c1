"""User functions named `file.py:function` or `package.module:function`: custom metrics and decode hooks."""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from edgekit.errors import UserError

MetricFunction = Callable[[list[np.ndarray], list[np.ndarray], "np.ndarray | None"], float]


def load_metric(spec: str, base: Path | None = None, where: str = "metric") -> tuple[str, MetricFunction]:
    """A custom metric `file.py:function` (relative to the cwd, else to `base`) or `module:function`.

    Returns the spec with the file made absolute, and the function.
    """
    location, _, name = spec.rpartition(":")
    if not location or not name.isidentifier():
        raise UserError(f"{where}: metric '{spec}' is not file.py:function or package.module:function")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file() and base is not None and (base / path).is_file():
            path = base / path
        if not path.is_file():
            raise UserError(f"{where}: metric file {location} not found")
        path = path.resolve()
        module = _module_from_file(str(path))
        location = str(path)
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise UserError(f"{where}: cannot import metric module '{location}': {error}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(f"{where}: {location} has no function '{name}'")
    return f"{location}:{name}", function


@functools.cache
def _module_from_file(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"edgekit_metric_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as error:
        raise UserError(f"metric file {path} failed to import: {type(error).__name__}: {error}") from None
    return module
