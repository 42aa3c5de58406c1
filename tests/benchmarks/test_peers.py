"""benchmarks/peers.py on the tiny CNN: the package and two peers time, score and judge; a failing peer is one row."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from conftest import CNN_INPUT

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import peers  # noqa: E402
from benchmarks.zoo import TaskScore, ZooModel  # noqa: E402


def test_compare_rows_ratio_and_table(monkeypatch, cnn_source, cnn_data, cnn_package):
    from models import tiny_cnn

    module, _ = tiny_cnn()
    images = np.load(cnn_data)["image"][:8]

    def reference(feed):
        with torch.no_grad():
            return [module(torch.from_numpy(feed["image"])).numpy()]

    wanted = [int(np.argmax(reference({"image": image[None]})[0])) for image in images]

    def task(run):
        got = [int(np.argmax(run({"image": image[None]})[0])) for image in images]
        return TaskScore("top1 agreement", float(np.mean([g == w for g, w in zip(got, wanted)])))

    def broken(setup):
        raise peers.Refused("not today")

    monkeypatch.setattr(peers, "PEERS", {"ort-original": peers.ort_original, "openvino-default": peers.openvino_default,
                                         "broken": broken})
    model = ZooModel("tiny", cnn_source, cnn_data, cnn_data, reference, task, inputs=(CNN_INPUT,))
    result = peers.compare(model, cnn_package, threads=1, rounds=2, runs=3, warmup=1)
    rows = {row["name"]: row for row in result["rows"]}
    assert rows["edgekit"]["task"]["value"] == 1.0 and rows["edgekit"]["p50_ms"] > 0
    assert rows["ort-original"]["eligible"] and rows["openvino-default"]["eligible"]
    assert rows["broken"] == {"name": "broken", "kind": "peer", "p50_ms": None, "task": None, "eligible": False,
                              "error": "not today"}
    assert result["best_peer"] in ("ort-original", "openvino-default") and result["ratio"] > 0
    assert result["conditions"]["feed"] == {"image": {"shape": [1, 1, 8, 8], "dtype": "float32"}}
    assert "| broken | peer |" in peers.table(result)
