"""Keep the backends' own output (C++ logs, prints, warnings) off the default screen, in a log file.

ONNX Runtime, OpenVINO, LiteRT, ExecuTorch, torch and torchao write to file descriptors 1 and 2
from C++ and Python alike ("Created TensorFlow Lite XNNPACK delegate", cpuinfo's "Failed to open
midr file", torchao's "Failed to load … _C_mxfp8"). While a CLI command runs without -v, both
descriptors point at the log file, and edgekit's own consoles write to copies of the terminal's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _is_terminal_fd(stream, fd: int) -> bool:
    """Whether `stream` writes to descriptor `fd` itself (not a test runner's in-memory stand-in)."""
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def to_log(path: Path) -> Iterator[Path | None]:
    """Descriptors 1 and 2 into `path` (written afresh) while inside; edgekit's consoles keep the real ones.

    Yields the log's path, or None (nothing redirected) where stdout/stderr are not descriptors 1/2 or the log
    cannot be written."""
    from edgekit import console

    if not (_is_terminal_fd(sys.stdout, 1) and _is_terminal_fd(sys.stderr, 2)):
        yield None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "wb", buffering=0)  # closed below, once the descriptors are restored
    except OSError:  # an unwritable cache folder: the backends' output stays on the screen
        yield None
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    real = {fd: os.fdopen(os.dup(saved[fd]), "w", buffering=1, encoding="utf-8", errors="replace") for fd in (1, 2)}
    previous = (console.out._file, console.err._file)  # None: follow sys.stdout/sys.stderr (restored as such)
    console.out.file, console.err.file = real[1], real[2]
    with log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield path
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd in (1, 2):
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
                real[fd].flush()
            console.out._file, console.err._file = previous
            for stream in real.values():
                stream.close()
