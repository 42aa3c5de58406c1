"""MAC and parameter counts against published figures (PyTorch's FlopCounterMode does the counting)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from edgekit.macs import count_macs, count_params


def test_mobilenet_v2_matches_its_published_macs_and_params():
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from benchmarks.zoo.mobilenet_v2 import MobileNetV2

    model = MobileNetV2().eval()  # torchvision's layout; the counts do not depend on the weights
    # Sandler et al. 2018, Table 4: MobileNetV2 (1.0, 224) 300M multiply-adds; torchvision: 3,504,872 parameters
    assert abs(count_macs(model, (torch.zeros(1, 3, 224, 224),)) - 300e6) / 300e6 < 0.01
    assert count_params(model) == 3_504_872


def test_attention_products_are_counted():
    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    q = torch.zeros(1, 2, 16, 8)  # batch 1, 2 heads, 16 tokens, 8 dims: QK^T and AV are 2 x 16 x 16 x 8 MACs each
    assert count_macs(Attention(), (q, q, q)) == 2 * (2 * 16 * 16 * 8)
