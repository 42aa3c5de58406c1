"""Rendering of `edgekit sweep` for the CLI: a live progress line (cells done / running / failed) and the grid."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgekit.console import conditions_line, err, out
from edgekit.sweep.engine import Counts


class SweepProgress:
    """A bar on a terminal; elsewhere (a pipe, a CI log) one line on stderr each time a cell finishes."""

    def __init__(self) -> None:
        self.bar = Progress(TextColumn("sweep"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                            console=err, disable=not err.is_terminal)
        self.task: Any = None
        self.done = -1

    def __enter__(self) -> SweepProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, counts: Counts) -> None:
        text = (f"{counts.done}/{counts.total} done, {counts.running} running, {counts.waiting} waiting, "
                f"{counts.failed} failed" + (f", {counts.reused} reused" if counts.reused else ""))
        if self.task is None:
            self.task = self.bar.add_task(text, total=counts.total)
        self.bar.update(self.task, completed=counts.done, description=text)
        if not err.is_terminal and counts.done != self.done:
            err.print(f"sweep: {text}", markup=False, highlight=False)
        self.done = counts.done


def show_sweep(rows: list[dict[str, Any]], info: dict[str, Any], files: dict[str, Any]) -> None:
    table = Table(title=f"edgekit sweep: {info['ok']} ok, {info['failed']} failed, {info['reused']} reused "
                        f"of {info['cells']} cells")
    for column in ("model", "target", "recipe", "chosen", "size", "p50 ms", "quality", "source", "where"):
        table.add_column(column, justify="right" if column in ("size", "p50 ms", "quality", "source") else "left")
    for row in rows:
        latency = row["latency_ms"]
        table.add_row(*(escape(str(row[key])) for key in ("model", "target", "recipe")), escape(str(row["chosen"] or "")),
                      f"{row['size_bytes'] / 1e6:.2f} MB" if row["size_bytes"] else "",
                      f"{latency['p50']:.3f}" if latency else "failed" if row["status"] == "failed" else "",
                      _quality(row["quality_metric"], row["quality"]), _quality(None, row["reference_quality"]),
                      escape(str(row["measured_on"] or "")))
    out.print(table)
    for row in rows:
        if row["status"] == "failed":
            out.print(escape(f"failed: {row['cell']}: {row['reason']}"), highlight=False)
    measured = [row for row in rows if row["conditions"]]
    if measured:
        out.print(conditions_line(measured[0]["conditions"]))
    out.print(f"Ray {info['ray'] or '(not started: every cell reused)'}, {info['workers']} CPUs on {info['nodes']} "
              f"node(s); report: {files['html']}", highlight=False)


def _quality(metric: str | None, value: float | None) -> str:
    if value is None:
        return ""
    return f"{metric} {value:.4f}" if metric else f"{value:.4f}"
