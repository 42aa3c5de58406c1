"""The conformance zoo run: every zoo model × every CPU-runnable target × {fp32, int8, auto}, then the peers.

Each cell compiles one package in a fresh subprocess (a crash in one runtime cannot take the
run down), runs it on the model's real evaluation data and scores the model's task with it.
A cell is green when edgekit wrote a package; red cells carry one line: edgekit's error
message, or "BUG: …" for anything that escaped edgekit's error handling. Results are kept per
cell in benchmarks/.cache/zoo/cells/ (delete them or pass --fresh to re-measure), so a long run
can be resumed. Then, per model, the fastest auto package within the task bar races the peers
(benchmarks/peers.py) in one process, alternating rounds, and ZOO.md is written.

    python benchmarks/zoo.py                                   # everything (an hour or more on 2 cores)
    python benchmarks/zoo.py --models digits,magika --targets cpu-ort --recipes fp32,int8
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.zoo import CACHE, MODELS, ZooModel  # noqa: E402

RECIPES = ("fp32", "int8", "auto")
CELL_TIMEOUT_S = 1800
TASK_BAR = 0.01  # a package keeps the task when its score is within this of the source's own (1.0 for agreement metrics)


def cpu_targets() -> list[str]:
    """Built-in targets that run on this machine's CPU (cpu-* and mobile-*), available here."""
    from edgekit.target import all_targets

    return [t.name for t in all_targets() if t.device in ("cpu", "mobile") and t.availability() is None]


def build(name: str) -> ZooModel:
    return importlib.import_module(f"benchmarks.zoo.{name}").build(CACHE)


def cell_path(model: str, target: str, recipe: str) -> Path:
    return CACHE / "cells" / f"{model}--{target}--{recipe}.json"


def run_cell(model_name: str, target: str, recipe: str, threads: int, runs: int) -> dict:
    """Compile, score and measure one cell in this process; every outcome is a dict."""
    from edgekit import compile as compile_package
    from edgekit.errors import EdgekitError
    from edgekit.runtime import load
    from edgekit.spec import parse_input_spec

    started = time.perf_counter()
    cell: dict = {"model": model_name, "target": target, "recipe": recipe}
    try:
        model = build(model_name)
        output = CACHE / "packages" / f"{model_name}--{target}--{recipe}"
        result = compile_package(model.source, target, output, recipe, model.calib, model.eval,
                                 tuple(parse_input_spec(text) for text in model.inputs), CACHE / "steps",
                                 bench_runs=runs, threads=threads)
        manifest = result.manifest
        session = load(result.package, threads=threads)
        task = model.task(lambda feed: list(session.run(feed).values()))
        reference = model.task(model.reference)
        bench = manifest["metrics"]["bench"]
        cell.update(
            status="ok", package=str(result.package), precision=manifest["precision"],
            chosen=(manifest.get("auto") or {}).get("chosen", manifest["recipe"]["name"]),
            p50_ms=bench["latency_ms"]["p50"], size_bytes=sum(entry["bytes"] for entry in manifest["files"]),
            fidelity={k: manifest["metrics"]["fidelity"].get(k) for k in ("cosine_mean", "cosine_min", "max_rel",
                                                                           "top1_agreement", "executed_precision")},
            task={"metric": task.metric, "value": task.value, "reference": reference.value, "detail": task.detail},
            keeps_task=task.value >= reference.value - TASK_BAR,
            candidates=[{k: row.get(k) for k in ("name", "status", "verdict", "p50_ms", "reason")}
                        for row in (manifest.get("auto") or {}).get("candidates", [])],
            conditions={k: bench["conditions"].get(k) for k in ("threads", "batch", "runs", "warmup", "input_shapes")},
        )
    except EdgekitError as error:
        cell.update(status="failed", reason=str(error).splitlines()[0])
    except Exception as error:  # noqa: BLE001 — a cell that escaped edgekit's errors is a bug to list, not a crash
        cell.update(status="bug", reason=f"BUG: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}",
                    traceback=traceback.format_exc(limit=8))
    cell["seconds"] = round(time.perf_counter() - started, 1)
    return cell


def cell_in_subprocess(model: str, target: str, recipe: str, threads: int, runs: int) -> dict:
    """One cell in a fresh interpreter; a crash or time-out becomes a red cell."""
    path = cell_path(model, target, recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--cell", model, target, recipe, "--threads", str(threads), "--runs", str(runs)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CELL_TIMEOUT_S, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"model": model, "target": target, "recipe": recipe, "status": "bug", "reason": f"timed out after {CELL_TIMEOUT_S} s"}
    if done.returncode != 0 or not path.is_file():
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return {"model": model, "target": target, "recipe": recipe, "status": "bug",
                "reason": f"BUG: the cell's process died (exit {done.returncode}): {tail}"}
    return json.loads(path.read_text())


def best_auto(cells: list[dict]) -> dict | None:
    """The fastest auto package that keeps the task, over every target."""
    kept = [c for c in cells if c["recipe"] == "auto" and c["status"] == "ok" and c["keeps_task"]]
    return min(kept, key=lambda c: c["p50_ms"], default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--targets", default="")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--fresh", action="store_true", help="re-measure cells measured before")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "ZOO.md")
    parser.add_argument("--cell", nargs=3, metavar=("MODEL", "TARGET", "RECIPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.cell:
        cell = run_cell(*args.cell, args.threads, args.runs)
        cell_path(*args.cell).write_text(json.dumps(cell, indent=1))
        return
    from benchmarks.zoo_report import write_report

    models = [m for m in args.models.split(",") if m]
    targets = [t for t in args.targets.split(",") if t] or cpu_targets()
    recipes = [r for r in args.recipes.split(",") if r]
    cells: list[dict] = []
    for model in models:
        for target in targets:
            for recipe in recipes:
                path = cell_path(model, target, recipe)
                if path.is_file() and not args.fresh:
                    cell = json.loads(path.read_text())
                else:
                    cell = cell_in_subprocess(model, target, recipe, args.threads, args.runs)
                    path.write_text(json.dumps(cell, indent=1))
                cells.append(cell)
                print(f"{model:24} {target:18} {recipe:5} {cell['status']:6} "
                      + (f"{cell['p50_ms']:.3f} ms  {cell['task']['metric']} {cell['task']['value']:.4f}"
                         if cell["status"] == "ok" else cell["reason"][:140]), flush=True)
    races = {}
    if not args.no_peers:
        from benchmarks.peers import compare

        for model in models:
            best = best_auto([c for c in cells if c["model"] == model])
            if best is None:
                races[model] = {"error": "no auto package keeps the task"}
                continue
            try:
                races[model] = compare(build(model), Path(best["package"]), threads=args.threads) | {"edgekit_cell": best}
            except Exception as error:  # noqa: BLE001 — one model's race failing must not lose the others
                races[model] = {"error": f"{type(error).__name__}: {error}"}
            print(f"peers {model}: ratio {races[model].get('ratio')}", flush=True)
    write_report(args.out, cells, races, targets, recipes)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
