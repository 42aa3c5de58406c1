"""Greedy CTC decoding shared by the zoo's text recognizers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgekit.task_metrics import edit_distance


def greedy_decode(logits: np.ndarray, alphabet: Sequence[str], blank: int = 0) -> str:
    """Decode one sequence of per-step class scores `[T, C]`: argmax, merge repeats, drop blanks.

    `alphabet[i]` is the text of class i (the blank's entry is ignored).
    """
    best = np.asarray(logits).reshape(-1, np.shape(logits)[-1]).argmax(-1)
    keep = (best != blank) & np.concatenate(([True], best[1:] != best[:-1]))
    return "".join(alphabet[i] for i in best[keep])


def char_accuracy(text: str, truth: str) -> float:
    """1 − normalized edit distance between `text` and `truth` (1.0 = identical)."""
    return 1.0 - edit_distance(text, truth) / max(len(truth), len(text), 1)
