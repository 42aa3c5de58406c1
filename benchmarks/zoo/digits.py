"""The in-house digits CNN (benchmarks/digits_cnn.py): scikit-learn's handwritten digits, real labels.

The weights are trained once by digits_cnn itself (about a minute on 2 cores) and kept in
benchmarks/.cache/; the zoo cache only holds the feeds. Calibration: training images; eval: the
first held-out images, scored on their true labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.digits_cnn import build as factory
from benchmarks.digits_cnn import digits_split
from benchmarks.zoo import CACHE, Feed, Runner, TaskScore, ZooModel, save_feeds

CALIB_SAMPLES = 32
EVAL_SAMPLES = 24


def build(cache: Path = CACHE) -> ZooModel:
    model, _ = factory()
    x_train, _, x_test, y_test = digits_split()
    images, labels = x_test[:EVAL_SAMPLES], y_test[:EVAL_SAMPLES]
    data = cache / "data" / "digits"
    calib = save_feeds(data / "calib.npz", {"image": x_train[:CALIB_SAMPLES]})
    evaluation = save_feeds(data / "eval.npz", {"image": images})

    def reference(feed: Feed) -> list[np.ndarray]:
        with torch.no_grad():
            return [model(torch.from_numpy(feed["image"])).numpy()]

    def task(run: Runner) -> TaskScore:
        predicted = np.array([int(np.argmax(run({"image": image[None]})[0])) for image in images])
        wrong = [f"{int(t)}→{int(p)}" for p, t in zip(predicted, labels) if p != t]
        detail = f"{len(labels) - len(wrong)}/{len(labels)} correct" + (f"; wrong {', '.join(wrong)}" if wrong else "")
        return TaskScore("top1", float((predicted == labels).mean()), detail)

    return ZooModel("digits", "benchmarks/digits_cnn.py:build", calib, evaluation, reference, task,
                    notes=f"true labels of the first {EVAL_SAMPLES} held-out digits; weights trained by digits_cnn")
