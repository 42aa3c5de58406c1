"""CPU instruction sets: what this host has, what a target declares, and what follows for int8 and bf16.

A target may name the ISA its packages are for (`isa: avx2`); `host` (the default) means the
CPU edgekit runs on. Choices that depend on the CPU (ORT's u8/s8 activations and 7-bit
weights, whether a bf16 candidate exists) read the target's ISA, never the host's directly,
so a package built for AVX2 on an AVX-512 host stays right for AVX2.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import UserError

# the flags recorded in manifests: /proc/cpuinfo names (x86 and ARM), in a fixed order
RECORDED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
                  "asimd", "asimddp", "i8mm", "bf16")
ARM_MACHINES = ("aarch64", "arm64")


@dataclass(frozen=True, slots=True)
class Isa:
    """A named instruction-set level and the kernel families it implies."""

    name: str
    arch: str  # x86-64 or arm64
    int8_dot: bool  # a native int8 dot product: VNNI / AMX on x86, SDOT/UDOT on ARM
    bf16: bool  # native bf16 arithmetic that runtimes use by default or on request (AVX512_BF16, AMX, ARM BF16)

    def to_dict(self) -> dict:
        return {"name": self.name, "arch": self.arch, "int8_dot": self.int8_dot, "bf16": self.bf16}


ISAS: dict[str, Isa] = {isa.name: isa for isa in (
    Isa("x86-64", "x86-64", False, False),
    Isa("avx2", "x86-64", False, False),
    Isa("avx2-vnni", "x86-64", True, False),
    Isa("avx512", "x86-64", False, False),
    Isa("avx512-vnni", "x86-64", True, False),
    Isa("avx512-bf16", "x86-64", True, True),
    Isa("amx", "x86-64", True, True),
    Isa("arm64", "arm64", False, False),
    Isa("arm64-dotprod", "arm64", True, False),
    Isa("arm64-i8mm", "arm64", True, False),
    Isa("arm64-bf16", "arm64", True, True),
)}


@dataclass(frozen=True, slots=True)
class Cpu:
    """A CPU as manifests record it: its model name, architecture and the flags edgekit cares about."""

    model: str
    machine: str
    flags: tuple[str, ...]

    @property
    def isa(self) -> Isa:
        return ISAS[isa_name_of(self.machine, set(self.flags))]

    def to_dict(self) -> dict:
        return {"model": self.model, "machine": self.machine, "flags": list(self.flags), "isa": self.isa.name}


def isa_name_of(machine: str, flags: set[str]) -> str:
    """The most capable ISA name that `flags` (cpuinfo names) on `machine` support."""
    if machine.lower() in ARM_MACHINES:
        if "bf16" in flags:
            return "arm64-bf16"
        if "i8mm" in flags:
            return "arm64-i8mm"
        return "arm64-dotprod" if "asimddp" in flags else "arm64"
    if {"amx_tile", "amx_int8"} <= flags:
        return "amx"
    if {"avx512f", "avx512_bf16"} <= flags:
        return "avx512-bf16"
    if {"avx512f", "avx512_vnni"} <= flags:
        return "avx512-vnni"
    if "avx512f" in flags:
        return "avx512"
    if {"avx2", "avx_vnni"} <= flags:
        return "avx2-vnni"
    return "avx2" if "avx2" in flags else "x86-64"


@functools.cache
def host_cpu() -> Cpu:
    """This machine's CPU (Linux: /proc/cpuinfo; macOS: sysctl)."""
    machine = platform.machine()
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        model, flags = _sysctl_cpu()
    return Cpu(model or platform.processor() or machine, machine, tuple(f for f in RECORDED_FLAGS if f in flags))


def _sysctl_cpu() -> tuple[str, set[str]]:
    """macOS: the brand string and ARM features (Apple silicon has dotprod, i8mm from M2, bf16 from M2)."""
    try:
        brand = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True).stdout.strip()
        features = subprocess.run(["sysctl", "hw.optional"], capture_output=True, text=True).stdout
    except OSError:
        return "", set()
    names = {"FEAT_DotProd": "asimddp", "FEAT_I8MM": "i8mm", "FEAT_BF16": "bf16", "AdvSIMD": "asimd"}
    found = {flag for key, flag in names.items() if f"{key}: 1" in features}
    return brand, found


def resolve_isa(name: str, where: str = "isa") -> Isa:
    """`host` → this machine's ISA; a known name → that ISA; anything else is a UserError."""
    if name == "host":
        return host_cpu().isa
    if name not in ISAS:
        from edgekit.schema import did_you_mean

        raise UserError(f"{where}: unknown isa '{name}'{did_you_mean(name, ISAS)}; known: host, {', '.join(ISAS)}")
    return ISAS[name]
