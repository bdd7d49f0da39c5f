"""The weight gradient of a large depthwise convolution on CPU: one numba kernel.

A depthwise k x k convolution (groups = C, "same" padding p = k // 2) computes, per channel c,

    out[b, c, y, x] = bias[c] + Σ_{i, j < k} w[c, i, j] · x[b, c, y + i - p, x + j - p]

(x is 0 outside the map). Its gradients, for g = ∂loss/∂out:

    ∂x     = the same depthwise convolution of g with w turned by 180 degrees   (fast in PyTorch)
    ∂bias  = Σ_{b, y, x} g[b, c, y, x]                                         (fast in PyTorch)
    ∂w[c, i, j] = Σ_{b, y, x} g[b, c, y, x] · x[b, c, y + i - p, x + j - p]    (this kernel)

Why a kernel: PyTorch's CPU path (oneDNN) computes ∂w of a 7 x 7 depthwise convolution 16-40
times slower than its forward pass (benchmarks/bench_model.py's notes; 3 x 3 is fast), and
the conv mixer's 7 x 7 filters run at the two finest stages of the network. Here every thread
takes a block of image rows of a channels-last map (batch, H, W, C), where the C channels of a
position lie side by side, so the innermost loop is a vectorised multiply-add over channels
into the thread's own (k, k, C) sums; the blocks' sums are added at the end.

`layers.dwconv.DepthwiseConv2d` (the conv mixer's filters) is an nn.Conv2d that takes this path
for its weight gradient on CPU, and PyTorch's everywhere else (also when numba is missing);
tests/test_kernels.py holds the gradients to PyTorch's.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from ssmamba_lite.kernels.scan_cpu import use_torch_threads


@njit(parallel=True, cache=True, fastmath=True)
def weight_grad_kernel(x, g, k, parts):
    """x, g: (batch, H, W, C) NumPy arrays (channels last). Returns ∂w as (k, k, C)."""
    batch, H, W, C = x.shape
    p = k // 2
    sums = np.zeros((parts, k, k, C), x.dtype)
    rows = batch * H
    for job in prange(parts):
        acc = sums[np.int64(job)]
        for r in range(np.int64(job) * rows // parts, (np.int64(job) + 1) * rows // parts):
            b, y = r // H, r % H
            for i in range(k):
                yy = y + i - p                                   # input row under tap row i
                if yy < 0 or yy >= H:
                    continue
                for j in range(k):                               # output columns whose input
                    lo, hi = max(0, p - j), min(W, W + p - j)    # column xo + j - p is inside
                    for xo in range(lo, hi):
                        xx = xo + j - p
                        for c in range(C):                       # ∂w[i, j, c] += g · x
                            acc[i, j, c] += g[b, y, xo, c] * x[b, yy, xx, c]
    return sums.sum(axis=0)


def depthwise_weight_grad(x: torch.Tensor, g: torch.Tensor, k: int) -> torch.Tensor:
    """∂w (C, 1, k, k) of a depthwise k x k convolution with padding k // 2, from its input x
    and the gradient g of its output, both (batch, C, H, W) float32/float64 CPU tensors."""
    xn = x.permute(0, 2, 3, 1).contiguous().numpy()              # (batch, H, W, C): a view when
    gn = g.permute(0, 2, 3, 1).contiguous().numpy()              # the maps are channels last
    use_torch_threads()
    parts = max(1, min(xn.shape[0] * xn.shape[1], 4 * numba.get_num_threads()))
    dw = weight_grad_kernel(xn, gn, k, parts)                    # (k, k, C)
    return torch.from_numpy(dw).permute(2, 0, 1).unsqueeze(1).contiguous()
