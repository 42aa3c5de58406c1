"""The `edgekit` command: parses, calls the Python API, renders. Reads the environment here only."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

import click
import yaml

from edgekit.errors import EdgekitError

CACHE_ENV = "EDGEKIT_CACHE_DIR"
METRIC_OPTIONS = ("output", "axis", "blank", "threshold", "decode")


class Group(click.Group):
    """Turns EdgekitError into one line on stderr and exit 1; --debug shows the traceback.

    A pass that failed unexpectedly (PassFailed: a bug here or in a backend) also writes its cause's
    traceback to the backend log, and the line says where it is."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgekitError as error:
            if ctx.meta.get("debug"):
                raise
            click.echo(f"error: {error}{_traceback_hint(error, ctx.meta.get('backend_log'))}", file=_terminal())
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was written", file=_terminal())
            sys.exit(130)


class LoggedCommand(click.Command):
    """Runs its callback with the backends' output going to the log (unless -v/--debug): parsing, --help and usage
    errors stay on the terminal. A pass's unexpected failure leaves its traceback in the log."""

    def invoke(self, ctx: click.Context):
        path = ctx.meta.get("backend_log_path")
        if path is None:
            return super().invoke(ctx)
        from edgekit.backend_output import to_log
        from edgekit.errors import PassFailed

        with to_log(path) as log:
            ctx.meta["backend_log"] = log
            try:
                return super().invoke(ctx)
            except PassFailed as failed:
                if log is not None:
                    traceback.print_exception(failed.cause, file=sys.stderr)  # sys.stderr is the log here
                raise


Group.command_class = LoggedCommand
Group.group_class = type  # subgroups (edgekit cache) are Groups with logged commands too


def _traceback_hint(error: EdgekitError, log: Path | None) -> str:
    from edgekit.errors import PassFailed

    if not isinstance(error, PassFailed):
        return ""
    if log is None:
        return " (run with --debug for the traceback)"
    return f" (traceback in {log}; --debug shows it here)"


def _terminal():
    """Where edgekit's own error lines go: the terminal's stderr even while backend output goes to the log."""
    from edgekit import console

    return console.err.file


@click.group(cls=Group)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Errors only.")
@click.version_option(package_name="edgekit")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: int, quiet: bool) -> None:
    """edgekit: take a trained model to an edge device as a measured package."""
    ctx.meta["debug"] = debug
    ctx.meta["verbose"] = verbose
    from edgekit.console import setup_logging
    from edgekit.distributed import is_writer

    writer = is_writer()  # under torchrun, ranks besides 0 train with rank 0 and show nothing but errors
    if not (verbose or debug):  # keep backends' own chatter off the terminal: in the log, shown live with -v
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # absl/TF C++ INFO lines of the LiteRT converter
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category)
        # LoggedCommand redirects; one log, rank 0's
        ctx.meta["backend_log_path"] = _cache_dir(False, None) / "logs" / "last.log" if writer else Path(os.devnull)

    setup_logging(logging.ERROR if quiet or not writer else logging.DEBUG if verbose > 1 or debug else
                  logging.INFO if verbose else logging.WARNING)


def _cache_dir(no_cache: bool, cache_dir: Path | None) -> Path | None:
    if no_cache:
        return None
    return cache_dir or Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "edgekit")


def _dump_instruments(folder: Path | None, recipe: str | None) -> tuple:
    """A DumpSteps instrument for --dump-steps (one recipe's steps, into a new or empty folder), else none."""
    if folder is None:
        return ()
    from edgekit.errors import UserError
    from edgekit.instruments import DumpSteps

    if recipe == "auto":
        raise UserError("--dump-steps follows one recipe's steps; with --recipe auto dry-run or compile a candidate")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"--dump-steps {folder} exists and is not an empty folder; give a new one")
    return (DumpSteps(folder),)


def _input_specs(texts: tuple[str, ...]):
    from edgekit.errors import UserError
    from edgekit.spec import parse_input_spec

    specs = tuple(parse_input_spec(text) for text in texts)
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"--input {', '.join(repeated)} given more than once; give each input once")
    return specs


DEVICE = click.option("--device", default=None, metavar="NAME",
                      help="Run it on this device from devices.yaml (ssh://, adb://, local://; see `edgekit devices`).")
DEVICES_FILE = click.option("--devices", "devices_file", type=click.Path(path_type=Path), default=None,
                            help="The devices file (default: ./devices.yaml, else ~/.config/edgekit/devices.yaml).")


def _no_device(devices_file: Path | None) -> None:
    """--devices alone names no device to run on: a mistake, not a silent local run."""
    if devices_file is not None:
        raise click.UsageError("--devices FILE goes with --device NAME")


TRUST_REMOTE_CODE = click.option(
    "--trust-remote-code", is_flag=True,
    help="Load a .pt2 that needs pickles or Python from the file (beyond tensors and size arithmetic): "
         "runs code from the file, so only for a file you trust.")


@main.command("compile")
@click.argument("model")
@click.option("--target", "-t", required=True, help="Target name or YAML path (see `edgekit targets`).")
@click.option("--recipe", "-r", default=None, help="Recipe name or YAML path (default: the target's).")
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration data: .npz, .npy folder, images:DIR, text:FILE, spec .yaml.")
@click.option("--eval", "eval_data", type=click.Path(path_type=Path), help="Evaluation data (default: --calib).")
@click.option("--input", "inputs", multiple=True, help="Input spec name:DIMS:dtype, e.g. image:batchx3x32x32:float32.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Package folder or .zip.")
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for the measurement after compiling.")
@click.option("--bench-runs", type=int, default=50, show_default=True, help="Timed runs after compiling.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help=f"Step cache (default ${CACHE_ENV} or ~/.cache/edgekit).")
@click.option("--no-cache", is_flag=True, help="Run every step afresh.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--metric", default=None,
              help="Judge by auto (each output by what it is), top1/topK, agreement, sequence, ctc, ctc-edit, mask-iou, box-iou, "
                   "exact, cosine, rel-error, mse, max_abs or file.py:function (any recipe).")
@click.option("--max-drop", type=float, default=None,
              help="Allowed drop of the metric's mean (auto's default: 0.01; rel-error 0.05).")
@click.option("--worst", type=float, default=None,
              help="Allowed drop of the worst sample (default: --max-drop for agreement metrics scored per position).")
@click.option("--metric-option", "metric_options", multiple=True, metavar="KEY=VALUE",
              help="output=NAME (judge that output), axis=N, blank=N (CTC), threshold=X (mask), decode=file.py:fn (box-iou).")
@click.option("--min-speedup", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="auto: how much faster a less precise candidate must be (beyond its p50 interval) to win.")
@click.option("--dump-steps", type=click.Path(path_type=Path), default=None,
              help="Write each step's model to DIR/NN-PASS/ (files + model.json); DIR must be new or empty.")
@click.option("--adapter", "adapters", multiple=True, type=click.Path(path_type=Path), metavar="DIR",
              help="A PEFT adapter folder (LoRA …) merged into a Hugging Face MODEL's weights first (repeatable, in order).")
@TRUST_REMOTE_CODE
def compile_command(model, target, recipe, calib, eval_data, inputs, output, dry_run, threads, bench_runs,
                    cache_dir, no_cache, as_json, metric, max_drop, worst, metric_options, min_speedup, dump_steps,
                    adapters, trust_remote_code) -> None:
    """Compile MODEL (.onnx, file.py:factory, TorchScript, .pt2) for a target into a package.

    --recipe auto compiles every recipe the target offers, measures each here, and keeps the
    fastest within the tolerance (--metric, --max-drop).
    """
    from edgekit import compiler, console, distributed

    writer = distributed.is_writer()  # under torchrun, ranks besides 0 show nothing (their logging: main)
    specs = _input_specs(inputs)
    if dry_run:
        plan = compiler.plan(model, target, recipe, specs, trust_remote_code, adapters)
        if writer:
            console.print_json(plan.describe()) if as_json else console.show_plan(plan)
        return
    output = output or Path("out") / f"{Path(model.split(':')[0]).stem}-{Path(target).stem}"
    from edgekit.recipe import parse_evaluation

    tolerance = None  # --metric / --max-drop / --worst judge any recipe; auto has a default
    if recipe == "auto" or metric or max_drop is not None or worst is not None or metric_options:
        given = {"metric": metric or "auto", "max_drop": max_drop, "worst": worst, **_metric_options(metric_options)}
        tolerance = parse_evaluation(given, None, "--metric/--max-drop/--worst/--metric-option")
    dump = _dump_instruments(dump_steps, recipe) if writer else ()
    with console.StepDisplay(enabled=writer and not as_json) as display:
        result = compiler.compile(model, target, output, recipe, calib, eval_data, specs, _cache_dir(no_cache, cache_dir),
                                  bench_runs, threads, progress=display, instruments=(*dump, display), tolerance=tolerance,
                                  trust_remote_code=trust_remote_code, min_speedup=min_speedup, adapters=adapters)
    if result is None:  # a torchrun rank besides 0: rank 0 reports
        return
    if as_json:
        console.print_json(result.manifest.to_dict())
        return
    console.show_compiled(result)
    if result.manifest.auto is not None:
        console.show_auto(result.manifest.auto)


def _metric_options(pairs: tuple[str, ...]) -> dict[str, str]:
    """--metric-option KEY=VALUE pairs as evaluate: fields (their types are checked with the recipe's)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in METRIC_OPTIONS:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE with KEY one of {', '.join(METRIC_OPTIONS)}",
                                     param_hint="--metric-option")
        options[key] = value if key in ("output", "decode") else yaml.safe_load(value)
    return options


@main.command("bench")
@click.argument("packages", nargs=-1, required=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads (default: the runtime's).")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--runs", type=int, default=100, show_default=True)
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The records, raw samples included (a later --baseline).")
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="An earlier `edgekit bench --json` output: one line per package (matched by its name, else by its "
                   "model files) saying faster, same within the noise, or slower beyond it; exits 1 when any is slower "
                   "beyond the noise (the p50s' 95% intervals apart and the old p50 below the new one by the stated "
                   "margin). With --json the lines go to stderr.")
@DEVICE
@DEVICES_FILE
def bench_command(packages, threads, batch, runs, warmup, as_json, baseline, device, devices_file) -> None:
    """Measure packages side by side: cold and warm load, first run, p50 with its 95% interval, p90/p99, throughput,
    peak memory, size; with the CPU, its flags and frequency governor."""
    from edgekit import console
    from edgekit.bench import bench
    from edgekit.bench.baseline import REGRESSION_MARGIN, compare, read_baseline, regressed

    earlier = read_baseline(baseline) if baseline is not None else None
    if device is not None:
        from edgekit.devices import bench_on_device

        results, where = bench_on_device(list(packages), device, devices_file, threads, batch, runs, warmup)
    else:
        _no_device(devices_file)
        results, where = bench(list(packages), threads, batch, runs, warmup), None
    if as_json:
        console.print_json([dataclasses.asdict(r) | ({"device": where} if where else {}) for r in results])
    else:
        if where:
            console.show_device(where)
        console.show_bench(results)
    if earlier is not None:
        comparisons = compare(results, earlier, REGRESSION_MARGIN)
        console.show_comparisons(comparisons, str(baseline), REGRESSION_MARGIN, to_stderr=as_json)
        if regressed(comparisons):
            sys.exit(1)


@main.command("profile")
@click.argument("packages", nargs=-1, required=True)
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Profiled runs (after 5 warm-up).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads (default: the runtime's).")
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True, help="Ops shown, slowest first.")
@click.option("--all", "show_all", is_flag=True, help="Show every op.")
@click.option("--json", "as_json", is_flag=True, help="The profile (two packages: both and their diff) as JSON.")
@DEVICE
@DEVICES_FILE
def profile_command(packages, runs, threads, top, show_all, as_json, device, devices_file) -> None:
    """Each op's time, share, executed precision and kernel from the runtime's own profiler. With two packages of one
    model (A B): where B's time went against A's (quantize/dequantize, float ops, layout, ops int8 does not cover)."""
    from edgekit import console
    from edgekit.profiling import diff_profiles, profile_packages

    if len(packages) > 2:
        raise click.UsageError("give one package to profile, or two (A B) to compare")
    if device is None:
        _no_device(devices_file)
    profiles, where = profile_packages(packages, runs, threads, device, devices_file)
    diff = diff_profiles(*profiles) if len(profiles) == 2 else None
    if as_json:
        shown = {"a": dataclasses.asdict(profiles[0]), "b": dataclasses.asdict(profiles[1]), "diff": diff} if diff else \
            dataclasses.asdict(profiles[0])
        console.print_json(shown | ({"device": where} if where else {}))
        return
    if where:
        console.show_device(where)
    for profile in profiles:
        console.show_profile(profile, None if show_all else top)
    if diff:
        console.show_profile_diff(diff)


@main.command("keygen")
@click.argument("name", type=click.Path(path_type=Path))
def keygen_command(name) -> None:
    """Make an Ed25519 key pair for `edgekit sign`: NAME.key (private, keep it) and NAME.pub (give it to users)."""
    from edgekit import console
    from edgekit.signing import generate_keys

    private, public = generate_keys(name)
    console.say(f"wrote {private} (private: sign with it, never ship it) and {public} (public: verify with it)")


@main.command("sign")
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--key", "key", type=click.Path(path_type=Path), required=True, help="Private key (edgekit keygen).")
def sign_command(package, key) -> None:
    """Sign a package (folder or .zip): its manifest, which hashes every file. The package must verify first."""
    from edgekit import console
    from edgekit.signing import sign_package

    signer = sign_package(package, key)
    console.say(f"signed {package} with key {signer[:16]}")


@main.command("verify")
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--key", "keys", multiple=True, type=click.Path(path_type=Path),
              help="A trusted public key; repeatable. Given: the package must be signed by one of them.")
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--no-self-test", is_flag=True, help="Check files and signature only.")
@click.option("--json", "as_json", is_flag=True)
@DEVICE
@DEVICES_FILE
def verify_command(package, keys, threads, no_self_test, as_json, device, devices_file) -> None:
    """Check a package: its files against the manifest, its signature, and its golden self-test run here (or on
    --device)."""
    from edgekit import console
    from edgekit.verify import verify_package

    if device is not None:
        from edgekit.devices import verify_on_device

        result, where = verify_on_device(package, device, devices_file, keys, threads, self_test=not no_self_test)
    else:
        _no_device(devices_file)
        result, where = verify_package(package, keys, threads, self_test=not no_self_test), None
    if as_json:
        console.print_json(dataclasses.asdict(result) | {"ok": result.ok} | ({"device": where} if where else {}))
    else:
        if where:
            console.show_device(where)
        console.show_verification(result)
    if not result.ok:
        sys.exit(1)


@main.command("devices")
@DEVICES_FILE
@click.option("--probe", is_flag=True, help="Reach each device and show its identity (CPU, ISA, OS, runtimes).")
@click.option("--json", "as_json", is_flag=True)
def devices_command(devices_file, probe, as_json) -> None:
    """List the devices of devices.yaml; with --probe, reach each one (a device that cannot be reached says why)."""
    from edgekit import console
    from edgekit.devices import probe_devices

    rows = probe_devices(devices_file, probe)
    console.print_json(rows) if as_json else console.show_devices(rows)


@main.group("cache")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help=f"The step cache (default: ${CACHE_ENV} or ~/.cache/edgekit).")
@click.pass_context
def cache_group(ctx: click.Context, cache_dir: Path | None) -> None:
    """The step cache, distillation checkpoints and unpacked package archives."""
    ctx.obj = _cache_dir(False, cache_dir)


@cache_group.command("info")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def cache_info_command(root: Path, as_json: bool) -> None:
    """Entries, size and the oldest last use of each cached area."""
    from edgekit import cache, console

    areas = cache.info(root)
    console.print_json([dataclasses.asdict(a) for a in areas]) if as_json else console.show_cache(areas)


@cache_group.command("verify")
@click.pass_obj
def cache_verify_command(root: Path) -> None:
    """Check every step entry against its recorded hashes; corrupt ones are removed (the step runs again)."""
    from edgekit import cache, console

    intact, removed = cache.verify(root)
    console.say(f"step cache {root}: {intact} entries intact, {removed} corrupt removed")


@cache_group.command("prune")
@click.option("--older-than", "days", type=click.FloatRange(min=0), default=None,
              help="Remove what was last used more than DAYS ago.")
@click.option("--all", "everything", is_flag=True, help="Remove everything cached.")
@click.pass_obj
def cache_prune_command(root: Path, days: float | None, everything: bool) -> None:
    """Remove cached steps, checkpoints and unpacked packages: --older-than DAYS, or --all."""
    from edgekit import cache, console
    from edgekit.errors import UserError

    if (days is None) == (not everything):
        raise UserError("cache prune: give --older-than DAYS or --all (one of them)")
    count, freed = cache.prune(root, None if everything else days)
    console.say(f"removed {count} cached entries, {freed / 2**20:.1f} MiB")


@main.command("inspect")
@click.argument("model")
@click.option("--input", "inputs", multiple=True, help="Input spec, as for compile.")
@click.option("--json", "as_json", is_flag=True)
@TRUST_REMOTE_CODE
def inspect_command(model, inputs, as_json, trust_remote_code) -> None:
    """Show a model's format, inputs/outputs, parameters, operators, size and opset."""
    from edgekit import console
    from edgekit.inspection import inspect

    summary = inspect(model, _input_specs(inputs), trust_remote_code)
    console.print_json(summary) if as_json else console.show_inspect(summary)


@main.command("targets")
@click.option("--json", "as_json", is_flag=True)
def targets_command(as_json) -> None:
    """List the built-in targets and whether this machine can run each."""
    from edgekit import console
    from edgekit.target import all_targets

    rows = [{**t.to_dict(), "precisions": list(t.precisions), "description": t.description,
             "unavailable": t.availability()} for t in all_targets()]
    console.print_json(rows) if as_json else console.show_targets(rows)


@main.command("recipes")
@click.option("--json", "as_json", is_flag=True)
def recipes_command(as_json) -> None:
    """List the built-in recipes and their steps."""
    from edgekit import console
    from edgekit.catalog import builtin_names
    from edgekit.recipe import load_recipe

    rows = [load_recipe(name).to_dict() | {"description": load_recipe(name).description} for name in builtin_names("recipes")]
    console.print_json(rows) if as_json else console.show_recipes(rows)


@main.command("demo")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("out/demo"), show_default=True)
@click.option("--runs", type=int, default=200, show_default=True, help="Timed runs per package.")
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--json", "as_json", is_flag=True)
def demo_command(output, runs, threads, as_json) -> None:
    """Train the digits CNN, compile it for every CPU target available here, bench, print the table."""
    from edgekit import console
    from edgekit.demo import run_demo

    with console.StepDisplay(enabled=not as_json) as display:
        rows = run_demo(output, runs, threads, _cache_dir(False, None), display)
    console.print_json(rows) if as_json else console.show_demo(rows)


@main.command("serve")
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads (default: the runtime's).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Inferences run at once, in threads off the event loop.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=16.0, show_default=True,
              help="Largest request body (and unpacked .npz) taken.")
@click.option("--drift-threshold", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Warn when an input's drift score passes this (default 1: a mean one calibration std away).")
@click.option("--outside-threshold", type=click.FloatRange(0, 1), default=None,
              help="Warn when this share of an input's recent values lies outside the calibrated range (default 0.01).")
def serve_command(package, host, port, threads, workers, max_body_mb, drift_threshold, outside_threshold) -> None:
    """Serve PACKAGE over HTTP: POST /infer (JSON, .npy, .npz), GET /healthz, GET /metrics (Prometheus)."""
    from edgekit import console
    from edgekit.runtime.monitor import MonitorConfig
    from edgekit.serving import serve

    given = {"drift_threshold": drift_threshold, "outside_threshold": outside_threshold}
    monitor = MonitorConfig(**{key: value for key, value in given.items() if value is not None})
    verbose = logging.getLogger("edgekit").getEffectiveLevel() <= logging.INFO  # -v: uvicorn's access log on the terminal
    serve(package, host, port, threads, workers, int(max_body_mb * 2**20), monitor,
          on_ready=lambda url: console.say(f"serving {package} on {url}: POST /infer, GET /healthz, GET /metrics "
                                           "(Ctrl-C stops)"), access_log=verbose)
    console.say("stopped")


@main.command("sweep")
@click.argument("models", nargs=-1, required=True)
@click.option("--targets", required=True, help="Targets, comma-separated (names or YAML paths).")
@click.option("--recipes", required=True, help="Recipes, comma-separated: names, precisions (int8) or auto.")
@click.option("--calib", multiple=True, help="Calibration data for every model, or NAME=DATA for the model NAME.")
@click.option("--eval", "eval_data", multiple=True, help="Evaluation data for every model, or NAME=DATA.")
@click.option("--input", "inputs", multiple=True, help="Input spec for every model, or NAME=SPEC (repeatable).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The sweep's folder (runs/).")
@click.option("--device", "devices", multiple=True, metavar="NAME",
              help="Measure on the Ray node advertising device:NAME (repeatable; default: local, this machine).")
@DEVICES_FILE
@click.option("--address", default=None, help="Join this Ray cluster (HOST:PORT); default: start one here.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="CPUs of the local Ray cluster (default: all).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Threads per measurement.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per package.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--distill-processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="torchrun processes (and CPUs) for a cell whose recipe distills.")
@click.option("--retry-failed", is_flag=True, help="Run again the cells an earlier run of this sweep saw fail.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help=f"Step cache (default ${CACHE_ENV}).")
@click.option("--no-cache", is_flag=True, help="Run every step afresh.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.pass_context
def sweep_command(ctx, models, targets, recipes, calib, eval_data, inputs, output, devices, devices_file, address,
                  workers, threads, runs, warmup, distill_processes, retry_failed, cache_dir, no_cache, as_json) -> None:
    """Compile MODELS (NAME=SOURCE or SOURCE) × --targets × --recipes as Ray tasks, measure every package, and
    write OUTPUT/report.html, results.json and results.csv. Re-running it runs only the cells that changed."""
    from edgekit import console
    from edgekit.sweep import Settings, model_entries, sweep
    from edgekit.sweep.display import SweepProgress, show_sweep

    entries = model_entries(models, calib, eval_data, inputs)
    settings = Settings(threads=threads, runs=runs, warmup=warmup, distill_processes=distill_processes)
    try:
        with SweepProgress() as progress:
            result = sweep(entries, _names(targets), _names(recipes), output, tuple(devices) or ("local",), settings,
                           address, workers, _cache_dir(no_cache, cache_dir), devices_file, retry_failed,
                           progress=None if as_json else progress, verbose=ctx.meta.get("verbose", 0) > 0,
                           command=" ".join(["edgekit", *sys.argv[1:]]))
    except KeyboardInterrupt:
        click.echo(f"interrupted: the cells finished so far are kept in {output}/cells; the same command goes on "
                   "from there", err=True)
        sys.exit(130)
    if as_json:
        console.print_json({"sweep": result.info, "rows": result.rows})
        return
    show_sweep(result.rows, result.info, result.files)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


@main.command("diff")
@click.argument("source")
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--eval", "eval_data", default=None,
              help="Evaluation data, as for compile (default: the data the package was measured on, if readable here).")
@click.option("--input", "inputs", multiple=True, help="Input spec, as for compile (default: the package's).")
@click.option("--samples", type=click.IntRange(min=1), default=64, show_default=True, help="Evaluation samples run.")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True, help="Layers shown, worst first.")
@click.option("--all", "show_all", is_flag=True, help="Show every layer.")
@click.option("--json", "as_json", is_flag=True, help="Every layer as JSON (an SNR of null: no error at all).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help=f"Step cache (default ${CACHE_ENV} or ~/.cache/edgekit).")
@click.option("--no-cache", is_flag=True, help="Replay the package's float steps afresh.")
@click.option("--adapter", "adapters", multiple=True, type=click.Path(path_type=Path), metavar="DIR",
              help="A PEFT adapter folder the package was compiled with (repeatable, in the same order).")
@TRUST_REMOTE_CODE
def diff_command(source, package, eval_data, inputs, samples, top, show_all, as_json, cache_dir, no_cache, adapters,
                 trust_remote_code) -> None:
    """Where PACKAGE departs from SOURCE (what compile took), layer by layer: SNR, cosine and max error of each
    layer's output on the evaluation data, worst first, with the source module it came from."""
    from edgekit import console
    from edgekit.diff_display import show_diff
    from edgekit.layers import diff_layers

    diff = diff_layers(source, package, eval_data, _input_specs(inputs), samples, _cache_dir(no_cache, cache_dir),
                       trust_remote_code, adapters)
    console.print_json(diff.to_dict()) if as_json else show_diff(diff, None if show_all else top)


if __name__ == "__main__":
    main()
