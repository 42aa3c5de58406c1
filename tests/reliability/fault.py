"""Run the `edgekit` CLI with a fault at a rename: `python fault.py FOLDER N before|after ACTION -- ARGS…`.

The N-th rename whose source or destination lies directly in FOLDER is faulted `before` or `after` it happens. Renames
are os.rename / os.replace (and so Path.rename, Path.replace, shutil.move) and libc's renameat2 called through ctypes
(an atomic exchange). ACTION `kill` sends this process SIGKILL; `wait:FLAG` creates FLAG.reached and waits until FLAG
exists (so a test can run another compile at exactly that point). A process that makes fewer than N such renames
runs to its end undisturbed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

WAIT_LIMIT = 120  # seconds a `wait:` fault waits for its flag


class Fault:
    """Counts the renames into one folder and acts at the chosen one."""

    def __init__(self, folder: str, at: int, when: str, action: str) -> None:
        self.folder, self.at, self.when, self.action = os.path.abspath(folder), at, when, action
        self.seen = 0

    def around(self, paths: tuple[Any, ...], call: Callable[[], Any]) -> Any:
        """`call()` (a rename of `paths`), with the fault before or after it when it is the chosen rename."""
        counted = self.folder in {os.path.dirname(os.path.abspath(os.fsdecode(path))) for path in paths}
        self.seen += counted
        chosen = counted and self.seen == self.at
        if chosen and self.when == "before":
            self.act()
        result = call()
        if chosen and self.when == "after":
            self.act()
        return result

    def act(self) -> None:
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        flag = self.action.removeprefix("wait:")
        open(f"{flag}.reached", "w").close()
        deadline = time.monotonic() + WAIT_LIMIT
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.01)


def install(fault: Fault) -> None:
    """Route os.rename, os.replace and ctypes' renameat2 through `fault`."""
    for name in ("rename", "replace"):
        original = getattr(os, name)

        def renamed(source, destination, *args, _original=original, **kwargs):
            return fault.around((source, destination), lambda: _original(source, destination, *args, **kwargs))

        setattr(os, name, renamed)

    class Library(ctypes.CDLL):
        def __getattr__(self, name: str):
            if name != "renameat2":
                return super().__getattr__(name)
            function = self[name]  # not cached on the library: every lookup comes here
            return lambda old_at, old, new_at, new, flags: fault.around(
                (old, new), lambda: function(old_at, old, new_at, new, flags))

    ctypes.CDLL = Library  # type: ignore[misc]


def main() -> None:
    folder, at, when, action, separator, *args = sys.argv[1:]
    assert separator == "--" and when in ("before", "after"), __doc__
    install(Fault(folder, int(at), when, action))
    from edgekit.cli import main as edgekit

    edgekit(args, prog_name="edgekit")


if __name__ == "__main__":
    main()
