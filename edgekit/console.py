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

from edgekit.errors import printable
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
    show_layers(manifest)
    show_precision_plan(manifest.precision_plan)
    show_bench([bench])


def show_precision_plan(plan: dict | None) -> None:
    """A budget's mixed precision in one line: how many layers went to fp32, against what, after how many candidates."""
    if not plan:
        return
    promoted, layers = plan.get("promoted") or {}, plan.get("layers") or []
    budget = ", ".join(f"{key} {value}" for key, value in (plan.get("budget") or {}).items())
    measured = plan.get("measured") or {}
    say(f"mixed precision ({printable(budget)}): {len(promoted)} of {len(layers)} quantized layers kept in fp32 after "
        f"{len(plan.get('candidates') or [])} candidates; {measured.get('size_mb', 0):.2f} MB, "
        f"{measured.get('latency_ms', 0):.2f} ms here (fp32 {measured.get('float_size_mb', 0):.2f} MB, "
        f"{measured.get('float_latency_ms', 0):.2f} ms); the manifest's precision_plan lists each layer")


def show_layers(manifest) -> None:
    """The layer where the package departs most from its source (the manifest's layers section), or why unmeasured."""
    if manifest.layers and manifest.layers.layers:
        worst = manifest.layers.layers[0]
        snr = "exact" if worst.snr_db is None else f"SNR {worst.snr_db:.1f} dB"
        say(f"worst layer: {printable(worst.module)} ({printable(worst.op)}, {worst.precision or '?'}) {snr}, cosine "
            f"{worst.cosine_mean:.4f}, on {manifest.layers.samples} samples; `edgekit diff` shows every layer")
    elif manifest.layers_skipped:
        say(f"layers not measured: {printable(manifest.layers_skipped)}")


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
    """The records side by side (their raw samples stay in --json), then the conditions they were measured under."""
    table = Table(title="edgekit bench")
    for column in ("package", "target", "runtime", "precision", "size", "cold load ms", "warm load ms", "first ms",
                   "p50 ms [95% CI]", "p90 ms", "p99 ms", "mean ms", "throughput/s", "peak RSS MB"):
        table.add_column(column, justify="left" if column in ("package", "target", "runtime", "precision") else "right",
                         no_wrap=column != "package")
    for r in results:
        lat = r.latency_ms
        runtime = f"{r.runtime} {r.conditions.get('runtime_version', '')}"
        interval = "" if lat.p50_low is None or lat.p50_high is None else f" [{lat.p50_low:.3g}, {lat.p50_high:.3g}]"
        table.add_row(escape(r.package), r.target, runtime, r.precision, _size(r.file_bytes),
                      _ms(r.load_ms) if r.cold_load else "-", "-" if r.warm_load_ms is None else _ms(r.warm_load_ms),
                      _ms(r.first_run_ms), f"{lat.p50:.3g}{interval}", _ms(lat.p90), _ms(lat.p99), _ms(lat.mean),
                      f"{r.throughput_per_s:.0f}", f"{r.peak_rss_mb:.0f}")
    out.print(table)
    not_cold = [r for r in results if not r.cold_load]
    if not_cold:
        say("cold load: not measured for " + ", ".join(f"{r.package} (its runtime was imported before; first load there "
                                                      f"{_ms(r.load_ms)} ms)" for r in not_cold))
    out.print(conditions_line(results[0].conditions) if results else "")


def show_comparisons(comparisons, baseline: str, margin: float, to_stderr: bool = False) -> None:
    """One line per package against its baseline record: faster / same within the noise / slower beyond it."""
    console = err if to_stderr else out
    for c in comparisons:
        if c.old is None:
            line = f"{c.package}: not in the baseline (no record of that package name or of the same model files)"
        else:
            figures = f"p50 {c.new} now vs {c.old} in the baseline"
            line = {"slower": f"{c.package}: slower by {c.change:.1%} beyond the noise: {figures}",
                    "faster": f"{c.package}: faster by {-c.change:.1%} beyond the noise: {figures}",
                    "same": f"{c.package}: same within the noise ({c.change:+.1%}): {figures}"}[c.verdict]
            if c.differences:
                line += ("; ACROSS CPUS: " if c.across_cpus else "; conditions differ: ") + "; ".join(c.differences)
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    slower = sum(1 for c in comparisons if c.verdict == "slower")
    console.print(f"rule: slower or faster only when the p50s' 95% intervals are apart and the faster p50 is at least "
                  f"{margin:.0%} below the other (baseline {baseline}); {slower} of {len(comparisons)} slower beyond the noise",
                  markup=False, highlight=False, soft_wrap=True)


def conditions_line(conditions: dict) -> str:
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in conditions["input_shapes"].items())
    isa = f", ISA {conditions['isa']}: {' '.join(conditions['cpu_flags']) or 'no recorded flags'}" if "isa" in conditions else ""
    return (f"conditions: threads {conditions['threads']}, batch {conditions['batch']}, {conditions['warmup']} warm-up + "
            f"{conditions['runs']} timed runs, inputs {shapes}, {conditions['cpu']} ({conditions['machine']}{isa})"
            f"{_clock(conditions.get('cpu_frequency'))}")


def _clock(frequency: dict | None) -> str:
    """cpu0's governor and MHz as cpufreq gave them, or that the kernel gave none."""
    if frequency is None:
        return ""
    if all(value == "unavailable" for value in frequency.values()):
        return "; CPU governor and frequency unavailable (the kernel exposes no cpufreq)"
    mhz = {key: "unavailable" if frequency[key] == "unavailable" else f"{frequency[key]:.0f} MHz"
           for key in ("cur_mhz", "max_mhz")}
    return f"; cpu0 governor {frequency['governor']}, {mhz['cur_mhz']} now, {mhz['max_mhz']} max"


def device_line(identity: dict) -> str:
    """A device in one line: its CPU and ISA, cores, memory, OS, Python, edgekit and runtime versions (as the device
    reported them: control characters escaped)."""
    cpu = identity["cpu"]
    memory = "" if identity.get("memory_mb") is None else f", {identity['memory_mb'] / 1024:.1f} GiB"
    runtimes = ", ".join(f"{name} {version}" for name, version in identity["runtimes"].items()) or "no runtime"
    flags = " ".join(cpu["flags"]) or "no recorded flags"
    return printable(f"{cpu['model']} ({cpu['machine']}, ISA {cpu['isa']}: {flags}), {identity['cpu_count']} cores"
                     f"{memory}; {identity['os']['name']}; Python {identity['python']['version']}, "
                     f"edgekit {identity['edgekit']}, {runtimes}")


def show_device(identity: dict) -> None:
    """Which device the figures below come from."""
    say(f"on device {identity['name']} ({identity['url']}): {device_line(identity)}")


def show_devices(rows: list[dict]) -> None:
    table = Table(title=f"edgekit devices ({rows[0]['file']})" if rows else "edgekit devices: none")
    for column in ("name", "url", "python", *(("identity",) if any("identity" in r or "error" in r for r in rows) else ())):
        table.add_column(column)
    for row in rows:
        probed = (escape(device_line(row["identity"])) if "identity" in row else f"[red]{escape(row['error'])}[/red]"
                  if "error" in row else None)
        table.add_row(escape(row["name"]), escape(row["url"]), escape(row["python"]), *((probed,) if probed else ()))
    out.print(table)


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


def show_profile(profile, top: int | None) -> None:
    """One package's ops, slowest first (the `top` of them, or all), with the profiler and the conditions."""
    if not profile.available:
        say(f"{profile.package} ({profile.runtime}): per-op profile {profile.reason}")
        return
    shown = profile.ops if top is None else profile.ops[:top]
    table = Table(title=f"edgekit profile: {escape(profile.package)} ({profile.target}, {profile.precision})")
    for column in ("op", "type", "mean ms", "p50 ms", "share", "precision", "kernel", "provider", "module"):
        table.add_column(column, justify="right" if column in ("mean ms", "p50 ms", "share") else "left")
    for op in shown:  # names come from the model file (someone else's): shown, never obeyed by the terminal
        table.add_row(_cell(op.name), _cell(op.type), f"{op.ms:.4f}", f"{op.p50_ms:.4f}", f"{op.share:.1%}",
                      op.precision or "-", _cell(op.kernel), _cell(op.provider), _cell(op.module))
    out.print(table)
    rest = profile.ops[len(shown):]
    if rest:
        say(f"{len(rest)} more ops, {sum(op.share for op in rest):.1%} of the time (--all shows them)")
    say(f"ops total {profile.ops_ms:.4f} ms per run (mean); one whole run with the profiler on: mean {profile.wall_ms:.4f} "
        f"ms, median {profile.wall_p50_ms:.4f} ms; "
        f"{profile.profiler}; {profile.runtime} {profile.runtime_version}")
    say(conditions_line(profile.conditions))


def show_profile_diff(diff: dict) -> None:
    """Where B's time went against A's: one line per finding, per source module, and the summary."""
    from edgekit.profiling.diff import module_lines

    a, b = diff["a"], diff["b"]
    say(f"diff: A = {a['package']} ({a['runtime']}, {a['precision']}), B = {b['package']} ({b['runtime']}, "
        f"{b['precision']}); each op's median time per run")
    for line in [*(finding["line"] for finding in diff["findings"]), *module_lines(diff["modules"]), diff["summary"]]:
        say(printable(line))  # op types and module names come from the model files


def _cell(text: str | None) -> str:
    """A table cell of text from a model or a device: its control characters escaped, its brackets not markup."""
    return escape(printable(text or "-"))
