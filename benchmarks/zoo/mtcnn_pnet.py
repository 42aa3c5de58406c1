"""MTCNN's PNet (facenet-pytorch 2.6.0 weights), scored by the face box the full cascade finds on astronaut.

`factory` is the edgekit source (`benchmarks/zoo/mtcnn_pnet.py:factory`): PNet is fully
convolutional, but the package is compiled at one size, [1,3,218,218]; the task runs every
pyramid level through tiles of that size. Weights come from the zoo cache ($EDGEKIT_ZOO_CACHE or
benchmarks/.cache/zoo).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # imported by path, as edgekit imports `file.py:factory`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.zoo import CACHE, ZooModel
from benchmarks.zoo.mtcnn_nets import TILE, build_zoo, load


def factory() -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    """edgekit source: the pretrained PNet and one example input [1,3,218,218]."""
    return load("pnet", Path(os.environ.get("EDGEKIT_ZOO_CACHE", CACHE))), (torch.zeros(1, 3, TILE, TILE),)


def build(cache: Path = CACHE) -> ZooModel:
    return build_zoo("pnet", cache)
