"""The host's side of a device: copy a package there once, by its manifest's sha256, and run the device runner
(`python -m edgekit.runtime.device`) on it, reading back its one JSON line."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.devices.adb import ADB_CACHE_DIR
from edgekit.devices.registry import Device
from edgekit.devices.transport import Completed, Transport
from edgekit.errors import UserError
from edgekit.package import MANIFEST, read_package

log = logging.getLogger("edgekit")
RUNNER = "edgekit.runtime.device"


@dataclass(frozen=True, slots=True)
class Transfer:
    """How a package reached the device: uploaded now (its bytes and seconds) or found in the device's cache."""

    sha256: str
    remote_path: str
    uploaded: bool
    bytes: int
    seconds: float


class DeviceLink:
    """An open link to one device (one SSH connection for all its calls); use it as a context manager."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.transport = open_transport(device)
        self.transfers: list[Transfer] = []

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.transport.close()

    def runner(self, command: str, *arguments: str, options: dict[str, Any] | None = None,
               expect: tuple[str, ...] = ()) -> dict[str, Any]:
        """The runner's result of `command`; its {"error": …}, a runner that cannot start and an answer without the
        `expect`ed keys (another edgekit version's runner) are UserErrors."""
        argv = [self.device.python, "-m", RUNNER, command, *arguments, "--options", json.dumps(options or {}),
                "--timeout", f"{self.device.timeout_s:g}"]
        done = self.transport.run(argv, f"'{command}'")
        result = _last_json(done.stdout)
        if result is None:
            raise UserError(f"device {self.device.label}: {self._why_no_result(done)}")
        if "error" in result:
            raise UserError(f"device {self.device.label}: {result['error']}")
        missing = [key for key in expect if key not in result]
        if missing:
            raise UserError(f"device {self.device.label}: its runner answered '{command}' without "
                            f"{', '.join(missing)}: install the same edgekit version there as here")
        return result

    def identity(self) -> dict[str, Any]:
        """The device's name and URL, CPU model and ISA flags, OS, memory, Python, edgekit and runtime versions."""
        from edgekit import __version__

        found = self.runner("identity")
        if found.get("edgekit") != __version__:
            log.warning("device %s runs edgekit %s, this machine %s: their records may differ", self.device.name,
                        found.get("edgekit"), __version__)
        return {"name": self.device.name, "url": self.device.url, **found}

    def call(self, command: str, package: str | Path, options: dict[str, Any],
             expect: tuple[str, ...] = ()) -> dict[str, Any]:
        """Run `command` (bench, verify, profile) on the device's copy of `package`, uploading it first if needed."""
        return self.runner(command, self.put(package), options=options, expect=expect)

    def put(self, package: str | Path) -> str:
        """The device path of the package (a folder or .zip here), uploaded unless its cache holds it intact; the
        device checks every file's sha256 before the copy is moved into place."""
        local = read_package(package)  # verified here first: a damaged package is never sent
        with open(local.root / MANIFEST, "rb") as stream:
            sha = hashlib.file_digest(stream, "sha256").hexdigest()
        found = self.runner("has", sha, options=self._cache(), expect=("present", "path"))
        if found["present"]:
            log.info("device %s: %s is in its cache as %s", self.device.name, package, sha[:12])
            self.transfers.append(Transfer(sha, found["path"], False, 0, 0.0))
            return found["path"]
        if found.get("removed"):
            log.warning("device %s: its copy of %s was damaged (%s); uploading it again", self.device.name, package,
                        found["removed"])
        staging = found["staging"]
        files = [(local.root / MANIFEST, f"{staging}/{MANIFEST}")]
        files += [(local.root / entry.path, f"{staging}/{entry.path}") for entry in local.manifest.entries]
        size = sum(path.stat().st_size for path, _ in files)
        started = time.perf_counter()
        self.transport.upload(files)
        remote = self.runner("install", sha, staging, options=self._cache(), expect=("path",))["path"]
        seconds = time.perf_counter() - started
        log.info("device %s: uploaded %s (%d files, %d bytes) in %.2f s", self.device.name, package, len(files), size,
                 seconds)
        self.transfers.append(Transfer(sha, remote, True, size, seconds))
        return remote

    def _cache(self) -> dict[str, str]:
        cache_dir = self.device.cache_dir or (ADB_CACHE_DIR if self.device.scheme == "adb" else None)
        return {"cache_dir": cache_dir} if cache_dir else {}

    def _why_no_result(self, done: Completed) -> str:
        lines = done.stderr.strip().splitlines()
        last = lines[-1] if lines else f"no output, exit status {done.exit_status}"
        python = self.device.python
        if "No module named edgekit" in done.stderr:
            return f"{python} there has no edgekit: pip install 'edgekit[runtime-ort]' (or another runtime) into it"
        if done.exit_status in (126, 127) or "No such file or directory" in last:
            return f"cannot run {python} there ({last}); set `python:` in devices.yaml to a Python with edgekit"
        return f"the runner failed (exit status {done.exit_status}): {last}"


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def open_transport(device: Device) -> Transport:
    """The transport of the device's URL scheme (asyncssh is imported for ssh:// only)."""
    if device.scheme == "ssh":
        from edgekit.devices.ssh import SshTransport

        return SshTransport(device)
    if device.scheme == "adb":
        from edgekit.devices.adb import AdbTransport

        return AdbTransport(device)
    from edgekit.devices.local import LocalTransport

    return LocalTransport(device)
