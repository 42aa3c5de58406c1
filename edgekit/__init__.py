"""edgekit: take a trained model to an edge device as a measured, verified package.

The heavy API (compile, plan, bench) is imported on first use, so `import edgekit.runtime`
stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "compile": "edgekit.compiler",
    "plan": "edgekit.compiler",
    "bench": "edgekit.bench",
    "inspect": "edgekit.inspection",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
