"""Every backend the `all` extra installs must import: a broken install fails the suite instead of skipping tests."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires, version

import pytest
from packaging.requirements import Requirement

# imports each module in one fresh interpreter; prints {distribution: error} for those that fail
IMPORT_EACH = """
import importlib, json, sys
failures = {}
for distribution, module in json.loads(sys.argv[1]).items():
    try:
        importlib.import_module(module)
    except Exception as error:
        failures[distribution] = f"{type(error).__name__}: {error}"
print(json.dumps(failures))
"""


def _all_extra() -> list[str]:
    """Distribution names of edgekit's `all` extra."""
    found = []
    for text in requires("edgekit") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": "all"}):
            found.append(requirement.name)
    return found


def _modules_of(distribution: str) -> list[str]:
    """The top-level modules an installed distribution provides."""
    wanted = distribution.lower().replace("_", "-")
    return sorted(module for module, owners in packages_distributions().items()
                  if any(owner.lower().replace("_", "-") == wanted for owner in owners) and module.isidentifier()
                  and not module.startswith("_"))


def test_every_installed_backend_of_the_all_extra_imports() -> None:
    installed, absent = [], []
    for distribution in _all_extra():
        try:
            version(distribution)
            installed.append(distribution)
        except PackageNotFoundError:
            absent.append(distribution)
    if not installed:
        pytest.skip("edgekit[all] is not installed here")
    assert len(installed) >= 10, f"edgekit[all] looks partly installed: missing {', '.join(absent)}"
    modules = {}
    for distribution in installed:
        provided = _modules_of(distribution)
        assert provided, f"{distribution} is installed but provides no importable module"
        modules[distribution] = provided[0]
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH, json.dumps(modules)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, f"installed but broken: {failures}"
    assert not absent, f"the all extra lists {', '.join(absent)}, which is not installed: reinstall edgekit[all]"
