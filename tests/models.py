"""Tiny seeded models for tests: build them in a test, never download."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv-BN-ReLU ×2 with a residual add, global pool, linear head: 1x8x8 → 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(image)))
        x = torch.relu(self.bn2(self.conv2(x)) + x)
        return self.head(x.mean(dim=(2, 3)))


class TinyMLP(nn.Module):
    """Two Linear layers over a feature vector [batch, 16] → [batch, 4]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(features)))


def seeded(module_class: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    module = module_class().eval()
    with torch.no_grad():  # non-trivial BN statistics so folding is exercised
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    return module


def tiny_cnn():
    """Factory for `tests/models.py:tiny_cnn`."""
    return seeded(TinyCNN), (torch.randn(1, 1, 8, 8),)


def tiny_mlp():
    return seeded(TinyMLP), (torch.randn(1, 16),)


def broken_factory():
    raise RuntimeError("weights file is gone")


def exiting_factory():
    import sys

    sys.exit(0)


class OutlierMLP(nn.Module):
    """features [batch,16] → 4, with one hidden channel ~1000x larger than the others.

    fc1's row 0 is scaled up and fc2's column 0 scaled down by the same factor, so the float
    function is an ordinary MLP, but the activation between them has an outlier channel: per-tensor
    int8 quantization of fc2's input rounds the other 31 channels to a few levels and breaks it.
    """

    SCALE = 1000.0

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 4)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.fc1(features))
        return self.fc3(torch.relu(self.fc2(hidden)))


def outlier_mlp():
    """Factory for `tests/models.py:outlier_mlp`: plain static int8 misses cosine ≥ 0.99; fc2 in float fixes it."""
    torch.manual_seed(0)
    module = OutlierMLP().eval()
    with torch.no_grad():
        module.fc1.weight[0] *= OutlierMLP.SCALE
        module.fc1.bias[0] = abs(module.fc1.bias[0]) * OutlierMLP.SCALE
        module.fc2.weight[:, 0] /= OutlierMLP.SCALE
    return module, (torch.randn(1, 16),)


class TokenMLP(nn.Module):
    """A transformer-style feed-forward block over tokens [batch, 8, 64] → [batch, 8, 64]: MatMul, GELU, LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(64, 128)
        self.down = nn.Linear(128, 64)
        self.norm = nn.LayerNorm(64)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(tokens + self.down(nn.functional.gelu(self.up(tokens))))


def token_mlp():
    """Factory for `tests/models.py:token_mlp` (3-D input, so Linear exports as MatMul + Add)."""
    torch.manual_seed(0)
    return TokenMLP().eval(), (torch.randn(1, 8, 64),)


class EncoderBlock(nn.Module):
    """A residual feed-forward block: tokens + down(gelu(up(tokens)))."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(32, 64)
        self.down = nn.Linear(64, 32)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.down(nn.functional.gelu(self.up(tokens)))


class TinyEncoder(nn.Module):
    """Two EncoderBlocks in a ModuleList over tokens [batch, 8, 32] → [batch, 8, 32].

    The `layers` ModuleList is the block structure weight-only GPTQ/AWQ (Intel Neural Compressor) walk.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderBlock() for _ in range(2))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tokens = layer(tokens)
        return tokens


def tiny_encoder():
    """Factory for `tests/models.py:tiny_encoder`."""
    torch.manual_seed(0)
    return TinyEncoder().eval(), (torch.randn(2, 8, 32),)


class SmallConvNet(nn.Module):
    """Stem, a depthwise-separable residual block and a linear head: [batch,1,16,16] → 4 classes (for pruning)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.pointwise = nn.Conv2d(32, 32, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.expand = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.head = nn.Linear(64, 4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        x = torch.relu(self.bn2(self.pointwise(torch.relu(self.bn1(self.depthwise(x))))) + x)
        return self.head(torch.relu(self.expand(x)).mean(dim=(2, 3)))


def small_convnet():
    """Factory for `tests/models.py:small_convnet`."""
    return seeded(SmallConvNet), (torch.randn(1, 1, 16, 16),)


class TinyBert(nn.Module):
    """A 2-layer Hugging Face BERT (hidden 32, 4 heads, MLP 64): input_ids [batch, 8] → mean-pooled [batch, 32]."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=16, attn_implementation="eager")
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids).last_hidden_state.mean(dim=1)


def tiny_bert():
    """Factory for `tests/models.py:tiny_bert`."""
    torch.manual_seed(0)
    return TinyBert().eval(), (torch.randint(0, 100, (2, 8)),)


class MaskedPool(nn.Module):
    """A Linear + LayerNorm over tokens, mean-pooled under an int64 mask cast to float (as in BERT poolers)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).float()
        hidden = self.norm(self.proj(tokens)) * weights
        return hidden.sum(dim=1) / weights.sum(dim=1)


def masked_pool():
    return seeded(MaskedPool), (torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.int64))


class PreluHead(nn.Module):
    """MTCNN's ONet pattern (PReLU after pooling and after a Linear on a permuted map) that XNNPACK's lowering rejects."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.prelu = nn.PReLU(4)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fc = nn.Linear(4 * 3 * 3, 3)
        self.prelu_fc = nn.PReLU(3)

    def forward(self, x):
        x = self.pool(self.prelu(self.conv(x))).permute(0, 3, 2, 1).contiguous()
        return self.prelu_fc(self.fc(x.view(x.shape[0], -1)))


def prelu_head():
    """Factory for `tests/models.py:prelu_head` (input [1, 3, 8, 8])."""
    return seeded(PreluHead), (torch.randn(1, 3, 8, 8),)


class FixedLength(nn.Module):
    """Reads x [batch, seq, 8] but flattens with a constant: torch.export cannot keep `seq` dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12 * 8, 3)

    def forward(self, x):
        return self.fc(x.reshape(x.shape[0], 12 * 8))


def fixed_length():
    """Factory for `tests/models.py:fixed_length` (input x [batch, seq, 8]; seq must be 12)."""
    return seeded(FixedLength), (torch.randn(1, 12, 8),)


class TokenClassifier(nn.Module):
    """tokens [batch, 4, 128] → 4 classes: a per-token MLP (MatMul-heavy, 128-wide inputs), mean over tokens, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(128, 256)
        self.down = nn.Linear(256, 128)
        self.head = nn.Linear(128, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.down(torch.relu(self.up(tokens))))
        return self.head(hidden.mean(dim=1))


def token_classifier():
    return seeded(TokenClassifier), (torch.randn(1, 4, 128),)
