"""`python -m edgekit.runtime.device COMMAND [ARG…] --options JSON`: what a device runs for the host (edgekit.devices).

It prints one JSON line, the last on stdout: the command's result, or {"error": "…"} for a user mistake (exit 1).
It needs the runtime-only install (numpy and one runtime): no torch, click, rich or PyYAML is imported.

  identity                the machine: CPU model and ISA flags, OS, memory, Python, edgekit and runtime versions
  has SHA                 whether the package whose manifest.json hashes to SHA is in the cache, intact; if not, a new
                          staging folder to upload it into
  install SHA STAGING     check the uploaded files against their manifest and move them into the cache as SHA
  bench PKG               edgekit.bench.harness.measure, as `edgekit bench` runs it (options: its arguments)
  verify PKG              the package's files and its golden self-test (options: threads, self_test)
  profile PKG             per-op profile, edgekit.profiling.profile_package (options: its arguments)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, UserError

SHA256 = re.compile(r"[0-9a-f]{64}")
TIMEOUT_GRACE_S = 1
STAGING_STALE_S = 86400  # a staging folder this old was left by an upload that died
COMMANDS = ("identity", "has", "install", "bench", "verify", "profile")


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "edgekit" / "device-packages"


def identity() -> dict[str, Any]:
    """What the host records about this device beside its figures."""
    from edgekit import __version__
    from edgekit.bench.machine import cpu_frequency
    from edgekit.isa import host_cpu

    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        os_name = None
    return {
        "hostname": platform.node(), "cpu": host_cpu().to_dict(), "cpu_count": os.cpu_count(),
        "cpu_frequency": cpu_frequency(),
        "os": {"system": platform.system(), "release": platform.release(), "name": os_name or platform.platform()},
        "memory_mb": _memory_mb(),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "edgekit": __version__, "runtimes": _runtime_versions(),
    }


def has(sha: str, cache_dir: Path) -> dict[str, Any]:
    """Whether `<cache>/<sha>` holds the package, every file matching its hash (a damaged copy is removed); when it
    does not, a fresh staging folder for the upload."""
    final = _cache_entry(sha, cache_dir)
    _remove_stale_staging(cache_dir)
    removed = None
    if final.is_dir():
        try:
            _check(final, sha)
        except UserError as error:
            shutil.rmtree(final, ignore_errors=True)
            removed = str(error)
        else:
            os.utime(final)
            return {"present": True, "path": str(final)}
    staging = tempfile.mkdtemp(prefix=f".{sha}.partial-", dir=cache_dir)
    return {"present": False, "path": str(final), "staging": staging, "removed": removed}


def install(sha: str, staging: str, cache_dir: Path) -> dict[str, Any]:
    """Move an uploaded staging folder into the cache once its manifest hashes to `sha` and every file to its entry;
    a staging folder that fails is removed."""
    final = _cache_entry(sha, cache_dir)
    folder = Path(staging)
    if folder.parent.resolve() != cache_dir.resolve() or not folder.name.startswith(f".{sha}.partial-"):
        raise UserError(f"install: {staging} is not a staging folder of {sha[:12]} in {cache_dir}")
    try:
        _check(folder, sha)
    except UserError as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"the uploaded package was refused: {error}") from None
    try:
        folder.rename(final)
    except OSError:  # another upload of the same package got there first
        shutil.rmtree(folder, ignore_errors=True)
    return {"path": str(final)}


def bench(path: str, options: dict[str, Any]) -> dict[str, Any]:
    from edgekit.bench.harness import measure

    return dataclasses.asdict(measure(path, **options))


def verify(path: str, options: dict[str, Any]) -> dict[str, Any]:
    from edgekit.verify import verify_package

    result = verify_package(path, (), **options)
    return dataclasses.asdict(result) | {"ok": result.ok}


def profile(path: str, options: dict[str, Any]) -> dict[str, Any]:
    try:
        from edgekit.profiling import profile_package
    except ImportError:
        raise UserError("profile: the edgekit on this device has no profiler; install a newer edgekit there") from None
    return profile_package(path, **options)


def _check(folder: Path, sha: str) -> None:
    from edgekit.package import MANIFEST, read_package

    read_package(folder, verify=True)  # only listed files, each matching its sha256
    with open(folder / MANIFEST, "rb") as stream:
        if hashlib.file_digest(stream, "sha256").hexdigest() != sha:
            raise UserError(f"its {MANIFEST} does not hash to {sha[:12]}")


def _cache_entry(sha: str, cache_dir: Path) -> Path:
    if not SHA256.fullmatch(sha):
        raise UserError(f"{sha!r} is not a sha256")
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return cache_dir / sha


def _remove_stale_staging(cache_dir: Path) -> None:
    for folder in cache_dir.glob(".*.partial-*"):
        with contextlib.suppress(OSError):
            if time.time() - folder.stat().st_mtime > STAGING_STALE_S:
                shutil.rmtree(folder, ignore_errors=True)


def _memory_mb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):
        return None


def _runtime_versions() -> dict[str, str]:
    """The runtimes installed here and their versions (from package metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    from edgekit.runtime import BACKENDS, backend_module

    found, providers = {}, None
    for runtime in BACKENDS:
        package = backend_module(runtime).PACKAGE
        try:
            found[runtime] = version(package)
            continue
        except PackageNotFoundError:
            pass
        providers = providers if providers is not None else packages_distributions()
        for distribution in providers.get(package.replace("-", "_"), []):  # onnxruntime-gpu provides onnxruntime
            found[runtime] = f"{version(distribution)} ({distribution})"
            break
    return found


def run(command: str, arguments: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """One command's result (see the module's docstring)."""
    expected = {"identity": 0, "has": 1, "install": 2}.get(command, 1)
    if len(arguments) != expected:
        raise UserError(f"{command} takes {expected} argument(s), got {len(arguments)}")
    cache_dir = Path(options.pop("cache_dir", None) or default_cache_dir()).expanduser()
    try:
        if command == "identity":
            return identity()
        if command == "has":
            return has(arguments[0], cache_dir)
        if command == "install":
            return install(arguments[0], arguments[1], cache_dir)
        return {"bench": bench, "verify": verify, "profile": profile}[command](arguments[0], options)
    except TypeError as error:  # an option the command does not take
        if "unexpected keyword argument" not in str(error):
            raise
        raise UserError(f"{command}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgekit.runtime.device")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("arguments", nargs="*")
    parser.add_argument("--options", default="{}", help="the command's options as a JSON object")
    parser.add_argument("--timeout", type=float, default=None, help="exit after this many seconds")
    args = parser.parse_args(argv)
    if args.timeout and hasattr(signal, "SIGALRM"):  # a host that gave up must not leave a benchmark running here
        signal.alarm(math.ceil(args.timeout) + TIMEOUT_GRACE_S)  # after the host's own deadline: its message stands
    stdout = sys.stdout
    try:
        options = json.loads(args.options)
        if not isinstance(options, dict):
            raise UserError("--options is not a JSON object")
        with contextlib.redirect_stdout(sys.stderr):  # the JSON line is the only thing on stdout from Python
            result = run(args.command, args.arguments, options)
    except json.JSONDecodeError as error:
        result = {"error": f"--options is not JSON: {error}"}
    except EdgekitError as error:
        result = {"error": str(error)}
    print(json.dumps(result, default=str), file=stdout, flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
