"""Run one fuzz case and judge it: it works or fails with one clean line, it writes nothing outside the temporary
folder and reads no file outside the package (Python-level file events, seen through an audit hook, and a snapshot
of the sandbox around the temporary folder for what native code writes)."""

from __future__ import annotations

import os
import re
import shutil
import site
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from reliability.figures import TALLY

import edgekit as edgekit_module
from edgekit.catalog import builtin_dir
from edgekit.errors import EdgekitError

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# audit event → (positions of the paths it writes, position of its dir_fd or None)
WRITE_EVENTS: dict[str, tuple[tuple[int, ...], int | None]] = {
    "os.mkdir": ((0,), 2), "os.remove": ((0,), 1), "os.rmdir": ((0,), 1), "shutil.rmtree": ((0,), 1),
    "os.rename": ((0, 1), 2), "os.symlink": ((1,), 2), "os.link": ((1,), 3), "os.truncate": ((0,), None),
    "os.chmod": ((0,), 2), "os.utime": ((0,), 3), "shutil.copyfile": ((1,), None), "shutil.move": ((0, 1), None),
}
READ_EVENTS = ("os.listdir", "os.scandir")


class Unsafe(Exception):
    """A case that succeeded by using something outside what it was given."""


class Watch:
    """Python-level file events while active: writes outside `writable`, reads outside `readable` (one hook per
    process, installed on first use: audit hooks cannot be removed)."""

    active: Watch | None = None
    installed = False

    def __init__(self, readable: tuple[str, ...], writable: tuple[str, ...]) -> None:
        self.readable = readable
        self.writable = writable
        self.violations: list[str] = []

    def __enter__(self) -> Watch:
        if not Watch.installed:
            sys.addaudithook(_hook)
            Watch.installed = True
        Watch.active = self
        return self

    def __exit__(self, *exc: object) -> None:
        Watch.active = None

    def see(self, path: object, write: bool, dir_fd: object) -> None:
        if isinstance(path, int) or path is None:
            return
        text = os.fsdecode(path)  # type: ignore[arg-type]
        if not os.path.isabs(text) and isinstance(dir_fd, int) and dir_fd >= 0:
            return  # relative to a folder already seen (rmtree's walk)
        real = os.path.realpath(text)
        allowed = self.writable if write else (*self.readable, *self.writable)
        if not any(real == root or real.startswith(root + os.sep) for root in allowed):
            self.violations.append(f"{'wrote' if write else 'read'} {real}")


def _hook(event: str, args: tuple) -> None:
    watch = Watch.active
    if watch is None:
        return
    if event == "open":
        path, mode, flags = args
        write = bool(flags & WRITE_FLAGS) if isinstance(flags, int) else any(c in (mode or "") for c in "wax+")
        watch.see(path, write, None)
    elif event in READ_EVENTS:
        watch.see(args[0], False, None)
    elif event in WRITE_EVENTS:
        positions, fd_at = WRITE_EVENTS[event]
        for position in positions:
            watch.see(args[position], True, args[fd_at] if fd_at is not None and fd_at < len(args) else None)


def one_line(message: str) -> bool:
    """A message fit for one terminal line: not empty, no newline or control character, encodable."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return bool(message.strip()) and not CONTROL.search(message)


class Sandbox:
    """A folder for fuzz cases: `cases/` (the inputs), `decoy/` (files a case must never reach) and `tmp/inner`
    (the temporary folder while cases run: the only place a case may write)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp = self.root / "tmp" / "inner"
        self.decoy = self.root / "decoy"
        self.cases = self.root / "cases"
        for folder in (self.tmp, self.decoy, self.cases):
            folder.mkdir(parents=True, exist_ok=True)
        self.count = 0
        python = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
        importable = {entry for entry in sys.path if entry and os.path.isdir(entry)}
        edgekit = {str(Path(edgekit_module.__file__).parent), str(builtin_dir("recipes")), str(builtin_dir("targets"))}
        self.readable = tuple(sorted(os.path.realpath(p) for p in {*python, *importable, *edgekit, "/proc", "/sys", "/dev",
                                                                   "/usr"}))

    def case(self) -> Path:
        """A new empty folder for the next case's inputs (the previous case's is removed)."""
        shutil.rmtree(self.cases, ignore_errors=True)
        self.count += 1
        folder = self.cases / str(self.count)
        folder.mkdir(parents=True)
        return folder

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every path under the sandbox outside the temporary folder, with its size and change time."""
        found = {}
        for path in self.root.rglob("*"):
            if path != self.tmp and self.tmp not in path.parents:
                info = path.lstat()
                found[str(path)] = (info.st_size, info.st_mtime_ns)
        return found

    def attempt(self, family: str, action: Callable[[], object], inputs: Path) -> None:
        """Run one case, tally its outcome, and fail the test unless it worked or failed cleanly and safely."""
        before = self.snapshot()
        saved = tempfile.tempdir
        tempfile.tempdir = str(self.tmp)
        try:
            with Watch((str(inputs), *self.readable), (str(self.tmp),)) as watch:
                raised = _raised(action)
        finally:
            tempfile.tempdir = saved
        outcome, detail = _outcome(raised)
        after = self.snapshot()
        changed = sorted(path for path in after.keys() | before.keys() if after.get(path) != before.get(path))
        if watch.violations or changed:
            outcome, detail = "unsafe", "; ".join([*watch.violations[:3], *(f"changed {p}" for p in changed[:3])])
        TALLY.case(family, outcome, detail)
        assert outcome in ("ok", "clean"), f"{family} case: {outcome}: {detail}"


def _raised(action: Callable[[], object]) -> Exception | None:
    try:
        action()
    except Exception as error:  # judged by _outcome, outside the watch (a traceback's source lines are files too)
        return error
    return None


def _outcome(error: Exception | None) -> tuple[str, str]:
    if error is None:
        return "ok", ""
    if isinstance(error, Unsafe):
        return "unsafe", str(error)
    if isinstance(error, EdgekitError):
        message = str(error)
        return ("clean", message) if one_line(message) else ("unclean", repr(message))
    frame = traceback.extract_tb(error.__traceback__)[-1]  # RecursionError, KeyError, a backend's own error
    return "traceback", f"{type(error).__name__}: {str(error)[:200]!r} at {Path(frame.filename).name}:{frame.lineno}"
