"""`--recipe auto` before and after task-aware judging, on the zoo's measured candidates: writes a RESULTS.md section.

Reads the cells `benchmarks/zoo.py` measured (every auto candidate with its latency interval, the new verdict, the
old default's verdict — mean cosine, or top-1 accuracy when labelled, drop ≤ 0.01 — and its score on the model's
task) and compares, per model × target, what the old rule chose (the fastest candidate within the old default) with
what auto chooses now, on the same measurements:

    python benchmarks/zoo.py --no-peers          # measure (cells are kept under benchmarks/.cache/zoo/cells)
    python benchmarks/auto_judging.py            # write the section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.zoo import CACHE  # noqa: E402

START, END = "<!-- auto-judging:start -->", "<!-- auto-judging:end -->"


def load_cells(models: list[str] | None = None) -> list[dict]:
    """The auto cell of every model × target measured with per-candidate task scores."""
    cells = []
    for path in sorted((CACHE / "cells").glob("*.json")):
        for cell in json.loads(path.read_text()):
            if cell["recipe"] == "auto" and cell["status"] == "ok" and "old_choice" in cell:
                if models is None or cell["model"] in models:
                    cells.append(cell)
    return cells


def precision_rank(precision: str) -> int:
    from edgekit.autoselect import precision_rank as rank

    return rank(precision)


def noise_violations(cell: dict) -> list[str]:
    """More precise candidates within tolerance that the chosen one is not faster than beyond the noise (should be
    none)."""
    from edgekit.autoselect import faster_beyond_noise

    rows = {row["name"]: row for row in cell["candidates"]}
    chosen = rows[cell["chosen"]]
    margin = 0.05
    return [row["name"] for row in rows.values()
            if row["status"] == "ok" and row["verdict"] == "within" and row["name"] != chosen["name"]
            and precision_rank(row["precision"]) < precision_rank(chosen["precision"])
            and not faster_beyond_noise(chosen, row, margin)]


def _ms(row: dict) -> str:
    interval = f" [{row['p50_low']:.2f}, {row['p50_high']:.2f}]" if row.get("p50_low") is not None else ""
    return f"{row['p50_ms']:.2f}{interval}"


def _task(row: dict) -> str:
    task = row["task"]
    return f"{task['value']:.3f}" + (" ⚠" if row["changes_task"] else "")


def section(cells: list[dict]) -> str:
    """The markdown: summary counts, then one row per model × target."""
    lines = []
    let_through = changed_through = 0
    old_changed = new_changed = violations = 0
    cost = []
    rows_md = []
    for cell in cells:
        rows = {row["name"]: row for row in cell["candidates"]}
        measured = [row for row in rows.values() if row["status"] == "ok"]
        through = [row for row in measured if row["old_within"]]
        let_through += len(through)
        changed_through += sum(row["changes_task"] for row in through)
        old, new = rows.get(cell["old_choice"] or ""), rows[cell["chosen"]]
        old_changed += bool(old and old["changes_task"])
        new_changed += new["changes_task"]
        bad = noise_violations(cell)
        violations += len(bad)
        if old:
            cost.append(new["p50_ms"] / old["p50_ms"])
        judged = "; ".join(f"{j['name']} ({j['output']})" for j in new.get("judged") or [])
        rows_md.append(
            f"| {cell['model']} | {cell['target']} | {judged} | "
            + (f"{old['name']} · {_ms(old)} · {_task(old)}" if old else "none within")
            + f" | {new['name']} · {_ms(new)} · {_task(new)} | "
            + (f"{new['p50_ms'] / old['p50_ms']:.2f}×" if old else "") + f" | {len(through)} / "
            f"{sum(row['changes_task'] for row in through)} | {_why(new)} |")
    conditions = cells[0]["conditions"] if cells else {}
    flags = " ".join(conditions.get("cpu_flags") or []) or "none recorded"
    lines.append(f"Measured by `benchmarks/zoo.py` then `benchmarks/auto_judging.py` on **{conditions.get('cpu', '?')}** "
                 f"(ISA {conditions.get('isa', '?')}; flags: {flags}), threads {conditions.get('threads')}, "
                 f"{conditions.get('runs')} timed "
                 "runs per candidate (p50 with its 95% order-statistic interval, ms). Task = the zoo's own task metric "
                 "on the package against the source model (decoded text exact, top-1 / top-5, mask IoU, face box "
                 "IoU, cosine); ⚠ = more than 0.01 below the source's own score, i.e. the package changed the task "
                 "output. Old rule: fastest p50 within mean cosine (top-1 accuracy when labelled) drop ≤ 0.01. New "
                 "rule: each output judged by the metric its values call for, worst sample bounded for per-position "
                 "metrics, and a less precise candidate only when ≥ 5% faster with non-overlapping intervals.")
    lines.append("")
    lines.append(f"- cells (model × target): {len(cells)}")
    lines.append(f"- candidates the old default let through: {let_through}, of which **{changed_through} changed the "
                 "task output**")
    lines.append(f"- auto packages that changed the task output: old rule **{old_changed}**, new rule **{new_changed}**")
    lines.append(f"- new auto packages slower than a more precise candidate within noise: **{violations}**")
    if cost:
        ordered = sorted(cost)
        lines.append(f"- speed cost of the new choice (new p50 / old p50): median {ordered[len(ordered) // 2]:.2f}×, "
                     f"worst {ordered[-1]:.2f}×, best {ordered[0]:.2f}× (same measurements; > 1: the new package is "
                     "slower)")
    lines += ["", "| model | target | judged by (output) | old auto · p50 · task | new auto · p50 · task | cost | "
              "old let through / changed task | why the new one |", "|---|---|---|---|---|---|---|---|", *rows_md]
    return "\n".join(lines)


def _why(row: dict) -> str:
    return re.sub(r"\s+", " ", row.get("why") or "").replace("|", "/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated (default: every measured model)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    cells = load_cells([m for m in args.models.split(",") if m] or None)
    if not cells:
        raise SystemExit("no zoo cells with per-candidate task scores: run benchmarks/zoo.py first")
    body = "## `--recipe auto`: judged by the task (benchmarks/auto_judging.py)\n\n" + section(cells)
    text = args.out.read_text() if args.out.is_file() else "# Benchmark results\n"
    block = f"{START}\n{body}\n{END}"
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S) if START in text \
        else text.rstrip() + "\n\n" + block + "\n"
    args.out.write_text(text)
    print(section(cells))


if __name__ == "__main__":
    main()
