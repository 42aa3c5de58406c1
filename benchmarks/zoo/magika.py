"""Google's Magika content-type classifier (standard_v3_3, a tf2onnx export taking int32 bytes).

Features are built as magika 1.0.3 builds them (magika/magika.py, `_extract_features_from_seekable`):
at most `block_size` bytes from each end, the head lstripped and the tail rstripped of ASCII
whitespace, the first `beg_size` / last `end_size` bytes kept, padded with `padding_token`
(head padded at its end, tail at its start), concatenated beg + end. Samples are real files:
the Python standard library's (one or two per file type, sorted, deterministic) and this repo's
docs and configs.
"""

from __future__ import annotations

import json
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.zoo import CACHE, Feed, Runner, TaskScore, ZooModel, save_feeds, wheel_file

WHEEL = "magika==1.0.3"
MODEL = "magika/models/standard_v3_3/model.onnx"
CONFIG = "magika/models/standard_v3_3/config.min.json"
REPO = Path(__file__).resolve().parents[2]
SUFFIXES = (".py", ".pyc", ".txt", ".toml", ".xml", ".pem", ".json", ".gif", ".png", ".wav", ".zip", ".so",
            ".c", ".jpg", ".html", ".bat", ".tar", ".bmp", ".rst", ".ini", ".xz", ".tiff", ".webp", ".pickle")
REPO_PATTERNS = ("*.toml", "edgekit/*.py", "edgekit/builtin/recipes/*.yaml", "edgekit/builtin/targets/*.yaml", "tests/*.py",
                 "benchmarks/*.py", "edgekit/runtime/*.py")
WHITESPACE = b" \t\n\r\x0b\x0c"  # what bytes.strip() removes


def features(content: bytes, config: dict) -> np.ndarray:
    """magika's v2 features of one file: int32 [beg_size + end_size]."""
    beg_size, end_size, pad, block = config["beg_size"], config["end_size"], config["padding_token"], config["block_size"]
    assert config["mid_size"] == 0 and not config["use_inputs_at_offsets"]
    count = min(block, len(content))
    beg = list(content[:count].lstrip(WHITESPACE)[:beg_size])
    end = list(content[len(content) - count:].rstrip(WHITESPACE))[-end_size:] if end_size else []
    return np.array(beg + [pad] * (beg_size - len(beg)) + [pad] * (end_size - len(end)) + end, np.int32)


def sample_files() -> tuple[list[Path], list[Path]]:
    """(calibration files, evaluation files): per suffix the 1st file (stdlib by suffix, repo by pattern) calibrates, the 2nd evaluates."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    every = sorted(p for p in stdlib.rglob("*") if p.is_file() and "site-packages" not in p.parts)
    calib, evaluation = [], []
    for suffix in SUFFIXES:
        found = [p for p in every if p.suffix == suffix and p.stat().st_size >= 8][:2]
        calib += found[:1]
        evaluation += found[1:2]
    for pattern in REPO_PATTERNS:
        found = sorted(REPO.glob(pattern))[:2]
        calib += found[:1]
        evaluation += found[1:2]
    return calib, evaluation


def build(cache: Path = CACHE) -> ZooModel:
    import onnxruntime as ort

    model = wheel_file(WHEEL, MODEL, cache)
    config = json.loads(wheel_file(WHEEL, CONFIG, cache).read_text())
    labels = config["target_labels_space"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def reference(feed: Feed) -> list[np.ndarray]:
        return session.run(None, feed)

    calib_files, eval_files = sample_files()
    calib_bytes = np.stack([features(p.read_bytes(), config) for p in calib_files])
    eval_bytes = np.stack([features(p.read_bytes(), config) for p in eval_files])
    data = cache / "data" / "magika"
    calib = save_feeds(data / "calib.npz", {"bytes": calib_bytes})
    evaluation = save_feeds(data / "eval.npz", {"bytes": eval_bytes})
    wanted = [int(np.argmax(reference({"bytes": row[None]})[0])) for row in eval_bytes]
    python = [labels[w] for w, p in zip(wanted, eval_files) if p.suffix == ".py"]
    if not python or any(label != "python" for label in python):
        raise RuntimeError(f"the reference Magika labels .py files {python}: features differ from magika's")

    def task(run: Runner) -> TaskScore:
        got = [int(np.argmax(run({"bytes": row[None]})[0].reshape(-1))) for row in eval_bytes]
        agree = sum(g == w for g, w in zip(got, wanted))
        counts = Counter(labels[g] for g in got)
        detail = "labels: " + ", ".join(f"{label}×{n}" for label, n in counts.most_common())
        return TaskScore("top1 agreement", agree / len(wanted), detail)

    return ZooModel("magika", str(model), calib, evaluation, reference, task,
                    notes=f"{len(calib_files)} calib / {len(eval_files)} eval real files (stdlib by type + repo docs/configs)",
                    extra={"eval_files": [str(p) for p in eval_files], "reference_labels": [labels[w] for w in wanted]})
