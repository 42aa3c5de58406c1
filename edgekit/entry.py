"""The `edgekit` console script: the command line when its extra is installed, else one line saying how to get it."""

from __future__ import annotations

import sys
from importlib.util import find_spec

# what the command line itself imports; a runtime-only install (edgekit[runtime-ort] …) has none of them
CLI_MODULES = ("click", "yaml", "rich")


def main() -> None:
    missing = [name for name in CLI_MODULES if find_spec(name) is None]
    if missing:
        sys.exit(f"error: the edgekit command is not part of this runtime-only install (no {', '.join(missing)}): "
                 "pip install 'edgekit[cli]' (or 'edgekit[all]' to compile); apps load packages with "
                 "edgekit.runtime.load")
    from edgekit.cli import main as cli

    cli()
