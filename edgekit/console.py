"""Rendering for the CLI: logging, step progress, and tables (rich, on stderr for progress)."""

from __future__ import annotations

import json
import logging
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgekit.instruments import Instrument
from edgekit.manifest import BenchRecord

WIDE = 200  # when output is a pipe or file, do not squeeze tables into 80 columns
out = Console(width=None if Console().is_terminal else WIDE)
err = Console(stderr=True, width=None if Console(stderr=True).is_terminal else WIDE)


def setup_logging(level: int) -> None:
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("edgekit")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def print_json(value: Any) -> None:
    out.file.write(json.dumps(value, indent=2, default=str) + "\n")


class StepDisplay(Instrument):
    """A progress line per pipeline step (spinner, bar for counted work, time, 'cached')."""

    def __init__(self, enabled: bool = True) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 console=err, disable=not enabled or not err.is_terminal)
        self.enabled = enabled
        self.task = None

    def __enter__(self) -> StepDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    # Instrument
    def before_step(self, step, model, record) -> None:
        label = step.step.pass_name + (" (inserted)" if step.origin != "recipe" else "")
        self.task = self.progress.add_task(label, total=None)

    def after_step(self, step, before, after, record) -> None:
        note = "cached" if record.cached else f"{record.seconds:.1f}s"
        if self.task is not None:
            self.progress.update(self.task, total=1, completed=1,
                                 description=f"{step.step.pass_name} [dim]({note})[/dim]")
        if self.enabled and not err.is_terminal:
            err.print(f"  {step.step.pass_name:<18} {step.origin:<9} {note}", highlight=False)

    # Progress (work inside a step)
    def start(self, label: str, total: int | None) -> None:
        if self.task is None:
            self.task = self.progress.add_task(label, total=total)
        else:
            self.progress.update(self.task, total=total, completed=0)

    def advance(self, amount: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, amount)

    def finish(self, note: str = "") -> None:
        pass


def show_plan(plan) -> None:
    table = Table(title=f"plan: {plan.source_format.value} → {plan.target.name} ({plan.recipe.name})")
    for column in ("#", "pass", "from → to", "origin", "why"):
        table.add_column(column)
    for index, step in enumerate(plan.steps, 1):
        origin = f"[yellow]{step.origin}[/yellow]" if step.origin == "inserted" else step.origin
        table.add_row(str(index), step.step.pass_name, f"{step.accepts.value} → {step.produces.value}", origin, step.reason)
    out.print(table)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _size(count: int) -> str:
    return f"{count / 1e6:.2f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"


def show_compiled(result) -> None:
    manifest = result.manifest
    cached = sum(1 for r in result.records if r.cached)
    out.print(f"[bold green]package[/bold green] {result.package}  "
              f"({manifest.target.name}, {manifest.precision}, {_size(manifest.file_bytes)}); "
              f"{cached}/{len(result.records)} steps from cache")
    metrics = manifest.metrics
    if metrics is None:
        out.print("[yellow]not measured: the target cannot run on this machine[/yellow]")
        return
    fidelity, bench, verdict = metrics.fidelity, metrics.bench, metrics.verdict
    parts = [f"cosine {fidelity['cosine_mean']:.6f} (min {fidelity['cosine_min']:.6f})",
             f"max abs {fidelity['max_abs']:.2e}"]
    if "top1_agreement" in fidelity:
        parts.append(f"top-1 agreement {fidelity['top1_agreement']:.4f}")
    if "accuracy" in fidelity:
        parts.append(f"accuracy {fidelity['accuracy']:.4f} (source {fidelity['reference_accuracy']:.4f})")
    out.print(f"fidelity on {fidelity['samples']} samples of {fidelity['data']}: " + ", ".join(parts))
    for judged in metrics.judged or (verdict,):
        show_verdict(judged)
    show_bench([bench])


def show_verdict(verdict) -> None:
    """One output's judgement: why its metric, the mean and the worst sample against their limits."""
    if verdict.reason:
        say(f"judged by {verdict.metric}: {verdict.reason}")
    worst = "" if verdict.worst is None else f", worst sample #{verdict.worst_sample} {verdict.worst:.4f}"
    changed = "" if verdict.changed is None else f", changed on {verdict.changed}/{verdict.samples} samples"
    bound = "" if verdict.worst_limit is None else f", worst-sample drop {verdict.worst_drop:.4g} (limit {verdict.worst_limit})"
    state = "" if verdict.limit is None and verdict.worst_limit is None else (" — within" if verdict.ok else " — MISSES")
    say(f"  {verdict.metric} {verdict.value:.4f} (source {verdict.reference:.4g}){worst}{changed}; "
        f"drop {verdict.drop:.4g} (limit {verdict.limit}){bound}{state}")


def show_auto(auto: dict) -> None:
    """The candidates `--recipe auto` measured: latency with its interval, size, metric, worst sample, and why each
    won or lost."""
    limit = auto["tolerance"]
    bounds = "default limits per metric" if limit["default"] else f"max_drop {limit['max_drop']}"
    if limit.get("worst") is not None:
        bounds += f", worst {limit['worst']}"
    table = Table(title=f"--recipe auto: metric {limit['metric']}, {bounds}{' (relative)' if limit['relative'] else ''}")
    for column in ("candidate", "precision", "p50 ms [95% CI]", "size", "metric", "mean", "worst", "changed", "verdict",
                   "why"):
        table.add_column(column, justify="right" if column in ("size", "mean", "worst", "changed") else "left")
    for row in auto["candidates"]:
        if row["status"] != "ok":
            table.add_row(row["name"], row["precision"], "", "", "", "", "", "", f"[red]{row['verdict']}[/red]",
                          escape(row.get("why") or row.get("reason", "")))
            continue
        metric = row["metric"]
        verdict = "[bold green]chosen[/bold green]" if row["chosen"] else (
            "within" if row["verdict"] == "within" else "[yellow]misses[/yellow]")
        interval = f" [{row['p50_low']:.3g}, {row['p50_high']:.3g}]" if row.get("p50_low") is not None else ""
        changed = "" if metric.get("changed") is None else f"{metric['changed']}/{metric['samples']}"
        worst = "" if metric.get("worst") is None else f"{metric['worst']:.4f}"
        table.add_row(row["name"], row["precision"], f"{_ms(row['p50_ms'])}{interval}", _size(row["size_bytes"]),
                      escape(f"{metric['name']} ({metric['output']})" if metric.get("output") else metric["name"]),
                      f"{metric['value']:.4f}", worst, changed, verdict, escape(row.get("why", "")))
    out.print(table)
    say(f"rule: {auto['rule']}; latency measured one candidate after another on this machine")


def show_bench(results: list[BenchRecord]) -> None:
    table = Table(title="edgekit bench")
    for column in ("package", "target", "runtime", "precision", "size", "load ms", "first ms", "p50 ms", "p90 ms",
                   "p99 ms", "mean ms", "throughput/s", "peak RSS MB"):
        table.add_column(column, justify="left" if column in ("package", "target", "runtime", "precision") else "right")
    for r in results:
        lat = r.latency_ms
        runtime = f"{r.runtime} {r.conditions.get('runtime_version', '')}"
        table.add_row(r.package, r.target, runtime, r.precision, _size(r.file_bytes), _ms(r.load_ms),
                      _ms(r.first_run_ms), _ms(lat.p50), _ms(lat.p90), _ms(lat.p99), _ms(lat.mean),
                      f"{r.throughput_per_s:.0f}", f"{r.peak_rss_mb:.0f}")
    out.print(table)
    out.print(conditions_line(results[0].conditions) if results else "")


def conditions_line(conditions: dict) -> str:
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in conditions["input_shapes"].items())
    isa = f", ISA {conditions['isa']}: {' '.join(conditions['cpu_flags']) or 'no recorded flags'}" if "isa" in conditions else ""
    return (f"conditions: threads {conditions['threads']}, batch {conditions['batch']}, {conditions['warmup']} warm-up + "
            f"{conditions['runs']} timed runs, inputs {shapes}, {conditions['cpu']} ({conditions['machine']}{isa})")


def say(text: str) -> None:
    """One plain line (paths and names are not read as markup)."""
    out.print(text, markup=False, highlight=False)


def show_verification(result) -> None:
    say(f"{result.package}: {result.files} files match their sha256")
    if result.signed_by is None:
        say("signature: none (unsigned)")
    elif result.signature_checked:
        say(f"signature: valid, by trusted key {result.signed_by[:16]}")
    else:
        say(f"signature: by key {result.signed_by[:16]}, not checked (give --key PUBLIC_KEY to check it)")
    golden = result.golden
    if golden is None:
        say(f"self-test: skipped: {result.golden_skipped}")
        return
    figures = f"cosine min {golden.worst['cosine_min']:.6f}, max rel {golden.worst['max_rel']:.2e}"
    say(f"self-test: {golden.samples} samples, worst output {golden.worst_output}: {figures}; "
        f"needs {golden.criterion}: {'ok' if golden.ok else 'FAILED'}")


def show_cache(areas) -> None:
    table = Table(title="edgekit cache")
    for column in ("area", "entries", "size", "oldest use", "folder"):
        table.add_column(column, justify="right" if column in ("entries", "size", "oldest use") else "left")
    for area in areas:
        age = "-" if area.oldest_use_s is None else f"{area.oldest_use_s / 86400:.1f} d"
        table.add_row(area.name, str(area.entries), _size(area.bytes), age, escape(area.folder))
    out.print(table)


def show_inspect(summary: dict) -> None:
    out.print(f"[bold]{summary['source']}[/bold]  format {summary['format']}"
              + (f", {_size(summary['size_bytes'])}" if summary.get("size_bytes") else "")
              + (f", {summary['parameters']:,} parameters" if "parameters" in summary else "")
              + (f", opset {summary['opset']}" if "opset" in summary else ""))
    table = Table()
    for column in ("io", "name", "shape", "dtype"):
        table.add_column(column)
    for kind in ("inputs", "outputs"):
        for spec in summary[kind]:
            table.add_row(kind[:-1], spec["name"], "x".join(map(str, spec["shape"])), spec["dtype"])
    out.print(table)
    if summary.get("operators"):
        out.print("operators: " + ", ".join(f"{op} {n}" for op, n in summary["operators"].items()))


def show_targets(rows: list[dict]) -> None:
    table = Table(title="targets")
    for column in ("name", "device", "runtime", "format", "precisions", "here"):
        table.add_column(column)
    for row in rows:
        here = "[green]available[/green]" if row["unavailable"] is None else f"[red]no[/red]: {escape(row['unavailable'])}"
        table.add_row(row["name"], row["device"], row["runtime"], row["format"], ", ".join(row["precisions"]), here)
    out.print(table)


def show_recipes(rows: list[dict]) -> None:
    table = Table(title="recipes")
    for column in ("name", "precision", "steps", "description"):
        table.add_column(column)
    for row in rows:
        steps = " → ".join(_step_label(step) for step in row["steps"])
        table.add_row(row["name"], row["precision"], steps, row["description"].strip())
    out.print(table)


def _step_label(step: dict) -> str:
    """A recipe step as the listing shows it: the pass, or the intent (`quantize int8/static`) a target lowers."""
    if "quantize" in step:
        intent = step["quantize"]
        return f"quantize {intent['precision']}" + (f"/{intent['scheme']}" if "scheme" in intent else "")
    return step["pass"]


def show_demo(rows: list[dict]) -> None:
    table = Table(title="edgekit demo: digits CNN (scikit-learn digits, held-out split)")
    for column in ("target", "runtime", "precision", "recipe", "size", "p50 ms", "mean ms", "accuracy", "source acc.",
                   "top-1 agree"):
        table.add_column(column, justify="left" if column in ("target", "precision", "recipe") else "right")
    failures = []
    for row in rows:
        if "error" in row:  # the reason goes below the table: in a cell it would widen the size column
            failures.append(row)
            table.add_row(row["target"], "", row["precision"], row["recipe"], "failed", *[""] * 5)
            continue
        table.add_row(row["target"], row["runtime"], row["precision"], row["recipe"], _size(row["file_bytes"]), _ms(row["p50_ms"]),
                      _ms(row["mean_ms"]), f"{row['accuracy']:.4f}", f"{row['reference_accuracy']:.4f}",
                      f"{row['top1_agreement']:.4f}")
    out.print(table)
    for row in failures:
        out.print(escape(f"failed: {row['target']} {row['precision']} ({row['recipe']}): {row['error']}"), highlight=False)
    measured = [row for row in rows if "conditions" in row]
    if measured:
        out.print(conditions_line(measured[0]["conditions"]))
