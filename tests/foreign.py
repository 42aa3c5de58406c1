"""ONNX models shaped the way other exporters write them, built with onnx.helper (seeded weights).

- `opset11_classifier`: opset 11, input `x` with dims [unk__1, 3, ?, ?] (tf2onnx / Keras style), an
  opset-11 Squeeze (axes as an attribute) and Softmax: below the opset ORT's QDQ quantizer writes.
- `stateful_vad`: a voice-activity-style recurrent model: audio `x` [batch, ?], a 0-d int64
  sample rate `sr`, and a GRU state `state` [1, batch, 16] that the model returns for its next call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN = 16
RATE = 16000


def _weights(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def opset11_classifier(path: Path, classes: int = 5) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_weights(rng, 8, 3, 3, 3), "conv_w"), numpy_helper.from_array(_weights(rng, 8), "conv_b"),
             numpy_helper.from_array(_weights(rng, classes, 8), "fc_w"), numpy_helper.from_array(_weights(rng, classes), "fc_b")]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
        helper.make_node("Squeeze", ["pool"], ["flat"], axes=[2, 3], name="squeeze"),  # opset-11 form
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["unk__1", 3, "?", "?"])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["unk__2", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="tf2onnx")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def classifier_with_images(folder: Path, count: int, height: int, width: int) -> tuple[Path, Path, np.ndarray]:
    """The opset-11 classifier in `folder` and `count` seeded images [count, 1, 3, height, width] saved beside it."""
    path = opset11_classifier(folder / "classifier.onnx")
    images = np.random.default_rng(0).random((count, 1, 3, height, width), dtype=np.float32)
    np.savez(folder / "images.npz", x=images)
    return path, folder / "images.npz", images


def stateful_vad(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(_weights(rng, 1, 3 * HIDDEN, 1, scale=1.0), "gru_w"),
        numpy_helper.from_array(_weights(rng, 1, 3 * HIDDEN, HIDDEN), "gru_r"),
        numpy_helper.from_array(_weights(rng, 1, 6 * HIDDEN), "gru_b"),
        numpy_helper.from_array(_weights(rng, HIDDEN, 1), "out_w"),
        numpy_helper.from_array(np.array([RATE], np.float32), "rate"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    nodes = [
        helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_f", "rate"], ["gain"]),
        helper.make_node("Mul", ["x", "gain"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["time_major"], perm=[1, 0]),
        helper.make_node("Unsqueeze", ["time_major", "axis2"], ["seq"]),
        helper.make_node("GRU", ["seq", "gru_w", "gru_r", "gru_b", "", "state"], ["", "stateN"], hidden_size=HIDDEN, name="gru"),
        helper.make_node("Squeeze", ["stateN", "axis0"], ["last"]),
        helper.make_node("MatMul", ["last", "out_w"], ["score"], name="head"),
        helper.make_node("Sigmoid", ["score"], ["prob"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "?"]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, []),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, "batch", HIDDEN])]
    outputs = [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1]),
               helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [1, "batch", HIDDEN])]
    model = helper.make_model(helper.make_graph(nodes, "vad", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def vad_stream(path: Path, chunks: int, size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds of one audio stream cut into chunks, each with the state the previous call returned."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    t = np.arange(chunks * size) / RATE
    audio = (np.sin(2 * np.pi * 220 * t) * np.linspace(0, 1, len(t))).astype(np.float32)
    audio += np.random.default_rng(seed).normal(0, 0.05, len(t)).astype(np.float32)
    state = np.zeros((1, 1, HIDDEN), np.float32)
    xs, states = [], []
    for index in range(chunks):
        x = audio[index * size:(index + 1) * size][None]
        xs.append(x)
        states.append(state)
        state = session.run(["stateN"], {"x": x, "sr": np.array(RATE, np.int64), "state": state})[0]
    return {"x": np.stack(xs), "sr": np.full(chunks, RATE, np.int64), "state": np.stack(states)}
