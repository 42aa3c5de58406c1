"""A sweep's result files: results.json, results.csv and report.html."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.sweep.report import write_report
from edgekit.sweep.results import finite, rows_csv, write_atomic


def write_results(rows: list[dict], sweep: dict, folder: Path) -> dict[str, Path]:
    """Write folder/results.json, folder/results.csv and folder/report.html, each atomically.

    results.json holds {"sweep": sweep, "rows": rows} with non-finite floats as null; results.csv has one line per
    row with nested dicts flattened into dotted columns (latency_ms.p50, conditions.threads …).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    document = json.dumps(finite({"sweep": sweep, "rows": rows}), indent=2, default=str, allow_nan=False)
    return {
        "json": write_atomic(folder / "results.json", document + "\n"),
        "csv": write_atomic(folder / "results.csv", rows_csv(rows)),
        "html": write_report(rows, sweep, folder / "report.html"),
    }
