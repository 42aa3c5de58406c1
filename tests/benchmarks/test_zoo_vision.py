"""Zoo vision modules without downloads: torchvision's MobileNetV2 layout, MTCNN's PNet tiling."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.zoo.mobilenet_v2 import MobileNetV2  # noqa: E402
from benchmarks.zoo.mtcnn_nets import PNet, tiled_pnet, torch_stage  # noqa: E402


def test_mobilenet_v2_has_torchvision_layout():
    state = MobileNetV2().state_dict()
    assert len(state) == 314  # entries of torchvision's mobilenet_v2 state dict
    assert sum(p.numel() for p in MobileNetV2().parameters()) == 3_504_872  # torchvision's parameter count
    assert state["features.18.0.weight"].shape == (1280, 320, 1, 1) and state["classifier.1.weight"].shape == (1000, 1280)


def test_tiled_pnet_equals_pnet_on_the_whole_level():
    torch.manual_seed(0)
    whole = torch_stage(PNet().eval())
    level = np.random.default_rng(0).normal(size=(1, 3, 300, 254)).astype(np.float32)
    tiled = tiled_pnet(lambda feed: whole(feed["x"]), tile=64)(level)
    for got, want in zip(tiled, whole(level)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)
