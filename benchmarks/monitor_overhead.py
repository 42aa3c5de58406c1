"""What monitoring costs: a monitored Session (runtime.load(..., monitor=True)) against a plain one, digits CNN, cpu-ort.

Both sessions open the same fp32 package (benchmarks/digits_cnn.py, compiled here unless --package names one) with the
same threads and run the same real held-out digit images, batch 1. In each round the two take turns run by run (who
goes first alternates), `--runs` runs each, so both meet the same load from the rest of the machine; each round gives
each session's p50. Reported:
- the median over rounds of (p50 monitored / p50 plain - 1), with its interquartile range across rounds, and the same
  for the mean latency (which carries the merge that every `batch`-th run does);
- the monitor's own cost per run, `Monitor.observe` timed alone on the same feeds in a tight loop (min over repeats,
  µs) and as a share of the plain p50. Right after an inference Python runs with cold caches, so in a Session the
  same code costs more than this figure; the paired rounds measure that.

    python benchmarks/monitor_overhead.py [--package PKG] [--out out/monitor_overhead] [--threads 1] [--rounds 30] [--runs 300]

Results go to OUT/results.json and are printed with the CPU model, its ISA flags and the versions used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import timeit
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def digits_package(out: Path) -> Path:
    """The fp32 cpu-ort package of the digits CNN in OUT (compiled once)."""
    import digits_cnn

    from edgekit.compiler import compile
    from edgekit.spec import parse_input_spec

    package = out / "digits-cpu-ort"
    if not (package / "manifest.json").is_file():
        calibration, evaluation = digits_cnn.write_data(out / "data")
        compile(f"{HERE / 'digits_cnn.py'}:build", "cpu-ort", package, "fp32", calibration, evaluation,
                (parse_input_spec("image:batchx1x32x32:float32"),), bench_runs=5)
    return package


def held_out_feeds(count: int) -> list[dict[str, np.ndarray]]:
    import digits_cnn

    _, _, images, _ = digits_cnn.digits_split()
    return [{"image": images[index:index + 1]} for index in range(min(count, len(images)))]


def paired_round(sessions: dict, feeds: list[dict[str, np.ndarray]], runs: int) -> dict[str, list[float]]:
    """Each session's latencies (ms) over `runs` runs, the sessions taking turns run by run (who goes first
    alternates), so both meet the same load from the rest of the machine."""
    latencies: dict[str, list[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for index in range(runs):
        feed = feeds[index % len(feeds)]
        for name in names if index % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            sessions[name].run(feed)
            latencies[name].append((time.perf_counter() - started) * 1e3)
    return latencies


def observe_cost_us(package: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """Monitor.observe alone on a fresh monitor, in a tight loop (the merge every `batch` runs included): min over
    repeats of the mean per call, in µs."""
    from edgekit.package import read_package
    from edgekit.runtime.monitor import Monitor

    manifest = read_package(package).manifest
    monitor = Monitor(manifest.inputs, manifest.data)
    cycle = iter(range(10**9))
    calls = 2000
    best = min(timeit.repeat(lambda: monitor.observe(feeds[next(cycle) % len(feeds)], 1.0), number=calls, repeat=15))
    return best / calls * 1e6


def conditions(threads: int | None, rounds: int, runs: int) -> dict:
    from importlib.metadata import version

    from edgekit.isa import host_cpu

    cpu = host_cpu()
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {"cpu": cpu.model, "machine": cpu.machine, "isa": cpu.isa.name, "cpu_flags": list(cpu.flags),
            "logical_cores": os.cpu_count(), "governor": governor.read_text().strip() if governor.is_file() else None,
            "threads": threads or "runtime default", "batch": 1, "rounds": rounds, "runs_per_round": runs,
            "python": platform.python_version(), "numpy": np.__version__, "onnxruntime": version("onnxruntime")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=None, help="A digits CNN package (default: compiled into OUT).")
    parser.add_argument("--out", type=Path, default=Path("out/monitor_overhead"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    from edgekit.runtime import load

    args.out.mkdir(parents=True, exist_ok=True)
    package = args.package or digits_package(args.out)
    feeds = held_out_feeds(256)
    sessions = {"plain": load(package, threads=args.threads), "monitored": load(package, threads=args.threads, monitor=True)}
    paired_round(sessions, feeds, 100)  # warm-up
    p50s: dict[str, list[float]] = {"plain": [], "monitored": []}
    means: dict[str, list[float]] = {"plain": [], "monitored": []}
    for _ in range(args.rounds):
        for name, latencies in paired_round(sessions, feeds, args.runs).items():
            p50s[name].append(float(np.median(latencies)))
            means[name].append(float(np.mean(latencies)))
    ratios = [monitored / plain - 1 for plain, monitored in zip(p50s["plain"], p50s["monitored"])]
    mean_ratios = [monitored / plain - 1 for plain, monitored in zip(means["plain"], means["monitored"])]
    quartiles = statistics.quantiles(ratios, n=4)
    plain_p50 = statistics.median(p50s["plain"])
    observe_us = observe_cost_us(package, feeds)
    stats = sessions["monitored"].stats()
    result = {
        "package": str(package), "conditions": conditions(args.threads, args.rounds, args.runs),
        "p50_ms": {name: statistics.median(values) for name, values in p50s.items()},
        "overhead_median": statistics.median(ratios), "overhead_iqr": [quartiles[0], quartiles[2]],
        "mean_latency_overhead_median": statistics.median(mean_ratios),
        "observe_us": observe_us, "observe_share_of_p50": observe_us / (plain_p50 * 1e3),
        "monitored_runs": stats["runs"], "drift_score": {name: (entry["drift"] or {}).get("score")
                                                         for name, entry in stats["inputs"].items()},
        "p50_rounds": p50s,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    c = result["conditions"]
    print(f"digits CNN, cpu-ort fp32, batch 1, {c['threads']} thread(s); {args.rounds} rounds x {args.runs} "
          f"runs per session, taking turns run by run; onnxruntime {c['onnxruntime']}, numpy {c['numpy']}, Python {c['python']}")
    print(f"CPU: {c['cpu']} ({c['machine']}, {c['logical_cores']} logical cores, ISA {c['isa']}: {' '.join(c['cpu_flags'])}; "
          f"governor {c['governor'] or 'unknown'})")
    print(f"p50 plain {result['p50_ms']['plain']:.4f} ms, monitored {result['p50_ms']['monitored']:.4f} ms (medians of rounds)")
    print(f"overhead (median of rounds' p50 ratios): {result['overhead_median']:+.2%} "
          f"(interquartile range {quartiles[0]:+.2%} … {quartiles[2]:+.2%})")
    print(f"overhead of the mean latency (median of rounds' ratios; merges every {stats['config']['batch']} runs "
          f"included): {result['mean_latency_overhead_median']:+.2%}")
    print(f"Monitor.observe alone in a tight loop, merges included: {observe_us:.2f} µs per run = "
          f"{result['observe_share_of_p50']:.2%} of the plain p50")
    print(f"monitored runs {stats['runs']}, drift score on held-out digits: "
          + ", ".join(f"{name} {score:.3f}" for name, score in result["drift_score"].items() if score is not None))
    print(f"written: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
