"""Benchmark packages, each in a fresh process so its memory and threads are its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgekit.errors import EdgekitError, UserError
from edgekit.manifest import BenchRecord
from edgekit.schema import build


def bench(packages: list[str | Path], threads: int | None = None, batch: int = 1, runs: int = 100,
          warmup: int = 10) -> list[BenchRecord]:
    """Measure each package (see harness.measure for the figures); one record per package."""
    if runs < 1 or warmup < 0 or batch < 1:
        raise UserError("bench: runs and batch must be at least 1, warmup at least 0")
    results = []
    for package in packages:
        command = [sys.executable, "-m", "edgekit.bench.worker", str(package), "--batch", str(batch),
                   "--runs", str(runs), "--warmup", str(warmup)]
        if threads:
            command += ["--threads", str(threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise EdgekitError(f"bench of {package} crashed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        result = json.loads(lines[-1])
        if "error" in result:
            raise UserError(result["error"])
        results.append(build(BenchRecord, result, f"bench of {package}"))
    return results
