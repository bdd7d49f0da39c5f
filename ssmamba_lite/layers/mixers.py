"""Token mixers: the part of a block that lets tokens at different places exchange information.

An SSMamba block (ssmamba_lite/model.py) is [LPR -> norm -> mixer -> residual -> norm -> MLP -> residual];
only the mixer differs between stages and between the ablations. All take and return
(batch, C, H, W).

    "conv"       ConvMixer: a k x k depthwise convolution (local only, cheap at high resolution)
    "dms"        DirectionalMultiScale (ssmamba_lite/dms.py): SSMamba's selective scans along several
                 directions and scales (global, linear in the number of tokens L = H * W)
    "mamba1d"    Mamba1DMixer: one Mamba block (ssmamba_lite/mamba.py) over the row-major token sequence:
                 one direction, one scale (what DMS adds is measured against this)
    "attention"  Attention2d: multi-head self-attention, softmax(Q K^T / sqrt(d)) V, over all
                 tokens (global, quadratic in L; the ViT comparison)
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ssmamba_lite.dms import DirectionalMultiScale
from ssmamba_lite.layers.dwconv import DepthwiseConv2d
from ssmamba_lite.mamba import Mamba

MIXERS = ("conv", "dms", "mamba1d", "attention")


class ConvMixer(nn.Module):
    """Depthwise k x k convolution: each channel mixes its own k x k neighbourhood.
    (An nn.Conv2d whose weight gradient on CPU comes from a numba kernel: layers/dwconv.py.)"""

    def __init__(self, dim: int, kernel_size: int = 7):
        super().__init__()
        self.dwconv = DepthwiseConv2d(dim, kernel_size)

    def forward(self, x):
        return self.dwconv(x)                                  # (batch, C, H, W)


class Mamba1DMixer(nn.Module):
    """One Mamba block over the tokens in row-major order: a single direction, a single scale."""

    def __init__(self, dim: int, d_state: int = 16, expand: float = 1.0,
                 scan_backend: str = "auto"):
        super().__init__()
        self.mamba = Mamba(dim, d_state=d_state, expand=expand, scan_backend=scan_backend)

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.mamba(x.flatten(2).transpose(1, 2))           # (batch, L, C), L = H * W
        return y.transpose(1, 2).reshape(b, c, h, w)


class Attention2d(nn.Module):
    """Multi-head self-attention over all H * W tokens: softmax(Q K^T / sqrt(d)) V.

    Positions are not encoded here: the LPR convolution in front of each block tells tokens
    where they are (a conditional position encoding)."""

    def __init__(self, dim: int, head_dim: int = 32):
        super().__init__()
        heads = max(1, dim // head_dim)
        while dim % heads:                                     # heads must divide C
            heads -= 1
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)                       # (batch, L, C)
        q, k, v = self.qkv(t).view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)            # (batch, heads, L, C / heads)
        y = self.proj(y.transpose(1, 2).reshape(b, h * w, c))
        return y.transpose(1, 2).reshape(b, c, h, w)


def make_mixer(kind: str, dim: int, d_state: int = 16, directions=4, scales=(1, 2),
               expand: float = 1.0, split_channels: bool = True, conv_kernel: int = 7,
               head_dim: int = 32, scan_backend: str = "auto") -> nn.Module:
    """The token mixer named `kind` (one of MIXERS) for C = dim channels."""
    if kind == "conv":
        return ConvMixer(dim, conv_kernel)
    if kind == "dms":
        return DirectionalMultiScale(dim, directions, scales, d_state, expand,
                                     split_channels=split_channels,
                                     scan_backend=scan_backend)
    if kind == "mamba1d":
        return Mamba1DMixer(dim, d_state, expand, scan_backend)
    if kind == "attention":
        return Attention2d(dim, head_dim)
    raise ValueError(f"make_mixer: kind must be one of {MIXERS}, got {kind!r}")
