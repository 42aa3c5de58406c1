"""When post-training quantization is not enough: PTQ vs mixed precision under a budget vs quantization-aware
distillation (QAT), on the digits CNN and all-MiniLM-L6-v2, for cpu-ort and cpu-openvino.

Each method is one recipe compiled with edgekit.compile (benchmarks/quantization.py's compile_method): fidelity
is measured there against the PyTorch source on the held-out data (digits: top-1 on 360 images and the worst
sample's logit cosine; MiniLM: embedding cosine, mean and worst of 128 held-out pydoc sentences); latency is the
median over alternating rounds of each package's p50 (edgekit's bench harness, batch 1, `--threads`).

    python benchmarks/precision.py --out out/precision [--only digits|minilm] [--targets cpu-ort,cpu-openvino]

The tables go to OUT/results.md and .json, and replace the precision section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

START, END = "<!-- precision:start -->", "<!-- precision:end -->"
HELD_OUT = 256  # MiniLM sentences neither calibrated nor searched on: the budget's worst case checked where it was not chosen
WORST = 0.01  # the budget: mean and worst sample within 0.01 of the source (MiniLM: cosine ≥ 0.99 everywhere)
STATIC = {"quantize": {"precision": "int8", "scheme": "static"}}
DYNAMIC = {"quantize": {"precision": "int8", "scheme": "dynamic"}}


def _budget(scheme: str, metric: str) -> dict:
    return {"quantize": {"precision": "int8", "scheme": scheme,
                         "budget": {"max_drop": WORST, "worst": WORST, "metric": metric}}}


QAT = {"pass": "qat"}
NNCF_TRANSFORMER = {"pass": "quantize-nncf", "with": {"preset": "mixed", "model_type": "transformer"}}
NNCF_TRANSFORMER_MIXED = {"pass": "quantize-nncf", "with": {"preset": "mixed", "model_type": "transformer", "budget": {
    "max_drop": WORST, "worst": WORST, "metric": "cosine"}}}

# (model, target) → method → steps
METHODS = {
    ("digits", "cpu-ort"): {
        "fp32": [],
        "PTQ int8 static": [STATIC],
        "mixed: int8 static + fp32 within the budget (cosine of logits)": [_budget("static", "cosine")],
        "QAT → int8 static": [QAT, STATIC],
    },
    ("digits", "cpu-openvino"): {
        "fp32": [],
        "PTQ int8 (NNCF)": [STATIC],
        "mixed: int8 (NNCF) + fp32 within the budget (cosine of logits)": [_budget("static", "cosine")],
        "QAT → int8 (NNCF)": [QAT, STATIC],
    },
    ("minilm", "cpu-ort"): {
        "fp32": [],
        "PTQ int8 static": [STATIC],
        "PTQ int8 dynamic": [DYNAMIC],
        "mixed: int8 static + fp32 within the budget": [_budget("static", "cosine")],
        "mixed: int8 dynamic + fp32 within the budget": [_budget("dynamic", "cosine")],
        "QAT → int8 static": [QAT, STATIC],
    },
    ("minilm", "cpu-openvino"): {
        "fp32": [],
        "PTQ int8 (NNCF)": [STATIC],
        "PTQ int8 (NNCF transformer preset)": [NNCF_TRANSFORMER],
        "mixed: NNCF transformer + fp32 within the budget": [NNCF_TRANSFORMER_MIXED],
        "QAT → int8 (NNCF)": [QAT, STATIC],
        "QAT → NNCF transformer": [QAT, NNCF_TRANSFORMER],
    },
}


def compile_row(model: str, data: tuple[str, str, str], target: str, method: str, steps: list, out: Path) -> dict:
    from quantization import compile_method

    from edgekit.package import read_package

    row = compile_method(model, data, target, method, steps, out, out / "cache")
    if "package" in row:
        manifest = read_package(row["package"]).manifest
        plan = manifest.precision_plan or {}
        row["promoted"] = len(plan.get("promoted", {})) if plan else None
        row["layers"] = len(plan.get("layers", [])) if plan else None
        row["candidates"] = len(plan.get("candidates", [])) if plan else None
        row["qat"] = next((report for report in manifest.reports if report.get("pass") == "qat"), None)
    return row


def held_out_sentences(folder: Path, skip: int) -> str:
    """`text:` data of HELD_OUT evaluation-split sentences after the first `skip` (those the compiles evaluate on)."""
    import corpus

    _, evaluation = corpus.split()
    path = folder / "pydoc_held_out.txt"
    path.write_text("\n".join(evaluation[skip:skip + HELD_OUT]) + "\n")
    return f"text:{path}"


def held_out_cosines(rows: list[dict], source: str, data: str) -> None:
    """Each package's embedding cosine to the source's on the held-out sentences: mean and worst, in the row."""
    import numpy as np

    from edgekit.data import load_data
    from edgekit.evaluate import collect, runner_for
    from edgekit.ingest import ingest
    from edgekit.runtime import load

    model = ingest(source)
    feeds = list(load_data(data, model.inputs, model.meta.get("tokenizer")).feeds())
    reference = [outputs[0].ravel() for outputs in collect(runner_for(model), feeds)]
    for row in rows:
        if "package" not in row:
            continue
        session = load(row["package"])
        got = [next(iter(session.run(feed).values())).ravel() for feed in feeds]
        cosines = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(reference, got)]
        row["held_out"] = {"mean": float(np.mean(cosines)), "worst": float(np.min(cosines)), "samples": len(cosines)}


def table(rows: list[dict], model: str, target: str) -> list[str]:
    from quantization import EVAL_SENTENCES

    chosen = [row for row in rows if row["model"] == model and row["target"] == target]
    if not chosen:
        return []
    fidelity_head = "top-1 (source) / worst logit cosine" if model == "digits" else \
        f"cosine mean / worst: evaluation ({EVAL_SENTENCES}) · held out ({HELD_OUT})"
    lines = [f"| method | size MB | p50 ms | {fidelity_head} | compile s | note |", "|---|---:|---:|---|---:|---|"]
    for row in chosen:
        if "error" in row:
            lines.append(f"| {row['method']} | – | – | – | {row['compile_s']:.0f} | {row['error'].replace('|', '/')} |")
            continue
        fidelity = row["fidelity"]
        if model == "digits":
            value = f"{fidelity['accuracy']:.4f} ({fidelity['reference_accuracy']:.4f}) / {fidelity['cosine_min']:.4f}"
        else:
            held = row.get("held_out") or {}
            value = (f"{fidelity['cosine_mean']:.4f} / {fidelity['cosine_min']:.4f} · "
                     f"{held.get('mean', float('nan')):.4f} / {held.get('worst', float('nan')):.4f}")
        note = ""
        if row.get("promoted") is not None:
            note = (f"{row['promoted']} of {row['layers']} quantized layers kept in fp32; "
                    f"{row['candidates']} candidates measured")
        if row.get("qat"):
            note = f"QAT {row['qat'].get('steps', '?')} steps"
        lines.append(f"| {row['method']} | {row['bytes'] / 1e6:.2f} | {row.get('p50_ms', float('nan')):.3f} | {value} | "
                     f"{row['compile_s']:.0f} | {note} |")
    return lines


def report(rows: list[dict], meta: dict) -> str:
    conditions = next((row["conditions"] for row in rows if "conditions" in row), {})
    titles = {"digits": "Digits CNN (top-1 on 360 held-out images)",
              "minilm": "all-MiniLM-L6-v2 (embedding cosine on 128 held-out sentences)"}
    out = [START, "## PTQ vs mixed precision vs QAT (benchmarks/precision.py)", "",
           f"Produced by `python benchmarks/precision.py` on {meta['date']}. CPU: {conditions.get('cpu', '?')}; "
           f"{os.cpu_count()} logical cores; threads {meta['threads']}; batch 1; latency = median over {meta['rounds']} "
           f"alternating rounds of the p50 of {meta['runs']} runs. Budget of the mixed rows: mean and worst sample "
           f"within {WORST} of the source on the evaluation data (MiniLM: cosine ≥ {1 - WORST} on every held-out sentence). "
           f"Load average {meta['load_before']} before, {meta['load_after']} after. {meta['note']}", ""]
    for model in ("digits", "minilm"):
        for target in ("cpu-ort", "cpu-openvino"):
            lines = table(rows, model, target)
            if lines:
                out += [f"### {titles[model]} on {target}", "", *lines, ""]
    out.append(END)
    return "\n".join(out)


def main() -> None:
    from quantization import EVAL_SENTENCES, prepare_data, time_packages, write_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/precision"))
    parser.add_argument("--only", choices=("digits", "minilm"))
    parser.add_argument("--targets", default="cpu-ort,cpu-openvino")
    parser.add_argument("--methods", default="", help="Only methods whose name contains this text.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--note", default="", help="What else ran on the machine meanwhile (for the report).")
    parser.add_argument("--no-results", action="store_true", help="Do not touch benchmarks/RESULTS.md.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads, "rounds": args.rounds,
            "runs": args.runs, "load_before": f"{os.getloadavg()[0]:.1f}", "note": args.note}
    data = prepare_data(args.out / "data")
    rows = []
    for model in [args.only] if args.only else ["digits", "minilm"]:
        for target in args.targets.split(","):
            for method, steps in METHODS[(model, target)].items():
                if args.methods and args.methods not in method and method != "fp32":
                    continue
                row = compile_row(model, data[model], target, method, steps, args.out)
                print(f"{model} {target} {method}: {row.get('error') or 'ok'} ({row['compile_s']:.0f} s)", flush=True)
                rows.append(row)
            done = [r for r in rows if r["model"] == model and r["target"] == target]
            if model == "minilm":
                held_out_cosines(done, data[model][0], held_out_sentences(args.out / "data", EVAL_SENTENCES))
            time_packages(done, args.threads, args.rounds, args.runs)
    meta["load_after"] = f"{os.getloadavg()[0]:.1f}"
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    text = report(rows, meta)
    (args.out / "results.md").write_text(text)
    print(text)
    if not args.no_results:
        write_results(text, START, END)


if __name__ == "__main__":
    main()
