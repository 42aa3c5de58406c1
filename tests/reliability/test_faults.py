"""Faults around real `edgekit compile` processes: SIGKILL at every step boundary and a resume from the cache; two
compiles racing into one cache and one output; SIGKILL at every rename while `-o` replaces an existing package.
Afterwards the output is an intact package (or absent), the cache holds only entries that match their hashes, and
the next run leaves no partial, old or work folder behind."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import CNN_INPUT
from reliability.figures import BUDGET, TALLY

from edgekit.runtime import load

FAULT = Path(__file__).with_name("fault.py")
STEP_LINE = re.compile(r"^\s+(?P<pass>[\w-]+)\s+(?:inserted|recipe|lowering)\s+(?P<note>cached|[\d.]+s)$")
LIMIT = 300  # seconds any one compile may take


@pytest.fixture(autouse=True)
def _own_tempdir(tmp_path, monkeypatch):
    """Zip packages this test process opens are unpacked under its own tmp_path."""
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


def child_env(folder: Path) -> dict[str, str]:
    """The environment of a compile: its own temporary folder and log folder, unbuffered output."""
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(folder / "tmp"), "EDGEKIT_CACHE_DIR": str(folder / "logs"), "PYTHONUNBUFFERED": "1"}


def compile_args(source: object, data: Path, out: Path, cache: Path, recipe: str = "int8") -> list[str]:
    return ["compile", str(source), "--target", "cpu-ort", "--recipe", recipe, "--calib", str(data), "--eval", str(data),
            "--input", CNN_INPUT, "-o", str(out), "--cache-dir", str(cache), "--bench-runs", "2"]


def edgekit(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "edgekit.cli", *args]


def faulted(folder: Path, at: int, when: str, action: str, args: list[str]) -> list[str]:
    return [sys.executable, str(FAULT), str(folder), str(at), when, action, "--", *args]


def step_lines(stderr: str) -> list[str]:
    """The note (`cached` or its seconds) of each step the compile finished, in order."""
    return [found["note"] for line in stderr.splitlines() if (found := STEP_LINE.match(line))]


def one_clean_line(stderr: str) -> bool:
    """A refusal as the CLI must print it: one `error:` line and no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    return len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr


def intact(out: Path) -> dict:
    """The manifest of the package at `out` after loading it (every file verified) and running it once."""
    session = load(out)
    result = session.run({"image": np.zeros((2, 1, 8, 8), np.float32)})
    assert [value.shape for value in result.values()] == [(2, 4)]
    return json.loads((session.package.root / "manifest.json").read_text())


def cache_verifies(cache: Path) -> bool:
    """`edgekit cache verify` finds entries and removes none as corrupt."""
    from edgekit.cache import verify

    intact, removed = verify(cache)
    return intact > 0 and removed == 0


def leftovers(out: Path, cache: Path, tmp: Path) -> list[str]:
    """What killed or racing runs left behind after a clean run: anything beside the output in its folder, partial
    cache entries, work folders and partial unpacked archives in the temporary folder."""
    found = [p for p in out.parent.iterdir() if p.name != out.name]
    found += [p for p in cache.glob("*.partial-*")] + list(tmp.glob("edgekit-work-*")) + list(tmp.rglob("*.partial-*"))
    return sorted(str(p) for p in found)


class Compile:
    """A compile in a child process whose stderr is read as it comes."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.process.stderr.readline, "")))
        self.reader.start()

    def wait(self) -> int:
        code = self.process.wait(LIMIT)
        self.reader.join()
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def kill_when(self, reached: Callable[[Compile], bool], delay: float) -> bool:
        """SIGKILL once `reached(self)` holds (then `delay` seconds later); False when the compile ended first."""
        deadline = time.monotonic() + LIMIT
        while not reached(self) and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        return self.wait() == -signal.SIGKILL


def kill_points(out: Path, steps: int) -> list[tuple[str, Callable[[Compile], bool]]]:
    """Where a compile is killed: its staging folder exists (no step done), after each step, and while it measures
    the staged package; each as (name, condition over the running compile)."""
    def staged(run: Compile, inside: str = "") -> bool:  # this compile's own staging folder (named by its pid)
        return any(out.parent.glob(f".{out.name}.partial-{run.process.pid}-*{inside}"))

    points: list[tuple[str, Callable[[Compile], bool]]] = [("staging made", staged)]
    points += [(f"step {k} done", lambda run, k=k: len(step_lines(run.stderr)) >= k) for k in range(1, steps + 1)]
    points.append(("package staged", lambda run: staged(run, "/manifest.json")))
    return points


def test_a_compile_killed_at_every_step_boundary_resumes_from_its_cache(tmp_path, cnn_source, cnn_data):
    """A chain of compiles, each killed at the next boundary: every step an earlier run finished is a cache hit, a
    killed compile leaves no package (or, killed after its commit, a complete one), and the run that completes leaves
    nothing behind. Rounds after the first kill a random 0–300 ms after a step's boundary (inside the next step)."""
    for round_ in range(BUDGET.kill_rounds):
        folder = tmp_path / f"round-{round_}"
        out, cache, env = folder / "out" / "pkg", folder / "cache", child_env(folder)
        command = edgekit(compile_args(cnn_source, cnn_data, out, cache))
        delays = random.Random(round_)
        done = killed = 0  # steps finished by earlier runs of the chain; runs killed
        for name, reached in kill_points(out, steps=3):
            run = Compile(command, env)
            delay = delays.uniform(0, 0.3) if round_ and name.startswith("step") else 0.0
            if run.kill_when(reached, delay):
                killed += 1
                TALLY.add("kill", "step boundaries killed")
            else:  # only a delayed kill may come after the compile's end
                assert delay and run.process.returncode == 0, f"the compile ended before '{name}': {run.stderr[-800:]}"
            notes = step_lines(run.stderr)
            assert notes[:done] == ["cached"] * min(done, len(notes)), f"{name}: earlier steps not from the cache: {notes}"
            assert not out.exists() or (round_ and intact(out)), f"a compile killed at '{name}' left {out}"
            done = max(done, len(notes))
        final = Compile(command, env)
        assert final.wait() == 0, final.stderr[-2000:]
        assert step_lines(final.stderr) == ["cached"] * 3 and done == 3
        assert [step["cached"] for step in intact(out)["steps"]] == [True] * 3
        assert leftovers(out, cache, folder / "tmp") == [] and cache_verifies(cache)
        TALLY.add("kill", "step boundaries resumed", killed)


def race(out: Path, folder: Path, args: list[str], interleaved: bool) -> list[Compile]:
    """Two compiles of the same command at once; interleaved: the first stops just before its first rename into the
    output's folder until the second has finished (so the second commits in the middle of the first's commit)."""
    env = child_env(folder)
    if not interleaved:
        pair = [Compile(edgekit(args), env), Compile(edgekit(args), env)]
        [run.wait() for run in pair]
        return pair
    flag = folder / "go"
    first = Compile(faulted(out.parent, 1, "before", f"wait:{flag}", args), env)
    deadline = time.monotonic() + LIMIT
    while not flag.with_name("go.reached").exists() and first.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    second = Compile(edgekit(args), env)
    second.wait()
    flag.touch()
    first.wait()
    return [first, second]


@pytest.mark.parametrize("name, interleaved", [("pkg", False), ("pkg.zip", False), ("pkg", True), ("pkg.zip", True)],
                         ids=["folder-together", "zip-together", "folder-interleaved", "zip-interleaved"])
def test_two_compiles_into_one_cache_and_one_output(tmp_path, cnn_onnx, cnn_data, name, interleaved):
    """Both succeed, or one fails with one clean line; the output is an intact package, the cache verifies and is
    whole (a third compile takes every step from it), and nothing is left behind."""
    for round_ in range(BUDGET.race_rounds):
        folder = tmp_path / f"round-{round_}"
        out, cache = folder / "out" / name, folder / "cache"
        args = compile_args(cnn_onnx, cnn_data, out, cache)
        pair = race(out, folder, args, interleaved)
        codes = [run.process.returncode for run in pair]
        TALLY.add("race", "compiles", 2)
        TALLY.add("race", "clean refusals", sum(code == 1 and one_clean_line(run.stderr) for code, run in zip(codes, pair)))
        assert 0 in codes and all(code == 0 or one_clean_line(run.stderr) for code, run in zip(codes, pair)), \
            [run.stderr[-1500:] for run in pair]
        intact(out)
        assert cache_verifies(cache)
        third = Compile(edgekit(args), child_env(folder))
        assert third.wait() == 0 and step_lines(third.stderr) == ["cached", "cached"], third.stderr[-1500:]
        assert leftovers(out, cache, folder / "tmp") == []
        TALLY.add("race", "rounds intact")


@pytest.mark.parametrize("name", ["pkg", "pkg.zip"], ids=["folder", "zip"])
def test_kill_at_every_rename_while_replacing_a_package_keeps_the_old_or_the_new(tmp_path, cnn_onnx, cnn_data, name):
    """`-o` over an existing fp32 package with an int8 compile, SIGKILLed before and after each rename into the
    output's folder: the output is the old package, intact, or the new one, complete — never missing or mixed — and
    the next run completes and leaves nothing behind."""
    out, cache, env = tmp_path / "out" / name, tmp_path / "cache", child_env(tmp_path)
    old = tmp_path / "old" / name
    assert subprocess.run(edgekit(compile_args(cnn_onnx, cnn_data, old, cache, "fp32")), env=env,
                          capture_output=True, timeout=LIMIT).returncode == 0
    args = compile_args(cnn_onnx, cnn_data, out, cache)
    for at in range(1, 10):
        if "finished" in [_kill_at_rename(old, out, tmp_path, args, env, at, when) for when in ("before", "after")]:
            return
    pytest.fail("more than 9 renames into the output's folder")


def _kill_at_rename(old: Path, out: Path, folder: Path, args: list[str], env: dict[str, str], at: int, when: str) -> str:
    """Put the old package at `out`, run the compile killed `when` its `at`-th rename, judge `out`, then rerun."""
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    (shutil.copytree if old.is_dir() else shutil.copy)(old, out)
    run = Compile(faulted(out.parent, at, when, "kill", args), env)
    code = run.wait()
    assert code in (0, -signal.SIGKILL), run.stderr[-1500:]
    TALLY.add("kill", "renames killed", code != 0)
    try:
        precision = intact(out)["precision"]
    except Exception as error:
        TALLY.case("replace -o", "lost", f"killed {when} rename {at} of {out.name}: {error}")
        raise AssertionError(f"killed {when} rename {at}: {out} is neither the old package nor the new: {error}") from None
    TALLY.case("replace -o", "ok")
    assert precision in ("fp32", "int8")
    rerun = Compile(edgekit(args), env)
    assert rerun.wait() == 0, rerun.stderr[-1500:]
    assert intact(out)["precision"] == "int8"
    assert leftovers(out, Path(args[args.index("--cache-dir") + 1]), folder / "tmp") == []
    TALLY.add("kill", "renames resumed", code != 0)
    return "finished" if code == 0 else "killed"
