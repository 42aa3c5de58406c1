"""The reliability suite (tests/reliability) with a larger budget; writes its measured figures to
tests/reliability/README.md: fuzz cases per family and how each ended, kill points tried and resumed, racing
compiles, the soak of each runtime, and every known bug (a strict xfail) with where it is.

    .venv/bin/python benchmarks/reliability.py [--scale big | --scale examples=250,soak_runs=50000,...]

--scale is passed to the tests as EDGEKIT_RELIABILITY_SCALE (tests/reliability/figures.py: `small`, `big`, or
key=value pairs over the small budget); every figure written is what this run measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "reliability"
README = SUITE / "README.md"
ISA_WORDS = ("avx2", "avx512", "vnni", "amx", "bf16", "fma", "f16c")
FAULTS = ("lost", "unsafe", "traceback", "unclean")


def run_suite(scale: str, figures: Path) -> tuple[int, float]:
    """pytest over the suite with `scale`; its exit code and wall time."""
    env = {**os.environ, "EDGEKIT_RELIABILITY_SCALE": scale, "EDGEKIT_RELIABILITY_FIGURES": str(figures)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider"], cwd=ROOT, env=env)
    return done.returncode, time.perf_counter() - started


def cpu() -> tuple[str, list[str]]:
    """The CPU's model name and its ISA flags of interest, from /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), set()
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = {flag for flag in value.split() if any(word in flag for word in ISA_WORDS)}
    return model, sorted(flags)


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return f"{head or 'unknown'}{' with uncommitted changes' if dirty else ''}"


def _cases_table(cases: dict[str, dict[str, int]]) -> list[str]:
    lines = ["| family | cases tried | worked | clean errors | unclean messages | tracebacks | data lost | unsafe |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    totals = dict.fromkeys(("ok", "clean", "unclean", "traceback", "lost", "unsafe"), 0)
    for family, counts in cases.items():
        lines.append(f"| {family} | {sum(counts.values())} | " + " | ".join(str(counts[k]) for k in totals) + " |")
        totals = {k: totals[k] + counts[k] for k in totals}
    lines.append(f"| **all** | **{sum(totals.values())}** | " + " | ".join(f"**{v}**" for v in totals.values()) + " |")
    return lines


def _soak_table(soak: dict[str, dict]) -> list[str]:
    lines = ["| runtime | threads | runs | errors | mismatches | within tolerance, not bitwise | RSS start → end (MB) | s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for runtime, row in soak.items():
        lines.append(f"| {runtime} | {row['threads']} | {row['runs']} | {row['errors']} | {row['mismatches']} | "
                     f"{row['inexact']} | {row['rss_start_mb']} → {row['rss_end_mb']} | {row['seconds']} |")
    return lines


def render(figures: dict, code: int, seconds: float, scale: str) -> str:
    """README.md from the figures of one run."""
    model, flags = cpu()
    sections, tests = figures["sections"], figures["tests"]
    known = {test: outcome.removeprefix("xfailed (").removesuffix(")") for test, outcome in tests.items()
             if outcome.startswith("xfailed")}
    failed = sorted(test for test, outcome in tests.items() if outcome != "passed" and test not in known)
    details = [f"- {family}, {outcome}: `{detail}`" for family, kept in figures["details"].items()
               for outcome, listed in kept.items() if outcome in FAULTS for detail in listed]
    lines = [
        "# Reliability figures", "",
        "Written by `benchmarks/reliability.py` from one run of this folder's tests; every figure below was measured "
        "by that run. The same tests run in CI at the small budget (`pytest tests/reliability`); set "
        "`EDGEKIT_RELIABILITY_SCALE` (`small`, `big`, or `key=value,…`, see `figures.py`) for more.", "",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- edgekit commit: {commit()}",
        f"- CPU: {model}; ISA flags: {', '.join(flags) or 'none of ' + ', '.join(ISA_WORDS)}",
        f"- budget (`--scale {scale}`): " + ", ".join(f"{k} {v}" for k, v in figures["budget"].items()),
        f"- pytest exit code {code}, {seconds / 60:.1f} min; tests: "
        + ", ".join(f"{sum(o.startswith(k) for o in tests.values())} {k}" for k in ("passed", "xfailed", "failed")), "",
        "## Fuzz cases (hypothesis, derandomized) and `-o` replacements under SIGKILL", "",
        "Each case either works or fails with one clean line (an EdgekitError; at the CLI one `error:` line or "
        "click's usage error). Goals: 0 unclean messages, 0 tracebacks, 0 data lost, 0 unsafe (a file written outside "
        "the temporary folder or read outside the package). The known bugs below are counted here too.", "",
        *_cases_table(figures["cases"]), "",
        "## Kill -9 and races", "",
        *(f"- {section}: {name} {value}" for section in ("kill", "race") for name, value in sections.get(section, {}).items()),
        "",
        "## Soak: 8 threads sharing one Session", "",
        *_soak_table(sections.get("soak", {})), "",
        "## Known bugs (strict xfail: the test fails once the bug is fixed)", "",
        *([f"- `{test.split('::', 1)[1]}`: {reason}" for test, reason in sorted(known.items())] or ["- none"]), "",
    ]
    if failed:
        lines += ["## Tests that failed in this run", "", *(f"- `{test}`: {tests[test]}" for test in failed), ""]
    if details:
        lines += ["## First messages of each fault kind", "", *details, ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="examples=1000,soak_runs=50000,kill_rounds=3,race_rounds=5",
                        help="the budget (default: about 15-20 minutes on 2 cores)")
    parser.add_argument("--out", type=Path, default=README)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        figures_path = Path(folder) / "figures.json"
        code, seconds = run_suite(args.scale, figures_path)
        if not figures_path.exists():
            print(f"the suite wrote no figures (pytest exit code {code})", file=sys.stderr)
            return code or 1
        figures = json.loads(figures_path.read_text())
    args.out.write_text(render(figures, code, seconds, args.scale))
    print(f"wrote {args.out} (pytest exit code {code}, {seconds / 60:.1f} min)")
    return code


if __name__ == "__main__":
    sys.exit(main())
