"""MediaPipe's short-range face detector (BlazeFace, 128×128, fp16 .tflite) on scikit-image photos.

The .tflite comes from the `mediapipe` wheel; the reference is LiteRT. The task decodes the best
anchor (sigmoid score, SSD box) the way MediaPipe's face_detection_short_range graph does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.zoo import CACHE, TaskScore, ZooModel, save_feeds, wheel_file

WHEEL = "mediapipe==0.10.21"
MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
SIZE = 128
EVAL = ("astronaut", "astronaut_head", "astronaut_flip_bust", "astronaut_dark", "camera", "chelsea", "coffee", "rocket")
FACES = ("astronaut", "astronaut_head", "astronaut_flip_bust", "astronaut_dark")


def photos(size: int) -> dict[str, np.ndarray]:
    """Named RGB uint8 [size, size, 3] views of scikit-image's bundled photos (centre-cropped square):
    the astronaut (a face) whole, cropped, flipped and darkened, and photos without a human face."""
    from skimage import data

    astronaut = data.astronaut()
    views = {
        "astronaut": astronaut, "astronaut_flip": astronaut[:, ::-1], "astronaut_bust": astronaut[0:320, 96:416],
        "astronaut_head": astronaut[20:276, 120:376], "astronaut_tight": astronaut[40:232, 150:342],
        "astronaut_flip_bust": astronaut[0:400, 56:456][:, ::-1], "astronaut_dark": (astronaut * 0.6).astype(np.uint8),
        "astronaut_flip_head": astronaut[20:276, 120:376][:, ::-1], "camera": data.camera(), "chelsea": data.chelsea(),
        "coffee": data.coffee(), "rocket": data.rocket(), "immunohistochemistry": data.immunohistochemistry(),
        "hubble": data.hubble_deep_field(), "coins": data.coins(), "moon": data.moon(), "colorwheel": data.colorwheel(),
        "brick": data.brick(), "gravel": data.gravel(), "retina": data.retina(), "cell": data.cell(),
        "logo": data.logo()[..., :3], "page": data.page(), "grass": data.grass(),
    }
    out = {}
    for name, image in views.items():
        image = np.ascontiguousarray(image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2))
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        square = Image.fromarray(image[top:top + side, left:left + side])
        out[name] = np.asarray(square.resize((size, size), Image.BILINEAR))
    return out


def anchors() -> np.ndarray:
    """[896, 2] anchor centres (x, y) in [0, 1] of MediaPipe's SsdAnchorsCalculator for the short-range
    model: 4 layers, strides 8, 16, 16, 16, aspect ratio 1 (+ interpolated scale), fixed size 1×1."""
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):  # consecutive layers of one stride share a grid
        cells = SIZE // stride
        y, x = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        centres.append(np.repeat(np.stack([x.ravel(), y.ravel()], 1), per_cell, axis=0))
    return np.concatenate(centres)


ANCHORS = anchors()


def best_face(regressors: np.ndarray, classificators: np.ndarray) -> tuple[float, np.ndarray]:
    """(score, box [x0, y0, x1, y1] in [0, 1]) of the highest-scoring anchor."""
    logits = np.clip(np.asarray(classificators, np.float64).reshape(-1), -100, 100)
    best = int(logits.argmax())
    raw = np.asarray(regressors, np.float64).reshape(-1, 16)[best]
    x, y = raw[0] / SIZE + ANCHORS[best, 0], raw[1] / SIZE + ANCHORS[best, 1]
    w, h = raw[2] / SIZE, raw[3] / SIZE
    return float(1 / (1 + np.exp(-logits[best]))), np.array([x - w / 2, y - h / 2, x + w / 2, y + h / 2])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


def litert_runner(path: Path):
    """A Runner on LiteRT's interpreter for a .tflite: feed by input name, outputs in the model's order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    outputs = [d["index"] for d in interpreter.get_output_details()]

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        for name, array in feed.items():
            interpreter.set_tensor(inputs[name], np.ascontiguousarray(array, np.float32))
        interpreter.invoke()
        return [interpreter.get_tensor(index).copy() for index in outputs]

    return run


def build(cache: Path = CACHE) -> ZooModel:
    model = wheel_file(WHEEL, MEMBER, cache)
    images = {name: image.astype(np.float32) / 127.5 - 1.0 for name, image in photos(SIZE).items()}
    evaluation = np.stack([images[name] for name in EVAL])
    calibration = np.stack([image for name, image in images.items() if name not in EVAL][:16])
    folder = cache / "mp_face_detection"
    calib = save_feeds(folder / "calib.npz", {"input": calibration})
    evals = save_feeds(folder / "eval.npz", {"input": evaluation})
    reference = litert_runner(model)

    def faces(run) -> list[tuple[float, np.ndarray]]:
        return [best_face(*run({"input": evaluation[EVAL.index(name)][None]})) for name in FACES]

    expected = faces(reference)

    def task(run) -> TaskScore:
        got = faces(run)
        ious = [box_iou(box, want[1]) for (_, box), want in zip(got, expected)]
        shift = max(abs(score - want[0]) for (score, _), want in zip(got, expected))
        return TaskScore("face box IoU", float(np.mean(ious)),
                         f"mean best-box IoU vs reference on {len(FACES)} astronaut views (astronaut {ious[0]:.3f}); "
                         f"astronaut score {got[0][0]:.3f} (reference {expected[0][0]:.3f}); max |Δscore| {shift:.2e}")

    return ZooModel(
        name="mp_face_detection", source=str(model), calib=calib, eval=evals, reference=reference, task=task,
        notes=f"{len(calibration)} calib / {len(evaluation)} eval skimage photos at 128², NHWC in [-1, 1]; "
              f"reference face scores {[round(score, 3) for score, _ in expected]}",
    )
