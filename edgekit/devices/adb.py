"""adb://SERIAL: an Android device through the `adb` binary (`adb shell`, `adb push`); `adb://` is the only one attached.

The device's `python` must be runnable by adb's shell user (a Python unpacked under /data/local/tmp, say); the package
cache defaults to /data/local/tmp/edgekit/device-packages, which that user can write.
"""

from __future__ import annotations

import posixpath
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from edgekit.devices.registry import Device
from edgekit.devices.transport import Completed, Transport
from edgekit.errors import UserError

ADB_CACHE_DIR = "/data/local/tmp/edgekit/device-packages"
ADB_FAILURES = ("not found", "no devices/emulators found", "device offline", "unauthorized",
                "more than one device/emulator", "cannot connect", "failed to connect")  # adb's own, not the command's


class AdbTransport(Transport):
    def __init__(self, device: Device) -> None:
        super().__init__(device)
        adb = shutil.which("adb")
        if adb is None:
            raise UserError(f"device {device.label}: adb:// needs the adb binary (Android platform-tools) on PATH")
        self.prefix = [adb, *(["-s", device.address] if device.address else [])]

    def run(self, argv: Sequence[str], what: str) -> Completed:
        done = self._adb(["shell", shlex.join(argv)], what)
        return Completed(done.returncode, done.stdout, done.stderr)

    def upload(self, files: Sequence[tuple[Path, str]]) -> None:
        folders = sorted({posixpath.dirname(remote) for _, remote in files})
        made = self._adb(["shell", shlex.join(["mkdir", "-p", *folders])], "the upload")
        if made.returncode != 0:
            raise UserError(f"device {self.device.label}: cannot make {folders[0]}: {_last_line(made.stderr)}")
        for local, remote in files:
            pushed = self._adb(["push", str(local), remote], "the upload")
            if pushed.returncode != 0:
                raise UserError(f"device {self.device.label}: adb push {local.name} failed: "
                                f"{_last_line(pushed.stderr or pushed.stdout)}")

    def close(self) -> None:
        """adb keeps no link open per call."""

    def _adb(self, args: list[str], what: str) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run([*self.prefix, *args], capture_output=True, text=True, errors="replace",
                                  timeout=self.device.timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UserError(f"device {self.device.label}: {what} did not finish within {self.device.timeout_s:g} s "
                            "(timeout_s)") from None
        first = done.stderr.strip().splitlines()[0] if done.returncode != 0 and done.stderr.strip() else ""
        if first.startswith(("error:", "adb: error:")) and any(failure in first for failure in ADB_FAILURES):
            raise UserError(f"device {self.device.label}: adb cannot reach it: {first.partition('error: ')[2]}")
        return done


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output"
