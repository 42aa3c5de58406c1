"""The one error hierarchy: the CLI catches EdgekitError and prints its message on one line."""

from __future__ import annotations

import re

# what must not reach a terminal raw from a user's input (a file name, a YAML key): C0 and C1 controls, DEL, the
# Unicode line and paragraph separators, and lone surrogates (unencodable)
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class EdgekitError(Exception):
    """Base of every error edgekit raises on purpose; its text is one printable line (see `printable`)."""

    def __str__(self) -> str:
        return printable(super().__str__())


def printable(text: str) -> str:
    """`text` with every UNPRINTABLE character escaped as Python writes it (`\\x1b`, `\\n`, `\\ud800`)."""
    return UNPRINTABLE.sub(lambda found: repr(found.group())[1:-1], text)


class UserError(EdgekitError):
    """A mistake in what the user gave: a path, a model, a recipe field, data."""


class MissingBackend(EdgekitError):
    """An optional package is not installed."""

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        self.package = package
        self.extra = extra
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"{package} is not installed{why}: pip install 'edgekit[{extra}]'"
        )


class UnsupportedOnTarget(EdgekitError):
    """The model, recipe or precision cannot reach or run on the chosen target."""


class FidelityError(EdgekitError):
    """The compiled model drifted from the source model beyond the tolerance."""


class PassFailed(EdgekitError):
    """A pass raised something unexpected; names the step and keeps the cause."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        super().__init__(f"step '{step}' failed: {type(cause).__name__}: {gist(cause)}")


def gist(error: BaseException) -> str:
    """A third-party error in one line: its first line, and its last when that says more (OpenVINO puts the why last)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0] if len(lines) == 1 or lines[-1] == lines[0] else f"{lines[0]} … {lines[-1]}"
