"""The pieces of a sweep's result files: rows as CSV, JSON without NaN, atomic writes; and the Pareto front of
latency vs quality."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
from collections.abc import Iterable
from pathlib import Path


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated: lower latency (x) and higher quality (y) both better.

    A point is dominated when another is at least as good on both axes and better on one; equal points do not
    dominate each other, so all of them stay. Points with a non-finite coordinate are never on the front.
    Indices come back in input order.
    """
    finite = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]

    def dominated(i: int) -> bool:
        x, y = points[i]
        return any(points[j][0] <= x and points[j][1] >= y and points[j] != (x, y) for j in finite)

    return [i for i in finite if not dominated(i)]


def rows_csv(rows: list[dict]) -> str:
    """The rows as CSV text: a header of the union of flattened columns (first-seen order), one line per row."""
    flat = [dict(_flatten(row)) for row in rows]
    seen = list(dict.fromkeys(column for row in flat for column in row))
    # a nested dict that is None in some rows (latency_ms of a failed cell) keeps only its dotted columns
    columns = [column for column in seen if not any(other.startswith(f"{column}.") for other in seen)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def write_atomic(path: Path, content: str | bytes) -> Path:
    """Write text or bytes to path through a temporary file in the same folder, so a reader never sees half a
    file (the folder is made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    try:
        with partial.open("xb") as handle:
            handle.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _flatten(row: dict, prefix: str = "") -> Iterable[tuple[str, object]]:
    """(dotted column, cell text) pairs; None becomes empty, lists become JSON."""
    for key, value in row.items():
        column = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{column}.")
        elif value is None:
            yield column, ""
        elif isinstance(value, list | tuple):
            yield column, json.dumps(finite(value), default=str)
        else:
            yield column, value


def finite(value: object) -> object:
    """value with NaN and infinities replaced by None, at any depth (JSON has no spelling for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value
