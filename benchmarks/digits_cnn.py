"""The demo model: a small residual CNN trained on scikit-learn's bundled handwritten digits.

Real images and labels (1,797 8x8 digits, upscaled to 32x32), a fixed held-out split.
`build()` is the edgekit factory (`benchmarks/digits_cnn.py:build`); it trains once (about a
minute on 2 cores) and keeps the weights in benchmarks/.cache/. `write_data(folder)` writes
calibration and evaluation .npz files with the input name `image` and real `labels`.

    python benchmarks/digits_cnn.py --data out/data    # train if needed, write data, print accuracy
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

CACHE = Path(__file__).resolve().parent / ".cache"
WEIGHTS = CACHE / "digits_cnn.pt"
SEED = 0
SIZE = 32


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels); images float32 [N,1,32,32] in [0,1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = nn.functional.interpolate(images, size=(SIZE, SIZE), mode="bilinear", align_corners=False).numpy()
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.2, random_state=SEED, stratify=labels)
    return x_train, y_train, x_test, y_test


class Block(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.skip = (nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out))
                     if stride != 1 or channels_in != channels_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class DigitsNet(nn.Module):
    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.stage1 = Block(widths[0], widths[0], 1)
        self.stage2 = Block(widths[0], widths[1], 2)
        self.stage3 = Block(widths[1], widths[2], 2)
        self.head = nn.Linear(widths[2], 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(image))))
        return self.head(x.mean(dim=(2, 3)))


def train(epochs: int = 8) -> DigitsNet:
    torch.manual_seed(SEED)
    x_train, y_train, _, _ = digits_split()
    model = DigitsNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * ((len(x_train) + 63) // 64))
    images, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), 64):
            batch = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def build() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """edgekit factory: the trained DigitsNet and one example input [1,1,32,32]."""
    if WEIGHTS.is_file():
        model = DigitsNet()
        model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
        model.eval()
    else:
        model = train()
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = WEIGHTS.with_suffix(".partial")
        torch.save(model.state_dict(), partial)
        partial.replace(WEIGHTS)
    return model, (torch.zeros(1, 1, SIZE, SIZE),)


def write_data(folder: Path, calibration_samples: int = 256) -> tuple[Path, Path]:
    """calib.npz (training images) and eval.npz (the held-out split), each with `image` and `labels`."""
    x_train, y_train, x_test, y_test = digits_split()
    folder.mkdir(parents=True, exist_ok=True)
    calib, evaluation = folder / "digits_calib.npz", folder / "digits_eval.npz"
    np.savez(calib, image=x_train[:calibration_samples], labels=y_train[:calibration_samples])
    np.savez(evaluation, image=x_test, labels=y_test)
    return calib, evaluation


def accuracy(model: nn.Module) -> float:
    _, _, x_test, y_test = digits_split()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test)).argmax(dim=1).numpy()
    return float((predicted == y_test).mean())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("out/data"))
    args = parser.parse_args()
    trained, _ = build()
    print(f"held-out top-1: {accuracy(trained):.4f}; data: {', '.join(map(str, write_data(args.data)))}")
