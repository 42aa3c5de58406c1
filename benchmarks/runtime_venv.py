"""A cached venv with this checkout installed as `edgekit[runtime-ort]`: what an app on a device has.

Used by the tests (tests/conftest.py's `runtime_only_python`) and benchmarks/on_device.py.

The install is editable, so the venv always runs the working tree's code while its dependencies are exactly what
the `runtime-ort` extra declares; the cache key is therefore the checkout's path (an editable install points there)
and its packaging files (setup.cfg, pyproject.toml).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "edgekit-tests"
EXTRA = "runtime-ort"
DONE = ".edgekit-complete"


def packaging_key() -> str:
    """A short hash of the files that decide what the install holds."""
    digest = hashlib.sha256()
    for name in ("setup.cfg", "pyproject.toml"):
        digest.update((REPO / name).read_bytes())
    return digest.hexdigest()[:16]


def venv_path(extra: str, key: str) -> Path:
    """Where the venv of this checkout, Python version, extra and packaging key lives."""
    checkout = hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
    return CACHE / f"{extra}-py{sys.version_info.major}{sys.version_info.minor}-{checkout}-{key}"


def runtime_only_python(extra: str = EXTRA) -> Path:
    """The venv's python, building the venv first when no complete one exists for the current packaging files."""
    venv = venv_path(extra, packaging_key())
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest processes running at once build it once
        if not (venv / DONE).exists():
            for stale in CACHE.glob(venv_path(extra, "*").name):  # this one unfinished, or for older packaging files
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
            _build(venv, extra)
    return python


def _build(venv: Path, extra: str) -> None:
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
    for command in ([sys.executable, "-m", "venv", str(venv)],
                    [*pip, "install", "-e", f"{REPO}[{extra}]"]):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the {extra} venv: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    (venv / DONE).write_text(packaging_key())
