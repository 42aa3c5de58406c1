"""`edgekit cache info|verify|prune`: the step cache (one folder per step result, named by its 64-hex key), the
distillation checkpoints beside it, and this user's unpacked package archives."""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.instruments import read_cache_entry
from edgekit.package import default_unpack_root

KEY = re.compile(r"[0-9a-f]{64}")
log = logging.getLogger("edgekit")


@dataclass(frozen=True, slots=True)
class Area:
    """One kind of cached item: where, how many, how large, and the oldest last use (seconds ago)."""

    name: str
    folder: str
    entries: int
    bytes: int
    oldest_use_s: float | None


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if KEY.fullmatch(p.name) and p.is_dir()) if folder.is_dir() else []


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _areas(root: Path, unpack_root: Path | None) -> dict[str, Path]:
    return {"steps": root, "checkpoints": root / "checkpoints", "packages": unpack_root or default_unpack_root()}


def info(root: Path, unpack_root: Path | None = None) -> list[Area]:
    """Entries, bytes and the oldest last use of each area."""
    now = time.time()
    areas = []
    for name, folder in _areas(root, unpack_root).items():
        entries = _entries(folder)
        oldest = max((now - p.stat().st_mtime for p in entries), default=None)
        areas.append(Area(name, str(folder), len(entries), sum(map(_bytes, entries)), oldest))
    return areas


def verify(root: Path) -> tuple[int, int]:
    """Check every step entry's files against their recorded sha256; corrupt ones are removed (with a warning each).
    Returns (entries intact, entries removed)."""
    intact = removed = 0
    for entry in _entries(root):
        if read_cache_entry(entry, log, mark_used=False) is None:
            removed += 1
        else:
            intact += 1
    return intact, removed


def prune(root: Path, older_than_days: float | None, unpack_root: Path | None = None) -> tuple[int, int]:
    """Remove entries of every area last used over `older_than_days` ago (None: all of them). Returns (entries
    removed, bytes freed)."""
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    count = freed = 0
    for folder in _areas(root, unpack_root).values():
        for entry in _entries(folder):
            if cutoff is None or entry.stat().st_mtime < cutoff:
                size = _bytes(entry)
                shutil.rmtree(entry, ignore_errors=True)
                count, freed = count + 1, freed + size
    return count, freed
