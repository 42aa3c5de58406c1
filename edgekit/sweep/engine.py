"""`sweep`: every cell of the grid compiled and measured on Ray, each finished cell kept at once (cells/KEY.json and
packages/SLUG.zip under the output folder), cells whose key is already there reused, and results.json, results.csv
and report.html written at the end."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.digest import file_sha256
from edgekit.errors import EdgekitError, UnsupportedOnTarget, UserError
from edgekit.sweep.grid import LOCAL_DEVICE, Cell, ModelEntry, Settings, cell_key, expand
from edgekit.sweep.outputs import write_results
from edgekit.sweep.results import write_atomic

log = logging.getLogger("edgekit")
CELLS, PACKAGES, LOGS = "cells", "packages", "logs"
POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class Counts:
    """Where the sweep stands: cells finished (ok or failed), running, waiting, reused from an earlier run."""

    total: int
    done: int
    running: int
    failed: int
    reused: int

    @property
    def waiting(self) -> int:
        return self.total - self.done - self.running


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    info: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def sweep(models: list[ModelEntry], targets: tuple[str, ...], recipes: tuple[str, ...], output: str | Path,
          devices: tuple[str, ...] = (LOCAL_DEVICE,), settings: Settings | None = None, address: str | None = None,
          workers: int | None = None, cache_dir: Path | None = None, devices_file: str | Path | None = None,
          retry_failed: bool = False, progress: Callable[[Counts], None] | None = None, verbose: bool = False,
          command: str = "") -> SweepResult:
    """Compile and measure models × targets × recipes (× devices) as Ray tasks; see the module docstring.

    `address` joins a running Ray cluster (else one is started here with `workers` CPUs); a device other than
    `local` must be advertised by a node as the resource `device:NAME`, and is measured there (through
    `devices_file` where that names it, else on that node's CPU). A failed cell is a row with its reason."""
    settings = settings or Settings()
    folder = _output_folder(Path(output))
    _check_recipes(recipes)
    if address is None and set(devices) - {LOCAL_DEVICE}:
        other = sorted(set(devices) - {LOCAL_DEVICE})[0]
        raise UserError(f"sweep: the Ray cluster started here advertises only device {LOCAL_DEVICE}, not {other}: "
                        f"join a cluster with --address where a node advertises device:{other}")
    started = datetime.now(UTC)
    host = _host()
    cells = expand(models, targets, recipes, devices)
    rows: dict[str, dict[str, Any]] = {}
    to_run: list[tuple[Cell, str]] = []
    for cell in cells:
        try:
            key = cell_key(cell, settings, host)
        except UnsupportedOnTarget as error:  # e.g. an int4 recipe on a target without int4
            rows[cell.id] = _row(cell, "", {"status": "failed", "reason": str(error)})
            continue
        earlier = _earlier(folder, key, retry_failed)
        if earlier is not None:
            rows[cell.id] = earlier | {"reused": True}
        else:
            to_run.append((cell, key))
    counts = Counts(len(cells), len(rows), 0, sum(r["status"] == "failed" for r in rows.values()), len(rows))
    info: dict[str, Any] = {"workers": 0, "ray": None, "nodes": 0}
    if progress:
        progress(counts)
    if to_run:
        from edgekit.sweep.cluster import check_devices, connected

        with connected(address, workers, verbose) as cluster:
            check_devices(cluster, tuple(device for device in devices))
            info = {"workers": cluster.cpus, "ray": cluster.ray_version, "nodes": cluster.nodes,
                    "cluster": cluster.address}
            _run(to_run, folder, settings, cache_dir, devices_file, rows, counts, progress)
    ordered = [rows[cell.id] for cell in cells]
    summary = {"started": started.isoformat(timespec="seconds"),
               "finished": datetime.now(UTC).isoformat(timespec="seconds"), "cells": len(ordered),
               "ok": sum(r["status"] == "ok" for r in ordered), "failed": sum(r["status"] == "failed" for r in ordered),
               "reused": sum(bool(r.get("reused")) for r in ordered), **info, "cpu": host["cpu"], "isa": host["isa"],
               "edgekit": __version__, "command": command, "settings": asdict(settings)}
    return SweepResult(ordered, summary, write_results(ordered, summary, folder))


def _run(to_run: list[tuple[Cell, str]], folder: Path, settings: Settings, cache_dir: Path | None,
         devices_file: str | Path | None, rows: dict[str, dict[str, Any]], counts: Counts,
         progress: Callable[[Counts], None] | None) -> None:
    """Submit every compile, then each measurement as its package arrives; keep each cell as it finishes."""
    import ray

    from edgekit.sweep.cluster import new_board, submit_compile, submit_measure

    board = new_board()
    cache = str(cache_dir) if cache_dir else None
    devices = str(devices_file) if devices_file else None
    pending: dict[Any, tuple[Cell, str, str]] = {}
    partial: dict[str, dict[str, Any]] = {}
    for cell, key in to_run:
        pending[submit_compile(board, cell, settings, cache)] = (cell, key, "compile")
    finished: set[str] = set()  # "CELL PHASE" of every task whose result is in
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
        for ref in ready:
            cell, key, phase = pending.pop(ref)
            finished.add(f"{cell.id} {phase}")
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as error:
                result = _worker_failure(phase, error)
            if phase == "compile":
                row, package = result["row"], result["package"]
                if result.get("log"):
                    write_atomic(folder / LOGS / f"{cell.slug}.txt", result["log"].encode())
                    row["reason"] += f" (traceback in {LOGS}/{cell.slug}.txt)"
                if row["status"] == "ok":
                    write_atomic(folder / PACKAGES / f"{cell.slug}.zip", package)
                    partial[cell.id] = row
                    pending[submit_measure(board, cell, settings, ray.put(package), devices)] = (cell, key, "measure")
                    continue
                final = row
            else:
                final = partial.pop(cell.id) | result
            rows[cell.id] = _keep(folder, cell, key, final)
            counts = Counts(counts.total, counts.done + 1, counts.running, counts.failed + (final["status"] == "failed"),
                            counts.reused)
        if progress:
            running = len(ray.get(board.started.remote()) - finished)
            counts = Counts(counts.total, counts.done, running, counts.failed, counts.reused)
            progress(counts)


def _worker_failure(phase: str, error: Exception) -> dict[str, Any]:
    """A task that died (its worker crashed, ran out of memory, could not be scheduled) as a failed result."""
    why = f"{phase} worker failed: {type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"
    return {"row": {"status": "failed", "reason": why}, "package": None, "log": None} if phase == "compile" \
        else {"status": "failed", "reason": why}


def _keep(folder: Path, cell: Cell, key: str, found: dict[str, Any]) -> dict[str, Any]:
    """The cell's full row, written to cells/KEY.json (with the package's sha256, so a later run can trust it)."""
    package = folder / PACKAGES / f"{cell.slug}.zip"
    ok = found["status"] == "ok"
    row = _row(cell, key, found | {"package": f"{PACKAGES}/{package.name}" if ok else None})
    stored = row | {"package_sha256": file_sha256(package) if ok else None}
    write_atomic(folder / CELLS / f"{key}.json", json.dumps(stored, indent=1, default=str).encode())
    return row


def _row(cell: Cell, key: str, found: dict[str, Any]) -> dict[str, Any]:
    """Every column of a row (see edgekit.sweep.results), what was found laid over empty values."""
    empty = {"chosen": None, "precision": None, "node": None, "reason": "", "quality_metric": None, "quality": None,
             "reference_quality": None, "fidelity": None, "latency_ms": None, "size_bytes": None, "peak_rss_mb": None,
             "compile_s": None, "measure_s": None, "package": None, "conditions": None, "measured_on": None,
             "steps": None}
    return {"cell": cell.id, "key": key, "model": cell.model.name, "source": cell.model.source, "target": cell.target,
            "recipe": cell.recipe, "device": cell.device, **empty, **found, "reused": False}


def _earlier(folder: Path, key: str, retry_failed: bool) -> dict[str, Any] | None:
    """The row an earlier run kept for this key, when it still holds: a failure (unless retried), or a success
    whose package is there with the sha256 it had."""
    path = folder / CELLS / f"{key}.json"
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(row, dict) or row.get("key") != key:
        return None
    if row.get("status") == "failed":
        return None if retry_failed else _public(row)
    package = folder / str(row.get("package"))
    if row.get("status") == "ok" and package.is_file() and package.parent == folder / PACKAGES \
            and file_sha256(package) == row.get("package_sha256"):
        return _public(row)
    return None


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "package_sha256"}


def _output_folder(folder: Path) -> Path:
    """The sweep's folder: new, empty, or an earlier sweep's (it has cells/); anything else is refused."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"sweep: {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / CELLS).is_dir():
        raise UserError(f"sweep: {folder} holds files that are not a sweep's; give an empty or new folder")
    for name in (CELLS, PACKAGES, LOGS):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return folder


def _check_recipes(recipes: tuple[str, ...]) -> None:
    """A recipe that is neither `auto`, a precision nor a recipe anywhere is a typo: one line, before any work."""
    from edgekit.build import PRECISION_NAME
    from edgekit.recipe import load_recipe

    for recipe in recipes:
        if recipe != "auto" and not PRECISION_NAME.fullmatch(recipe):
            try:
                load_recipe(recipe)
            except EdgekitError as error:
                raise UserError(f"sweep: --recipes {recipe}: {error}") from None


def _host() -> dict[str, str]:
    from edgekit.isa import host_cpu

    cpu = host_cpu()
    return {"cpu": cpu.model, "isa": f"{cpu.isa.name}: {' '.join(cpu.flags)}"}
