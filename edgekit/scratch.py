"""Scratch folders named by the process that owns them, so the next run removes what a killed one left behind."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path


def owned_scratch(parent: str | Path, prefix: str) -> Path:
    """A new empty folder `<parent>/<prefix><pid>-…`, after removing the `<prefix><pid>-…` folders (and files named
    after them) whose process is gone (a compile killed with SIGKILL cleans nothing up itself)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for leftover in parent.glob(f"{glob.escape(prefix)}*"):
        owner = leftover.name[len(prefix):].partition("-")[0]
        if owner.isdigit() and int(owner) != os.getpid() and not _alive(int(owner)):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (signal 0 checks without sending; POSIX, as fcntl locking elsewhere assumes).
    Not psutil: unpacking a .zip package runs here, in installs that have only numpy and a runtime."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no pid can be
        return False
    except PermissionError:  # someone else's process
        return True
    return True
