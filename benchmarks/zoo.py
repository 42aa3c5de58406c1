"""The conformance zoo run: every zoo model × every CPU-runnable target × {fp32, int8, auto}, then the peers.

Each model × target runs `--recipe auto` in a fresh subprocess (a crash in one runtime cannot
take the run down), keeping every candidate package: the fp32 and int8 cells are its candidates
for the target's fp32 and int8 recipes, the auto cell its choice. Each is run on the model's real
evaluation data and scored on the model's task. A cell is green when edgekit wrote a package;
red cells carry one line: edgekit's error message, or "BUG: …" for anything that escaped
edgekit's error handling. Results are kept per model × target in benchmarks/.cache/zoo/cells/
(delete them or pass --fresh to re-measure), so a long run can be resumed. Then, per model, the
fastest auto package within the task bar races the peers (benchmarks/peers.py) in one process,
alternating rounds, and ZOO.md is written.

    python benchmarks/zoo.py                                   # everything (an hour or more on 2 cores)
    python benchmarks/zoo.py --models digits,magika --targets cpu-ort
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.zoo import CACHE, MODELS, ZooModel  # noqa: E402

RECIPES = ("fp32", "int8", "auto")
CELL_TIMEOUT_S = 3600  # ExecuTorch lowers the Khmer CRNN (unrolled BiLSTM) in ~23 min on a quiet 2-core EPYC
TASK_BAR = 0.01  # a package keeps the task when its score is within this of the source's own (1.0 for agreement metrics)
OLD_MAX_DROP = 0.01  # the default tolerance before task-aware judging (issue 11)


def cpu_targets() -> list[str]:
    """Built-in targets that run on this machine's CPU (cpu-* and mobile-*), available here."""
    from edgekit.target import all_targets

    return [t.name for t in all_targets() if t.device in ("cpu", "mobile") and t.availability() is None]


def build(name: str) -> ZooModel:
    return importlib.import_module(f"benchmarks.zoo.{name}").build(CACHE)


def cell_path(model: str, target: str) -> Path:
    return CACHE / "cells" / f"{model}--{target}.json"


def int8_candidate(target: str, names: list[str]) -> str | None:
    """The auto candidate that `--recipe int8` compiles: the target's int8/static quantize entry."""
    return "int8-static" if "int8-static" in names else None


def run_target(model_name: str, target: str, threads: int, runs: int) -> list[dict]:
    """`--recipe auto` for one model on one target, keeping every candidate; the fp32, int8 and auto cells from it.

    The fp32 and int8 cells are auto's candidates for the target's fp32 and int8 recipes: the same
    steps on the same data as `--recipe fp32` / `--recipe int8`, compiled once.
    """
    from edgekit.autoselect import UnsupportedCandidates, compile_auto
    from edgekit.errors import EdgekitError
    from edgekit.spec import parse_input_spec

    started = time.perf_counter()
    base = {"model": model_name, "target": target}
    try:
        model = build(model_name)
        folder = CACHE / "packages" / f"{model_name}--{target}"
        shutil.rmtree(folder, ignore_errors=True)
        result = compile_auto(model.source, target, folder / "auto", model.calib, model.eval,
                              tuple(parse_input_spec(text) for text in model.inputs), CACHE / "steps",
                              bench_runs=runs, threads=threads, keep_candidates=folder / "candidates")
    except UnsupportedCandidates as error:  # each cell gets its own candidate's reason
        reasons = {row["name"]: row["reason"] for row in error.records}
        picks = {"fp32": "fp32", "int8": int8_candidate(target, list(reasons)), "auto": None}
        return [{**base, "recipe": recipe, "status": "failed",
                 "reason": reasons.get(name or "", "no candidate compiled (see the fp32 and int8 cells)")}
                for recipe, name in picks.items()]
    except EdgekitError as error:
        reason = str(error).splitlines()[0]
        return [{**base, "recipe": recipe, "status": "failed", "reason": reason} for recipe in RECIPES]
    except Exception as error:  # noqa: BLE001 — escaped edgekit's errors: a bug to list, not a crash
        reason = f"BUG: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
        return [{**base, "recipe": recipe, "status": "bug", "reason": reason, "traceback": traceback.format_exc(limit=8)}
                for recipe in RECIPES]
    rows = {row["name"]: row for row in result.manifest.auto["candidates"]}
    reference = model.task(model.reference)
    judged = judged_candidates(model, folder / "candidates", rows, threads, reference)
    old = old_default_choice(judged)
    picks = {"fp32": "fp32", "int8": int8_candidate(target, list(rows)), "auto": result.manifest.auto["chosen"]}
    cells = []
    for recipe, name in picks.items():
        row = rows.get(name or "")
        if row is None or row["status"] != "ok":
            reason = row["reason"] if row else f"the target has no {recipe} recipe"
            cells.append({**base, "recipe": recipe, "status": "failed" if row else "none", "reason": reason or row["verdict"]})
            continue
        package = result.package if recipe == "auto" else folder / "candidates" / name
        cells.append({**base, "recipe": recipe, **score(model, package, threads, reference), "chosen": name,
                      "p50_ms": row["p50_ms"], "size_bytes": row["size_bytes"], "conditions": row["conditions"],
                      "candidates": judged if recipe == "auto" else [],
                      "old_choice": old if recipe == "auto" else None})
    for cell in cells:
        cell["seconds"] = round(time.perf_counter() - started, 1)
    return cells


def old_within(fidelity: dict) -> bool:
    """The default tolerance before task-aware judging: top-1 accuracy when labelled, else the mean cosine, drop ≤ 0.01."""
    if "accuracy" in fidelity:
        return fidelity["reference_accuracy"] - fidelity["accuracy"] <= OLD_MAX_DROP + 1e-9
    return 1.0 - fidelity["cosine_mean"] <= OLD_MAX_DROP + 1e-9


def old_default_choice(candidates: list[dict]) -> str | None:
    """What `--recipe auto` chose before: the fastest p50 among candidates within the old default tolerance."""
    within = [row for row in candidates if row["status"] == "ok" and row["old_within"]]
    return min(within, key=lambda row: (row["p50_ms"], row["size_bytes"]))["name"] if within else None


def judged_candidates(model: ZooModel, folder: Path, rows: dict, threads: int, reference) -> list[dict]:
    """Every auto candidate with its new verdict, why it won or lost, its latency interval, the old default's verdict
    and its score on the model's task."""
    found = []
    for row in rows.values():
        kept = {k: row.get(k) for k in ("name", "status", "precision", "verdict", "p50_ms", "p50_low", "p50_high",
                                        "size_bytes", "reason", "why", "metric", "judged", "chosen")}
        if row["status"] == "ok":
            kept["old_within"] = old_within(row["fidelity"])
            kept["cosine_mean"] = row["fidelity"]["cosine_mean"]
            kept["task"] = score(model, folder / row["name"], threads, reference)["task"]
            kept["changes_task"] = kept["task"]["value"] < reference.value - TASK_BAR
        found.append(kept)
    return found


def score(model: ZooModel, package: Path, threads: int, reference) -> dict:
    """The task on a package, against the source model's own score."""
    from edgekit.runtime import load

    session = load(package, threads=threads)
    task = model.task(lambda feed: list(session.run(feed).values()))
    manifest = json.loads((Path(package) / "manifest.json").read_text())
    fidelity = manifest["metrics"]["fidelity"]
    return {"status": "ok", "package": str(package), "precision": manifest["precision"],
            "fidelity": {k: fidelity.get(k) for k in ("cosine_mean", "cosine_min", "max_rel", "top1_agreement", "executed_precision")},
            "task": {"metric": task.metric, "value": task.value, "reference": reference.value, "detail": task.detail},
            "keeps_task": task.value >= reference.value - TASK_BAR}


def target_in_subprocess(model: str, target: str, threads: int, runs: int, timeout_s: int = CELL_TIMEOUT_S) -> list[dict]:
    """One model × target in a fresh interpreter; a crash or time-out becomes red cells."""
    path = cell_path(model, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--cell", model, target, "--threads", str(threads), "--runs", str(runs)]
    base = {"model": model, "target": target, "status": "bug"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return [{**base, "recipe": recipe, "status": "timeout",
                 "reason": f"did not finish in {timeout_s} s on this machine (compile + auto candidates)"} for recipe in RECIPES]
    if done.returncode != 0 or not path.is_file():
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return [{**base, "recipe": recipe, "reason": f"BUG: the process died (exit {done.returncode}): {tail}"} for recipe in RECIPES]
    return json.loads(path.read_text())


def finalists(model: ZooModel, cells: list[dict], threads: int) -> list[dict]:
    """Per target, the fastest of its auto candidates that keeps the task (`--recipe auto` judged by the model's task
    instead of the default tolerance), fastest first. Compile-time p50s compare candidates of one target (measured in
    one compile, one after another) but not across targets (other zoo work may have run meanwhile): the race times
    each target's best again, side by side with the peers."""
    rows = [{**row, "target": cell["target"],
             "package": str(CACHE / "packages" / f"{cell['model']}--{cell['target']}" / "candidates" / row["name"])}
            for cell in cells if cell["recipe"] == "auto" and cell["status"] == "ok"
            for row in cell["candidates"] if row["status"] == "ok"]
    reference = model.task(model.reference)
    kept: dict[str, dict] = {}
    for row in sorted(rows, key=lambda row: row["p50_ms"]):
        if row["target"] in kept:
            continue
        scored = score(model, Path(row["package"]), threads, reference)
        if scored["keeps_task"]:
            kept[row["target"]] = {**row, **scored}
    return sorted(kept.values(), key=lambda row: row["p50_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--targets", default="")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--fresh", action="store_true", help="re-measure cells measured before")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT_S, help="seconds one model x target may take")
    parser.add_argument("--out", type=Path, default=HERE / "ZOO.md")
    parser.add_argument("--cell", nargs=2, metavar=("MODEL", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.cell:
        cells = run_target(*args.cell, args.threads, args.runs)
        cell_path(*args.cell).write_text(json.dumps(cells, indent=1))
        return
    from benchmarks.zoo_report import write_report

    models = [m for m in args.models.split(",") if m]
    targets = [t for t in args.targets.split(",") if t] or cpu_targets()
    cells: list[dict] = []
    pending = [(model, target) for model in models for target in targets]
    while pending:  # pairs another zoo process is measuring (its lock held) are taken up when it is done
        model, target = pending.pop(0)
        path, lock = cell_path(model, target), cell_path(model, target).with_suffix(".lock")
        if not path.is_file() or args.fresh:
            lock.parent.mkdir(parents=True, exist_ok=True)
            with lock.open("a") as held:
                try:  # an OS lock: a zoo process that dies (killed, crashed) releases it
                    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pending.append((model, target))
                    time.sleep(5)
                    continue
                path.write_text(json.dumps(target_in_subprocess(model, target, args.threads, args.runs, args.cell_timeout), indent=1))
        found = json.loads(path.read_text())
        cells += found
        for cell in found:
            print(f"{model:24} {target:18} {cell['recipe']:5} {cell['status']:6} "
                  + (f"{cell['p50_ms']:.3f} ms  {cell['task']['metric']} {cell['task']['value']:.4f} ({cell['chosen']})"
                     if cell["status"] == "ok" else cell["reason"][:140]), flush=True)
    order = {(m, t): i for i, (m, t) in enumerate((m, t) for m in models for t in targets)}
    cells.sort(key=lambda cell: order[(cell["model"], cell["target"])])
    races = {}
    if not args.no_peers:
        from benchmarks.peers import compare

        for model in models:
            try:
                zoo_model = build(model)
                best = finalists(zoo_model, [c for c in cells if c["model"] == model], args.threads)
                if not best:
                    races[model] = {"error": "no edgekit package keeps the task"}
                    continue
                races[model] = compare(zoo_model, [Path(b["package"]) for b in best], threads=args.threads) | {"finalists": best}
            except Exception as error:  # noqa: BLE001 — one model's race failing must not lose the others
                races[model] = {"error": f"{type(error).__name__}: {error}"}
            print(f"peers {model}: ratio {races[model].get('ratio')}", flush=True)
        (CACHE / "races.json").write_text(json.dumps(races, indent=1, default=str))
    write_report(args.out, cells, races, targets, list(RECIPES))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
