"""The NVIDIA GPU checks in one script: `python tests/gpu/run_gpu_checks.py` on a machine with a GPU.

For each GPU target and precision whose packages are here (gpu-ort-cuda: onnxruntime-gpu;
gpu-tensorrt: tensorrt + cuda-python), it compiles tests/models.py:tiny_cnn, loads the package,
compares its outputs with the PyTorch source on 64 seeded samples, checks batch 1 and batch 8
and 4 threads at once, benches it, and prints one line per check. Bounds: fp32 max relative
error 1e-3; fp16 1e-2 with top-1 agreement 1.0; int8 cosine >= 0.98 and top-1 agreement >= 0.9.
Checks whose package or device is missing are listed as SKIP with the reason. Exit status:
1 when any check failed, 0 otherwise (all skipped included: the summary says so).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
SOURCE = f"{TESTS / 'models.py'}:tiny_cnn"
INPUT = "image:batchx1x8x8:float32"
SAMPLES = 64
# (target, precision, max relative error or None, min cosine, min top-1 agreement)
CHECKS = [
    ("gpu-ort-cuda", "fp32", 1e-3, 0.9999, 1.0),
    ("gpu-ort-cuda", "fp16", 1e-2, 0.999, 1.0),
    ("gpu-ort-cuda", "int8", None, 0.98, 0.9),
    ("gpu-tensorrt", "fp32", 1e-3, 0.9999, 1.0),
    ("gpu-tensorrt", "fp16", 1e-2, 0.999, 1.0),
    ("gpu-tensorrt", "int8", None, 0.98, 0.9),
]


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str

    def line(self) -> str:
        return f"{self.status:4} {self.name:20} {self.detail}"


def make_data(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """64 seeded images with the source model's own labels, saved as .npz; also the source logits."""
    import torch

    sys.path.insert(0, str(TESTS))
    from models import tiny_cnn

    images = np.random.default_rng(0).standard_normal((SAMPLES, 1, 8, 8)).astype(np.float32)
    module, _ = tiny_cnn()
    with torch.no_grad():
        logits = module(torch.from_numpy(images)).numpy()
    path = folder / "cnn.npz"
    np.savez(path, image=images, labels=logits.argmax(axis=1))
    return path, images, logits


def run_check(target: str, precision: str, max_rel: float | None, min_cosine: float, min_top1: float,
              folder: Path, data: Path, images: np.ndarray, logits: np.ndarray) -> Result:
    """Compile, load, compare, run batches and threads, bench: one Result."""
    from edgekit.bench.harness import measure
    from edgekit.compiler import compile
    from edgekit.metrics import compare
    from edgekit.runtime import load
    from edgekit.spec import parse_input_spec
    from edgekit.target import load_target

    name = f"{target} {precision}"
    why = load_target(target).availability()
    if why:
        return Result(name, "SKIP", why)
    out = folder / name.replace(" ", "-")
    try:
        started = time.perf_counter()
        compile(SOURCE, target, out, precision, data, data, (parse_input_spec(INPUT),), bench_runs=20)
        compile_s = time.perf_counter() - started
        session = load(out)

        def logits_of(batch: np.ndarray) -> np.ndarray:
            return next(iter(session.run({"image": batch}).values()))

        got = logits_of(images)
        fidelity = compare([[logits]], [[got]])
        single = np.concatenate([logits_of(images[i:i + 1]) for i in range(8)])
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(lambda i: logits_of(images[i * 8:(i + 1) * 8]), range(8)))
        bench = measure(out, runs=200, warmup=20)
    except Exception as error:  # a failed check is reported, the others still run
        first = (str(error).strip().splitlines() or [""])[0]
        return Result(name, "FAIL", f"{type(error).__name__}: {first}")
    problems = []
    if max_rel is not None and fidelity["max_rel"] > max_rel:
        problems.append(f"max_rel {fidelity['max_rel']:.2e} > {max_rel:.0e}")
    if fidelity["cosine_min"] < min_cosine:
        problems.append(f"cosine_min {fidelity['cosine_min']:.5f} < {min_cosine}")
    if fidelity["top1_agreement"] < min_top1:
        problems.append(f"top-1 agreement {fidelity['top1_agreement']:.3f} < {min_top1}")
    if not np.allclose(single, got[:8], rtol=1e-3, atol=1e-4):
        problems.append("batch 1 differs from batch 64")
    if not np.allclose(np.concatenate(threaded), got, rtol=1e-3, atol=1e-4):
        problems.append("4 threads at once differ from one call")
    detail = (f"max_rel {fidelity['max_rel']:.2e} cosine_min {fidelity['cosine_min']:.5f} "
              f"top1 {fidelity['top1_agreement']:.3f} | p50 {bench['latency_ms']['p50']:.3f} ms "
              f"(batch 1, 200 runs, 20 warm-up) | {bench['file_bytes']} B | compile {compile_s:.1f} s")
    return Result(name, "FAIL" if problems else "PASS", "; ".join(problems) + " | " + detail if problems else detail)


def environment() -> str:
    parts = []
    for module in ("torch", "onnxruntime", "tensorrt"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            parts.append(f"{module} absent")
    try:
        import onnxruntime

        parts.append("providers " + ",".join(onnxruntime.get_available_providers()))
    except ImportError:
        pass
    return "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the checks whose name contains this text, e.g. tensorrt")
    args = parser.parse_args()
    print(f"environment: {environment()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="edgekit-gpu-") as tmp:
        folder = Path(tmp)
        data, images, logits = make_data(folder)
        for target, precision, *bounds in CHECKS:
            if args.only in f"{target} {precision}":
                result = run_check(target, precision, *bounds, folder, data, images, logits)
                print(result.line(), flush=True)
                results.append(result)
    counts = {status: sum(r.status == status for r in results) for status in ("PASS", "FAIL", "SKIP")}
    print(f"summary: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped"
          + (" (nothing ran: no NVIDIA GPU runtime here)" if counts["SKIP"] == len(results) else ""))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
