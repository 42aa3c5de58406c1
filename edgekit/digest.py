"""Content hashes: of files, of several files, and of plain data (for cache keys)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(paths: Iterable[Path]) -> str:
    """One hash over several files' names and contents."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def data_sha256(value: Any) -> str:
    """Hash of JSON-able data, independent of dict order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def folder_hash(path: Path) -> str:
    """sha256 over the folder's files (hidden ones left out): each relative path with its content's sha256."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()
