"""MTCNN's ONet (facenet-pytorch 2.6.0 weights), scored by the face box the full cascade finds on astronaut.

`factory` is the edgekit source (`benchmarks/zoo/mtcnn_onet.py:factory`), at [1,3,48,48]; the task
feeds it the cascade's candidate crops one by one. Weights come from the zoo cache ($EDGEKIT_ZOO_CACHE or
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
from benchmarks.zoo.mtcnn_nets import build_zoo, load


def factory() -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    """edgekit source: the pretrained ONet and one example input [1,3,48,48]."""
    return load("onet", Path(os.environ.get("EDGEKIT_ZOO_CACHE", CACHE))), (torch.zeros(1, 3, 48, 48),)


def build(cache: Path = CACHE) -> ZooModel:
    return build_zoo("onet", cache)
