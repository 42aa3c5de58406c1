"""Optional backends in tests: skip only when a backend is not installed, never when it is installed but broken."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

import pytest


def require(module: str, distribution: str) -> ModuleType:
    """Import `module`; skip the test module when `distribution` is absent, fail when it is installed but won't import."""
    try:
        version(distribution)
    except PackageNotFoundError:
        pytest.skip(f"{distribution} is not installed", allow_module_level=True)
    return importlib.import_module(module)  # an ImportError here is a broken install: the suite fails
