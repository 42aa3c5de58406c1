"""Remote devices: run the same measurement (bench, verify, profile) on another machine and get the same JSON back.

Devices are named in devices.yaml (see edgekit.devices.registry): ssh://user@host:port, adb://SERIAL or
local://PATH-TO-VENV, each with a Python that has the runtime-only install. A package is copied once, under the
sha256 of its manifest, and checked file by file on the device before use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.devices.link import DeviceLink, Transfer
from edgekit.devices.registry import Device, devices_file, find_device, load_devices
from edgekit.errors import UserError
from edgekit.manifest import BenchRecord

if TYPE_CHECKING:
    from edgekit.verify import Verification

__all__ = ["Device", "DeviceLink", "Transfer", "bench_on_device", "call", "devices_file", "find_device", "identity",
           "load_devices", "probe_devices", "verify_on_device"]


def call(device_name: str, command: str, package: str | Path, options: dict[str, Any],
         devices_file: str | Path | None = None) -> dict[str, Any]:
    """The device runner's result of `command` (bench, verify, profile) on `package`, uploaded there first if needed."""
    with DeviceLink(find_device(device_name, devices_file)) as link:
        return link.call(command, package, options)


def identity(device_name: str, devices_file: str | Path | None = None) -> dict[str, Any]:
    """The device's name, URL, CPU model and ISA flags, OS, memory, Python, edgekit and runtime versions."""
    with DeviceLink(find_device(device_name, devices_file)) as link:
        return link.identity()


def probe_devices(given: str | Path | None = None, probe: bool = False) -> list[dict[str, Any]]:
    """Each device of the devices file (name, url, python); with `probe`, its identity or why it cannot be reached."""
    path = devices_file(given)
    rows = []
    for device in load_devices(path).values():
        row: dict[str, Any] = {"name": device.name, "url": device.url, "python": device.python, "file": str(path)}
        if probe:
            try:
                with DeviceLink(device) as link:
                    row["identity"] = link.runner("identity")
            except UserError as error:
                row["error"] = str(error)
        rows.append(row)
    return rows


def bench_on_device(packages: Sequence[str | Path], device_name: str, devices_file: str | Path | None = None,
                    threads: int | None = None, batch: int = 1, runs: int = 100,
                    warmup: int = 10) -> tuple[list[BenchRecord], dict[str, Any]]:
    """`edgekit bench` on the device: one record per package, as a local run gives it (its `package` the path given
    here), and the device's identity."""
    from edgekit.schema import build

    if runs < 1 or warmup < 0 or batch < 1:
        raise UserError("bench: runs and batch must be at least 1, warmup at least 0")
    options = {"threads": threads, "batch": batch, "runs": runs, "warmup": warmup}
    with DeviceLink(find_device(device_name, devices_file)) as link:
        device = link.identity()
        records = []
        for package in packages:
            result = link.call("bench", package, options) | {"package": str(package)}
            records.append(build(BenchRecord, result, f"bench of {package} on device {link.device.label}"))
    return records, device


def verify_on_device(package: str | Path, device_name: str, devices_file: str | Path | None = None,
                     trusted_keys: Sequence[str | Path] = (), threads: int | None = None,
                     self_test: bool = True) -> tuple[Verification, dict[str, Any]]:
    """`edgekit verify` with the self-test run on the device: the files and signature are checked here (the device's
    copy is the same manifest, byte for byte), the files again and the golden samples there. Returns the
    Verification and the device's identity."""
    from edgekit.golden import GoldenResult
    from edgekit.schema import build
    from edgekit.verify import Verification, verify_package

    here = verify_package(package, trusted_keys, self_test=False)
    with DeviceLink(find_device(device_name, devices_file)) as link:
        device = link.identity()
        there = link.call("verify", package, {"threads": threads, "self_test": self_test}, expect=("files",))
    where = f"verify of {package} on device {link.device.label}"
    golden = build(GoldenResult, there["golden"], where) if there.get("golden") else None
    return Verification(here.package, there["files"], here.signed_by, here.signature_checked, golden,
                        there.get("golden_skipped")), device
