"""The per-token MLP of every SSMamba block (channel mixing; the mixers do token mixing).

    MLP(x) = W_2 GELU(W_1 x)       W_1: C -> r·C, W_2: r·C -> C, as 1x1 convolutions on
                                   (batch, C, H, W), i.e. the same two-layer MLP at every token
"""

from __future__ import annotations

import torch.nn as nn


class Mlp(nn.Module):
    """Per-token MLP: 1x1 conv C -> r*C, GELU, 1x1 conv r*C -> C."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.act = nn.Conv2d(dim, hidden, 1), nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))                 # (batch, C, H, W)
