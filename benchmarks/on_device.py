"""The on-device walkthrough: a package measured on a "device" reached over SSH, a profile diff of a slow int8
package, and a served package's latency and drift, each as the edgekit command prints it.

    .venv/bin/python benchmarks/on_device.py [--out benchmarks/ON_DEVICE.md] [--runs 200] [--work out/on_device]

1. The device: the runtime-only venv (benchmarks/runtime_venv.py: this checkout as `edgekit[runtime-ort]`, numpy and
   ONNX Runtime only) behind a real SSH server on 127.0.0.1 (benchmarks/ssh_loopback.py), named `loopback` in
   WORK/devices.yaml.
2. The digits CNN compiled for cpu-ort with `--recipe fp32` and `--recipe int8` by `edgekit compile`, into WORK.
3. `edgekit devices --probe`, `bench` and `verify` on the device; then every fp32 / int8 pair at hand (the digits CNN,
   the tests' tiny 8x8 CNN compiled here, and the zoo's cpu-ort fp32 / int8-static candidates where
   benchmarks/.cache/zoo holds them) measured with `edgekit bench --json` at one thread, and `edgekit profile A B`
   shown for the digits CNN and for the two pairs (at most) whose int8 p50 is slowest beyond its 95% interval.
4. `edgekit serve` on the digits int8 package: the digits' held-out images posted one by one, then the same images
   moved by +SHIFT_STDS (3) calibration stds; /metrics read after each phase.
5. OUT: the machine and conditions, then each command's output verbatim with a sentence saying what it shows.

The command lines run with WORK as the working directory, so paths print short. Every figure in OUT comes from this
run. It takes a few minutes (the two digits compiles most of it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks.runtime_venv import EXTRA, runtime_only_python  # noqa: E402
from benchmarks.ssh_loopback import DeviceServer  # noqa: E402
from edgekit.runtime.monitor import MonitorConfig  # noqa: E402

DEVICE = "loopback"
ZOO_PACKAGES = HERE / ".cache" / "zoo" / "packages"
ZOO_PAIR = ("fp32", "int8-static")
TINY_INPUT = "image:batchx1x8x8:float32"
SHIFT_STDS = 3.0
PROFILED_SLOW_PAIRS = 2
COMPILE_SIDE = ("torch", "click", "rich", "PyYAML", "asyncssh")
SERVE_START_S = 120
SHOWN_METRICS = ("edgekit_inference_seconds_count", "edgekit_inference_seconds_sum", "edgekit_infer_requests_total",
                 "edgekit_input_drift_score", "edgekit_input_drift_threshold", "edgekit_input_outside_share",
                 "edgekit_input_outside_threshold")


class WalkthroughError(Exception):
    """A step that failed: one line for the user."""


@dataclasses.dataclass(frozen=True)
class Shown:
    """One command as the user types it (in WORK) and what it printed."""

    command: str
    output: str


@dataclasses.dataclass(frozen=True)
class Pair:
    """An fp32 and an int8 package of one model, as paths relative to WORK."""

    model: str
    origin: str
    fp32: str
    int8: str


@dataclasses.dataclass(frozen=True)
class Screened:
    """A pair measured by `edgekit bench --json`: p50 and its 95% interval (ms), fp32 then int8."""

    pair: Pair
    fp32: tuple[float, float, float]
    int8: tuple[float, float, float]

    @property
    def ratio(self) -> float:
        return self.int8[0] / self.fp32[0]

    @property
    def int8_slower(self) -> bool:
        return self.int8[1] > self.fp32[2]

    @property
    def int8_faster(self) -> bool:
        return self.int8[2] < self.fp32[1]


def say(line: str) -> None:
    print(f"on_device: {line}", file=sys.stderr, flush=True)


def edgekit(work: Path, *arguments: str, timeout_s: float = 900) -> Shown:
    """Run `edgekit ARGUMENTS` in WORK (this interpreter's install) and return what it printed on stdout."""
    command = "edgekit " + shlex.join(arguments)
    say(f"$ {command}")
    try:
        done = subprocess.run([sys.executable, "-m", "edgekit.cli", *arguments], cwd=work, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise WalkthroughError(f"`{command}` did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise WalkthroughError(f"`{command}` exited {done.returncode}: {last}")
    return Shown(command, trimmed(done.stdout))


def trimmed(text: str) -> str:
    """`text` without the trailing blanks of its lines (rich pads tables and wrapped lines to the console width)."""
    return "\n".join(line.rstrip() for line in text.rstrip("\n").splitlines())


def python_step(work: Path, *arguments: str) -> None:
    """Run `python ARGUMENTS` (a script of this checkout) in WORK."""
    done = subprocess.run([sys.executable, *arguments], cwd=work, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise WalkthroughError(f"`python {shlex.join(arguments)}` exited {done.returncode}: {last}")


# --- 1. the device -----------------------------------------------------------------------------------------------------


def write_devices(work: Path, server: DeviceServer, python: Path) -> str:
    """WORK/devices.yaml naming the loopback server; returns its text."""
    import yaml

    text = yaml.safe_dump({"devices": {DEVICE: server.entry(python, timeout_s=600)}}, sort_keys=False)
    (work / "devices.yaml").write_text(text)
    return text


def installed_distributions(python: Path) -> Shown:
    """What the device's venv holds, as pip lists it."""
    arguments = [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"]
    done = subprocess.run(arguments, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise WalkthroughError(f"listing the device venv's distributions failed: {done.stderr.strip()[-300:]}")
    return Shown(shlex.join(arguments), trimmed(done.stdout))


# --- 2. packages -------------------------------------------------------------------------------------------------------


def compile_digits(work: Path) -> Pair:
    """The digits CNN's data, then its fp32 and int8 cpu-ort packages, as the README's example makes them."""
    python_step(work, str(HERE / "digits_cnn.py"), "--data", "data")
    for recipe in ("fp32", "int8"):
        fresh(work / f"digits-{recipe}")
        edgekit(work, "compile", f"{HERE / 'digits_cnn.py'}:build", "--target", "cpu-ort", "--recipe", recipe,
                "--calib", "data/digits_calib.npz", "--eval", "data/digits_eval.npz", "--input", "image:batchx1x32x32",
                "-o", f"digits-{recipe}")
    return Pair("digits CNN", "benchmarks/digits_cnn.py, compiled here", "digits-fp32", "digits-int8")


def compile_tiny(work: Path) -> Pair:
    """The tests' tiny CNN (tests/models.py:tiny_cnn, input 1x8x8) on 64 seeded standard-normal images, as
    tests/test_profiling.py builds its int8 example."""
    images = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    np.savez(work / "data" / "tiny_cnn.npz", image=images)
    for recipe in ("fp32", "int8"):
        fresh(work / f"tiny-cnn-{recipe}")
        edgekit(work, "compile", f"{REPO / 'tests' / 'models.py'}:tiny_cnn", "--target", "cpu-ort", "--recipe", recipe,
                "--calib", "data/tiny_cnn.npz", "--input", TINY_INPUT, "-o", f"tiny-cnn-{recipe}")
    return Pair("tiny CNN", "tests/models.py, compiled here", "tiny-cnn-fp32", "tiny-cnn-int8")


def zoo_pairs(work: Path) -> list[Pair]:
    """The zoo's cpu-ort fp32 and int8-static candidates where benchmarks/.cache/zoo holds both, copied under WORK/zoo."""
    pairs = []
    for cell in sorted(ZOO_PACKAGES.glob("*--cpu-ort")):
        found = [cell / "candidates" / recipe for recipe in ZOO_PAIR]
        if not all((folder / "manifest.json").is_file() for folder in found):
            continue
        model = cell.name.removesuffix("--cpu-ort")
        copies = []
        for folder in found:
            copy = fresh(work / "zoo" / f"{model}-{folder.name}")
            shutil.copytree(folder, copy)
            copies.append(str(copy.relative_to(work)))
        pairs.append(Pair(model, "zoo candidates", *copies))
    return pairs


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


# --- 3. fp32 against int8 ----------------------------------------------------------------------------------------------


def screen(work: Path, pair: Pair, runs: int) -> Screened:
    records = json.loads(edgekit(work, "bench", pair.fp32, pair.int8, "--runs", str(runs), "--threads", "1",
                                 "--json").output)
    fp32, int8 = ((r["latency_ms"]["p50"], r["latency_ms"]["p50_low"], r["latency_ms"]["p50_high"]) for r in records)
    return Screened(pair, fp32, int8)


def verdict(screened: Screened) -> str:
    if screened.int8_slower:
        return "int8 slower"
    return "int8 faster" if screened.int8_faster else "same within the noise"


def int8_against_fp32(screened: Screened) -> str:
    """How the int8 package's p50 compares, as the end of a sentence."""
    if screened.int8_slower or screened.int8_faster:
        return f"{'slower' if screened.int8_slower else 'faster'} than fp32 ({screened.ratio:.2f}× its p50)"
    return f"as fast as fp32 within the noise ({screened.ratio:.2f}× its p50)"


def screen_table(screened: list[Screened]) -> str:
    header = "| model | packages | fp32 p50 ms [95% CI] | int8 p50 ms [95% CI] | int8 / fp32 | verdict |\n|---|---|---:|---:|---:|---|"
    rows = [f"| {s.pair.model} ({s.pair.origin}) | `{s.pair.fp32}`, `{s.pair.int8}` | {interval(s.fp32)} | "
            f"{interval(s.int8)} | {s.ratio:.2f}× | {verdict(s)} |" for s in screened]
    return "\n".join([header, *rows])


def interval(p50: tuple[float, float, float]) -> str:
    return f"{p50[0]:.4g} [{p50[1]:.4g}, {p50[2]:.4g}]"


# --- 4. serving --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Served:
    command: str
    console: str
    before: str
    after: str
    numbers: dict[str, dict[str, float]]
    requests: int
    shift: float


@contextlib.contextmanager
def serving(work: Path, package: str) -> Iterator[tuple[str, str, Path]]:
    """`edgekit serve PACKAGE --port 0 --threads 1` in WORK: yields (command, URL, console file); Ctrl-C (SIGINT) at the
    end, then a kill if it has not stopped within 20 s."""
    arguments = ["serve", package, "--port", "0", "--threads", "1"]
    console = work / "serve.console"
    with open(console, "w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "edgekit.cli", *arguments], cwd=work, stdout=sink,
                                   stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + SERVE_START_S
        while not (found := re.search(r" on (http://\S+): POST /infer", console.read_text())):
            if process.poll() is not None:
                raise WalkthroughError(f"`edgekit serve` exited {process.returncode}: {console.read_text().strip()[-300:]}")
            if time.monotonic() > deadline:
                raise WalkthroughError(f"`edgekit serve` printed no URL within {SERVE_START_S} s")
            time.sleep(0.1)
        yield "edgekit " + shlex.join(arguments), found.group(1), console
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve_and_drift(work: Path, package: str, count: int) -> Served:
    """`count` held-out digit images, then `count` moved by SHIFT_STDS calibration stds, posted as .npy bodies."""
    import httpx

    images = np.load(work / "data" / "digits_eval.npz")["image"]
    manifest = json.loads((work / package / "manifest.json").read_text())
    shift = SHIFT_STDS * manifest["data"]["calibration"]["image"]["std"]
    chosen = [images[i % len(images)][None] for i in range(count)]
    with serving(work, package) as (command, base, console), httpx.Client(base_url=base, timeout=60) as http:
        say(f"serving on {base}: {count} held-out images, then {count} moved by +{SHIFT_STDS:g} calibration stds")
        readings = []
        for batch in (chosen, [image + np.float32(shift) for image in chosen]):
            for image in batch:
                body = io.BytesIO()
                np.save(body, image)
                answer = http.post("/infer", content=body.getvalue(), headers={"content-type": "application/x-npy"})
                if answer.status_code != 200:
                    raise WalkthroughError(f"POST /infer answered {answer.status_code}: {answer.text[:300]}")
            readings.append(http.get("/metrics").text)
    numbers = {phase: metric_values(text) for phase, text in zip(("before", "after"), readings)}
    return Served(command, trimmed(console.read_text()), shown_lines(readings[0]), shown_lines(readings[1]), numbers,
                  count, shift)


def shown_lines(exposition: str) -> str:
    return "\n".join(line for line in exposition.splitlines() if line.split("{")[0].split(" ")[0] in SHOWN_METRICS)


def metric_values(exposition: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = ",".join(f"{key}={value}" for key, value in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


# --- 5. the document ---------------------------------------------------------------------------------------------------


def block(text: str) -> str:
    return f"```\n{text}\n```"


def shown(item: Shown) -> str:
    return block(f"$ {item.command}\n{item.output}")


def machine() -> str:
    from edgekit.isa import host_cpu

    cpu = host_cpu()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu.model} ({cpu.machine}, ISA {cpu.isa.name}: {' '.join(cpu.flags)}), {os.cpu_count()} logical cores, "
            f"{memory_gib:.1f} GiB; {platform.platform()}; Python {platform.python_version()}, "
            f"onnxruntime {version('onnxruntime')}, edgekit {version('edgekit')}")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def compile_side_in(distributions: Shown) -> str:
    """Which compile-side distributions a `pip list --format=freeze` output holds, as a sentence's end."""
    names = {line.partition("==")[0].lower() for line in distributions.output.splitlines()}
    present = [name for name in COMPILE_SIDE if name.lower() in names]
    if present:
        return f"{', '.join(present)} among them"
    return f"numpy and ONNX Runtime with what they need; none of {', '.join(COMPILE_SIDE)}"


def document(parts: dict, runs: int) -> str:
    served: Served = parts["served"]
    screened: list[Screened] = parts["screened"]
    before, after = served.numbers["before"], served.numbers["after"]
    drift_key, outside_key = "edgekit_input_drift_score{input=image}", "edgekit_input_outside_share{input=image}"
    count, total = after["edgekit_inference_seconds_count"], after["edgekit_inference_seconds_sum"]
    first = before["edgekit_inference_seconds_sum"] / before["edgekit_inference_seconds_count"] * 1e3
    digits = next(s for s in screened if s.pair.int8 == "digits-int8")
    slow = [s for s in screened if s.int8_slower and s is not digits]
    sections = [
        "# On the device: a measured walkthrough",
        f"Written by `benchmarks/on_device.py --runs {runs}` on {parts['started']} (UTC) in {parts['seconds'] / 60:.1f} "
        "min; do not edit by hand, run it again. Every figure below comes from that run; commands ran in its work "
        f"folder (`{parts['work']}`).",
        f"**Machine:** {parts['machine']}.\n\n**Conditions:** one intra-op thread and batch 1 for every measurement, "
        f"{runs} timed runs after the warm-up each command states; the 1 / 5 / 15-minute load average was "
        f"{parts['load_start']} at the start and {parts['load_end']} at the end (other work shared the CPU).",
        "## 1. A device reached over SSH, with a runtime-only environment",
        "The device is a real SSH server (asyncssh, `benchmarks/ssh_loopback.py`) on 127.0.0.1, so this machine reached "
        "through the SSH protocol, whose logins land in a venv holding this checkout as "
        f"`edgekit[{EXTRA}]`; `devices.yaml` names it:",
        block(parts["devices_yaml"].rstrip("\n")),
        f"What that venv holds, as pip lists it ({compile_side_in(parts['distributions'])}):",
        shown(parts["distributions"]),
        "`edgekit devices --probe` reaches it and reports its identity (CPU, ISA flags, OS, memory, runtime versions):",
        shown(parts["probe"]),
        "## 2. Measured and verified on the device",
        "The digits CNN's fp32 and int8 cpu-ort packages (compiled as in the README's example), copied to the device "
        "once under their manifest hash and measured there; the record is the one a local `edgekit bench` gives, with "
        "the device's identity first:",
        shown(parts["bench"]),
        "The int8 package's self-test on the device: its files against the manifest's sha256, then its golden inputs "
        "against the outputs the source model gave at build time, within the package's own tolerance:",
        shown(parts["verify"]),
        "## 3. Where int8's time goes",
        f"Every fp32 / int8 pair at hand, measured here with `edgekit bench A B --runs {runs} --threads 1 --json` (p50 "
        "and its 95% interval; \"slower\" or \"faster\" only where the two intervals do not overlap):",
        screen_table(screened),
        f"The digits CNN first: on this CPU its int8 package is {int8_against_fp32(digits)}; `edgekit profile A B` "
        "shows per op where each package's time goes and, last, where the difference went:",
        shown(parts["profiles"]["digits-int8"]),
    ]
    if slow:
        for item in slow[:PROFILED_SLOW_PAIRS]:
            sections += [f"{item.pair.model} ({item.pair.origin}), where int8 is {item.ratio:.2f}× fp32's p50 in the "
                         "table above: the same diff, naming the ops that cost int8 its time:",
                         shown(parts["profiles"][item.pair.int8])]
    else:
        sections.append("No other pair measured here has an int8 p50 slower beyond the noise.")
    scores = (before[drift_key], after[drift_key])
    sections += [
        "## 4. Served, with latency and drift in /metrics",
        f"`edgekit serve` on the digits int8 package (port 0: a free one). {served.requests} held-out digit images "
        f"went to `POST /infer` one by one as .npy bodies, then the same {served.requests} moved by "
        f"+{SHIFT_STDS:g} calibration stds (+{served.shift:.4g}, from the manifest's calibration statistics). The "
        "server's console, from start to Ctrl-C:",
        block(f"$ {served.command}\n{served.console}"),
        f"`GET /metrics` after the held-out images (these lines only): the inference histogram's count and sum "
        f"({first:.3f} ms mean per inference), and the input's drift score {scores[0]:.3g} against the threshold "
        f"{before['edgekit_input_drift_threshold']:g}, {before[outside_key]:.2%} of its recent values outside the "
        "calibrated range:",
        block(served.before),
        f"After the shifted images: {count:.0f} inferences, {total / count * 1e3:.3f} ms mean, and the drift score up "
        f"from {scores[0]:.3g} to {scores[1]:.3g} with {after[outside_key]:.2%} of the recent values out of range (the "
        f"recent statistics weigh each of the first {MonitorConfig().window} runs equally, so here they mix both "
        "phases):",
        block(served.after),
    ]
    return "\n\n".join(sections) + "\n"


# --- the run -----------------------------------------------------------------------------------------------------------


def walkthrough(work: Path, runs: int, requests: int) -> dict:
    parts: dict = {"started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "load_start": load_average(),
                   "machine": machine(), "work": work.relative_to(REPO) if work.is_relative_to(REPO) else work}
    started = time.perf_counter()
    (work / "data").mkdir(parents=True, exist_ok=True)
    say(f"the {EXTRA} venv (built once, then reused)")
    python = runtime_only_python()
    parts["distributions"] = installed_distributions(python)
    say("compiling the digits CNN (fp32, int8) and the tiny CNN (fp32, int8)")
    pairs = [compile_digits(work), compile_tiny(work), *zoo_pairs(work)]
    with tempfile.TemporaryDirectory(prefix="edgekit-device-") as root, DeviceServer(Path(root), python.parent) as server:
        say(f"device {DEVICE} at {server.url}")
        parts["devices_yaml"] = write_devices(work, server, python)
        on_device = ("--device", DEVICE, "--devices", "devices.yaml")
        try:
            parts["probe"] = edgekit(work, "devices", "--probe", "--devices", "devices.yaml")
            parts["bench"] = edgekit(work, "bench", "digits-fp32", "digits-int8", *on_device, "--runs", str(runs),
                                     "--threads", "1")
            parts["verify"] = edgekit(work, "verify", "digits-int8", *on_device)
        finally:
            (work / "devices.yaml").unlink(missing_ok=True)  # its keys go with the server
    parts["screened"] = [screen(work, pair, runs) for pair in pairs]
    slow = sorted((s for s in parts["screened"][1:] if s.int8_slower), key=lambda s: s.ratio, reverse=True)
    profiled = [pairs[0], *(s.pair for s in slow[:PROFILED_SLOW_PAIRS])]
    parts["screened"].sort(key=lambda s: (not s.int8_slower, -s.ratio))
    parts["profiles"] = {pair.int8: edgekit(work, "profile", pair.fp32, pair.int8, "--runs", str(runs), "--threads", "1")
                         for pair in profiled}
    parts["served"] = serve_and_drift(work, "digits-int8", requests)
    parts["load_end"] = load_average()
    parts["seconds"] = time.perf_counter() - started
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "ON_DEVICE.md", help="The document written.")
    parser.add_argument("--work", type=Path, default=Path("out/on_device"), help="Packages, data and the server's log.")
    parser.add_argument("--runs", type=int, default=200, help="Timed runs of each bench and profile.")
    parser.add_argument("--requests", type=int, default=200, help="Requests per phase (held-out, then shifted).")
    args = parser.parse_args()
    if args.runs < 1 or args.requests < 1:
        parser.error("--runs and --requests must be at least 1")
    work = args.work.resolve()
    try:
        parts = walkthrough(work, args.runs, args.requests)
        text = document(parts, args.runs)
    except (WalkthroughError, OSError, RuntimeError, ValueError) as error:
        sys.exit(f"on_device: error: {error}")
    partial = args.out.with_name(f".{args.out.name}.partial")
    partial.write_text(text)
    partial.replace(args.out)
    say(f"wrote {args.out} in {parts['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
