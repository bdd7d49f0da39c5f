"""The per-token MLP of every SSMamba block (channel mixing; the mixers do token mixing).

    MLP(x) = W_2 GELU(W_1 x)       W_1: C -> r·C, W_2: r·C -> C, as 1x1 convolutions on
                                   (batch, C, H, W), i.e. the same two-layer MLP at every token

A block (model.py) computes MLP(Norm(x)). Training with the plain modules keeps, for the
backward pass, per position: the norm's input x and output n (C numbers each), the hidden
pre-activation h = W_1 n + b_1 and a = GELU(h) (r·C each): (2 + 2r)·C numbers, 10·C at r = 4,
the largest share of a step's memory on the fine, high-resolution stages (at 512 px, 24 MiB
for each of h and a in each block at 1/4 resolution). On maps of at least
`RECOMPUTE_POSITIONS` positions `norm_mlp` computes the same function as one autograd step that
keeps only x (and the norm's mean and 1/std per position) and computes the rest again:

    forward    n = Norm(x),  h = W_1 n + b_1,  a = GELU(h),  y = W_2 a + b_2
    keeps      x: C numbers per position instead of 10·C
    backward   n = Norm(x), h = W_1 n + b_1, a = GELU(h) again;
               ∂a, ∂W_2 = W_2^T ∂y, ∂y a^T      ∂h = ∂a · GELU'(h)
               ∂n, ∂W_1 = W_1^T ∂h, ∂h n^T      ∂x = Norm's backward of ∂n

Computing them again costs a third of the MLP's forward work in backward (the W_1 product
and two element-wise passes), so it is done only on large maps, where memory is the limit; on
smaller ones (every stage at 128 px) the modules run one by one and nothing is recomputed
(benchmarks/bench_model.py measures both). Elsewhere (GPU, inference, torch.fx,
torch.compile, autocast) the modules always run one by one. tests/test_model.py holds the
step to the modules' forward and gradients.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmamba_lite.tracing import tracing

RECOMPUTE_POSITIONS = 64 * 64   # maps with at least this many positions (H * W) use norm_mlp


class Mlp(nn.Module):
    """Per-token MLP: 1x1 conv C -> r*C, GELU, 1x1 conv r*C -> C."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.act = nn.Conv2d(dim, hidden, 1), nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))                 # (batch, C, H, W)


def fused_applies(x: torch.Tensor, norm: nn.Module, mlp: Mlp) -> bool:
    """Whether `norm_mlp` replaces mlp(norm(x)): a map of at least RECOMPUTE_POSITIONS
    positions, training on a CPU in float32/64, eager."""
    if tracing() or torch.compiler.is_compiling():
        return False
    return (x.device.type == "cpu" and torch.is_grad_enabled() and x.dim() == 4
            and x.shape[2] * x.shape[3] >= RECOMPUTE_POSITIONS
            and x.dtype in (torch.float32, torch.float64) and x.dtype == mlp.fc1.weight.dtype
            and not torch.is_autocast_enabled("cpu") and type(mlp.act) is nn.GELU
            and mlp.fc1.bias is not None and mlp.fc2.bias is not None
            and norm.weight is not None and norm.bias is not None)


def norm_mlp(x: torch.Tensor, norm: nn.Module, mlp: Mlp) -> torch.Tensor:
    """mlp(norm(x)) for a channel LayerNorm `norm` (LayerNorm2d), keeping only x for backward
    (see the module docstring). x: (batch, C, H, W); returns (batch, C, H, W)."""
    return _NormMlpFn.apply(x, norm.weight, norm.bias, norm.eps, mlp.fc1.weight, mlp.fc1.bias,
                            mlp.fc2.weight, mlp.fc2.bias, mlp.act.approximate)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(batch, C, H, W) -> the (batch * H * W, C) matrix of its positions (a view when the
    map is channels last)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _layer_norm(x, weight, bias, eps):
    """Norm(x) over the channels of each position, and its mean and 1/std: (M, 1) each."""
    b, c, height, width = x.shape
    n, mean, rstd = torch.native_layer_norm(_rows(x), (c,), weight, bias, eps)
    return n.view(b, height, width, c).permute(0, 3, 1, 2), mean, rstd   # channels last


def _conv1x1_backward(dy, x, w, need_w: bool, need_b: bool):
    """(∂x, ∂W, ∂b) of y = conv1x1(x, W) + b (∂W, ∂b None where not needed; ∂b summed here:
    asking aten for it is slower)."""
    dx, dw, _ = torch.ops.aten.convolution_backward(dy, x, w, None, [1, 1], [0, 0], [1, 1],
                                                    False, [0, 0], 1, [True, need_w, False])
    return dx, dw, dy.sum((0, 2, 3)) if need_b else None


class _NormMlpFn(torch.autograd.Function):
    """y = W_2 GELU(W_1 Norm(x) + b_1) + b_2 per position; keeps only x for backward."""

    @staticmethod
    def forward(ctx, x, norm_w, norm_b, eps, w1, b1, w2, b2, approximate):
        n, mean, rstd = _layer_norm(x, norm_w, norm_b, eps)        # n = Norm(x)
        h = F.conv2d(n, w1, b1)                                     # h = W_1 n + b_1
        a = F.gelu(h, approximate=approximate)                      # a = GELU(h)
        y = F.conv2d(a, w2, b2)                                     # y = W_2 a + b_2
        ctx.save_for_backward(x, mean, rstd, norm_w, norm_b, w1, b1, w2)
        ctx.eps, ctx.approximate = eps, approximate
        return y

    @staticmethod
    def backward(ctx, dy):
        x, mean, rstd, norm_w, norm_b, w1, b1, w2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        n = _layer_norm(x, norm_w, norm_b, ctx.eps)[0]              # n again
        h = F.conv2d(n, w1, b1)                                     # h again
        a = F.gelu(h, approximate=ctx.approximate)                  # a again
        dy = dy.contiguous(memory_format=torch.channels_last)
        da, dw2, db2 = _conv1x1_backward(dy, a, w2, need[6], need[7])  # ∂a = W_2^T ∂y
        del a
        dh = torch.ops.aten.gelu_backward(da, h, approximate=ctx.approximate)  # ∂a·GELU'(h)
        del da, h
        dn, dw1, db1 = _conv1x1_backward(dh, n, w1, need[4], need[5])  # ∂n = W_1^T ∂h
        del dh, n
        c = x.shape[1]
        dx, dnorm_w, dnorm_b = torch.ops.aten.native_layer_norm_backward(
            _rows(dn), _rows(x), (c,), mean, rstd, norm_w, norm_b, list(need[:3]))
        if dx is not None:
            dx = dx.view(x.shape[0], x.shape[2], x.shape[3], c).permute(0, 3, 1, 2)
        return dx, dnorm_w, dnorm_b, None, dw1, db1, dw2, db2, None
