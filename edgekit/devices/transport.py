"""How the host reaches a device: run a command there, copy files there. One class per URL scheme, one interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekit.devices.registry import Device


@dataclass(frozen=True, slots=True)
class Completed:
    """A command that ran to its end on the device."""

    exit_status: int
    stdout: str
    stderr: str


class Transport(ABC):
    """A link to one device, open until `close`; every failure to reach it or a step past the device's timeout_s is a
    UserError naming the device."""

    def __init__(self, device: Device) -> None:
        self.device = device

    @abstractmethod
    def run(self, argv: Sequence[str], what: str) -> Completed:
        """Run `argv` (no shell expansion) on the device and wait for it, at most timeout_s; `what` names it in
        messages."""

    @abstractmethod
    def upload(self, files: Sequence[tuple[Path, str]]) -> None:
        """Copy each local file to its absolute device path, creating the folders on the way."""

    @abstractmethod
    def close(self) -> None:
        """Release the link."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
