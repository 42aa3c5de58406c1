"""Soak each runtime available here: 8 threads share one Session (`Session.run` is documented safe to call from
several threads at once) for a bounded number of runs over batches of varied sizes. No run fails, every output
equals the single-threaded one, and the process's RSS stays within a bound after a warm-up."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import compile_cnn
from reliability.figures import BUDGET, TALLY

from edgekit.runtime import load
from edgekit.target import load_target

TARGETS = {"onnxruntime": "cpu-ort", "openvino": "cpu-openvino", "tflite": "mobile-tflite", "executorch": "mobile-executorch"}
BATCHES = (1, 2, 3, 8, 1, 5, 2, 4)  # one feed each, cycled through: runtimes that resize per call (LiteRT) do so here
MB = 2**20


@pytest.fixture(scope="module", params=list(TARGETS))
def package(request, tmp_path_factory, cnn_source, cnn_data) -> tuple[str, Path]:
    """The tiny CNN compiled fp32 for the runtime's target, once."""
    target = TARGETS[request.param]
    unavailable = load_target(target).availability()
    if unavailable:
        pytest.skip(f"{target}: {unavailable}")
    return request.param, compile_cnn(tmp_path_factory, cnn_source, cnn_data, target, "fp32", f"soak-{request.param}")


def test_eight_threads_share_one_session(package):
    runtime, path = package
    session = load(path)
    rng = np.random.default_rng(0)
    batch = session.inputs[0].shape[0]  # a static batch (ExecuTorch's mobile target) is kept, a symbolic one varied
    feeds = [{"image": rng.standard_normal((size if isinstance(batch, str) else batch, 1, 8, 8)).astype(np.float32)}
             for size in BATCHES]
    expected = [session.run(feed) for feed in feeds]  # the single-threaded outputs
    threads, runs = BUDGET.soak_threads, BUDGET.soak_runs
    errors: list[str] = []
    counts = {"mismatches": 0, "inexact": 0}
    lock = threading.Lock()

    def work(index: int, count: int) -> None:
        for run in range(count):
            which = (index + run) % len(feeds)
            try:
                got = session.run(feeds[which])
            except Exception as error:  # counted, not raised: the soak reports every failure
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
                continue
            want = expected[which]
            exact = got.keys() == want.keys() and all(np.array_equal(got[n], want[n]) for n in want)
            close = exact or (got.keys() == want.keys() and all(np.allclose(got[n], want[n], rtol=1e-5, atol=1e-6)
                                                                for n in want))
            if not exact:
                with lock:
                    counts["inexact" if close else "mismatches"] += 1

    def soak(count: int) -> float:
        workers = [threading.Thread(target=work, args=(index, count)) for index in range(threads)]
        started = time.perf_counter()
        [worker.start() for worker in workers]
        [worker.join() for worker in workers]
        return time.perf_counter() - started

    soak(2 * len(feeds))  # warm-up: each thread's own interpreter / infer request / program, every batch size
    process = psutil.Process()
    rss_start = process.memory_info().rss / MB
    seconds = soak(runs)
    rss_end = process.memory_info().rss / MB
    TALLY.put("soak", runtime, {"threads": threads, "runs": threads * runs, "errors": len(errors), **counts,
                                "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1),
                                "seconds": round(seconds, 1)})
    assert errors == [] and counts["mismatches"] == 0, (errors[:3], counts)
    assert rss_end - rss_start < BUDGET.soak_rss_mb, f"RSS grew {rss_end - rss_start:.1f} MB over {threads * runs} runs"
