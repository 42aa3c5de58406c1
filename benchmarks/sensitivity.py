"""Which MatMuls of an ONNX model lose the most when ORT's dynamic int8 quantizes them.

For each weight MatMul, the model is quantized with only that node left in float; the gain in
worst-case cosine over the fully quantized model ranks the nodes (the node whose reverting
helps most is the most sensitive). Used by benchmarks/quantization.py to pick `exclude_nodes`.

    python benchmarks/sensitivity.py PACKAGE_FP32 --data out/quantization/data/pydoc_eval.txt --tokenizer MINILM_FOLDER
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def weight_matmuls(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in constants]


def describe(path: Path, names: list[str]) -> list[str]:
    """'weight MatMul #i of n, weight [rows, cols]' for each node, in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    order = weight_matmuls(path)
    inputs = {node.name: node.input[1] for node in graph.node if node.op_type == "MatMul"}
    return [f"{name} (weight MatMul #{order.index(name)} of {len(order)}, weight {shapes[inputs[name]]})" for name in names]


def embeddings(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return np.concatenate([session.run(None, {k: v for k, v in feed.items() if k in names})[0] for feed in feeds])


def worst_cosine(reference: np.ndarray, got: np.ndarray) -> float:
    cosine = (reference * got).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1))
    return float(cosine.min())


def quantized(path: Path, out: Path, exclude: list[str]) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(path), str(out), op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True,
                     weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    return out


def rank(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[tuple[str, float]]:
    """(node, worst cosine with only that node in float), most sensitive first; the baseline is first as ''."""
    reference = embeddings(path, feeds)
    with tempfile.TemporaryDirectory() as work:
        base = worst_cosine(reference, embeddings(quantized(path, Path(work) / "all.onnx", []), feeds))
        scores = [("", base)]
        for name in weight_matmuls(path):
            scores.append((name, worst_cosine(reference, embeddings(quantized(path, Path(work) / "one.onnx", [name]), feeds))))
    return [scores[0], *sorted(scores[1:], key=lambda item: -item[1])]


def text_feeds(text: Path, tokenizer: str, count: int) -> list[dict[str, np.ndarray]]:
    from edgekit.data import load_data
    from edgekit.spec import TensorSpec

    specs = tuple(TensorSpec(n, ("batch", "sequence"), "int64") for n in ("input_ids", "attention_mask", "token_type_ids"))
    return list(load_data(f"text:{text}", specs, tokenizer).head(count).feeds())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args()
    ranked = rank(args.package / "model.onnx", text_feeds(args.data, args.tokenizer, args.samples))
    print(json.dumps(ranked, indent=1))
