"""Local Perception Residual (LPR): a depthwise-convolution shortcut for fine cues.

Paper name: *Local Perception Residual* (SSMamba, Chai et al. 2026). What the abstract states:
a local perception residual that answers "insufficient fine-grained sensitivity". This
project's own design (the paper's details are not public): a k x k depthwise convolution added
to its input, in front of every block of the network (model.py), as CMT's unit below.

Why it helps on pathology images: the features that separate tissue classes are often tiny and
local (nuclear texture and size, chromatin, mitoses, the edge of a gland). A selective scan
mixes tokens along a 1D path, so two pixels that touch in the image can sit far apart in the
scan; a small convolution sees every 2D neighbour at once. LPR adds that local view as a
residual, so that it never blocks the path of the signal.

Related designs: CMT's *local perception unit* (LPU(x) = DWConv(x) + x, Guo et al. 2022) and
the convolution branch beside the SSM branch of MedMamba (Yue & Li 2024). Once its filters are
non-zero, its zero-padded convolution also tells the token mixers that follow where each token
sits, like a conditional position encoding (CPVT, Chu et al. 2023); the model has no learned
position table and takes any image size.

Glossary (code name -> math; shapes in brackets)
    x            the feature map                                    (batch, C, H, W)
    dwconv       DWConv_k: one k x k filter per channel (groups=C)   C * (k*k + 1) weights
    norm         optional normalisation of the branch (BatchNorm)
    act          optional activation of the branch (GELU)

    LPR(x) = x + act(norm(DWConv_k(x)))                               (batch, C, H, W)

Start: the depthwise filters and biases start at zero (`zero_init`, the default), so at
initialisation LPR(x) = x exactly: the block starts as the identity and training grows the
local branch (the gradient of the loss with respect to a filter tap is the correlation of the
input with the incoming gradient, which is not zero). PyTorch's default initialisation
(`zero_init=False`) instead gives |DWConv(x)| of the order of |x| from the first step
(notebook 03 measures it per block of a model on real tiles).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ssmamba_lite.tracing import tracing


class LocalPerceptionResidual(nn.Module):
    """x + DWConv(x) on a (batch, C, H, W) map; output has the input's shape.

    dim: channels C. kernel_size: k (odd, so that "same" padding keeps H and W).
    norm: add a BatchNorm2d on the branch. act: add a GELU on the branch.
    Defaults (plain DWConv, no norm, no activation) are CMT's local perception unit.
    zero_init: filters and bias start at 0, so LPR starts as the identity (see the docstring
    of the module); False keeps PyTorch's default initialisation.
    """

    def __init__(self, dim: int, kernel_size: int = 3, norm: bool = False, act: bool = False,
                 zero_init: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"LocalPerceptionResidual: kernel_size must be odd, got {kernel_size}")
        self.dim, self.kernel_size = dim, kernel_size
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        if zero_init:                                       # LPR(x) = x + 0 at the start
            nn.init.zeros_(self.dwconv.weight)
            nn.init.zeros_(self.dwconv.bias)
        self.norm = nn.BatchNorm2d(dim) if norm else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not tracing() and (x.dim() != 4 or x.shape[1] != self.dim):
            raise ValueError(f"LocalPerceptionResidual: input must have shape "
                             f"(batch, {self.dim}, H, W), got {tuple(x.shape)}")
        return x + self.act(self.norm(self.dwconv(x)))      # x + DWConv_k(x)  (batch, C, H, W)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_size={self.kernel_size}"
