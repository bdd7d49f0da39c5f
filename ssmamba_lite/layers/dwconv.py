"""A depthwise convolution whose weight gradient on CPU comes from a numba kernel.

    out[b, c, y, x] = bias[c] + Σ_{i, j < k} w[c, i, j] · x[b, c, y + i - k//2, x + j - k//2]

PyTorch's CPU path computes the weight gradient ∂w of a 7 x 7 depthwise convolution 16-40
times slower than its forward pass (kernels/dwconv_cpu.py says why and how the kernel does
it). `DepthwiseConv2d` is an nn.Conv2d (same parameters, same state dict) that keeps PyTorch's
forward, ∂x and ∂bias and takes ∂w from `kernels.dwconv_cpu.depthwise_weight_grad` while
training on CPU; everywhere else (GPU, inference, torch.fx, torch.compile, no numba) it is
PyTorch's convolution.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


@functools.lru_cache(maxsize=1)
def weight_grad():
    """kernels.dwconv_cpu.depthwise_weight_grad, or None when numba is missing (imported on
    first use: `import ssmamba_lite` does not import numba)."""
    try:
        from ssmamba_lite.kernels.dwconv_cpu import depthwise_weight_grad
    except ImportError:
        return None
    return depthwise_weight_grad


class _DepthwiseFn(torch.autograd.Function):
    """Forward: PyTorch's convolution. Backward: PyTorch's ∂x and ∂bias, this kernel's ∂w."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0])

    @staticmethod
    @once_differentiable                 # (∂w comes from NumPy: no graph for a second derivative)
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        k, C = weight.shape[-1], weight.shape[0]
        dx = dw = dbias = None
        if ctx.needs_input_grad[0]:      # (asking aten for ∂bias too would make it compute ∂w)
            dx = torch.ops.aten.convolution_backward(
                g, x, weight, None, [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], C,
                [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            dw = weight_grad()(x, g, k)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dbias = g.sum((0, 2, 3))
        return dx, dw, dbias


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise k x k convolution, stride 1, "same" padding (an nn.Conv2d: same parameters,
    same state dict). On CPU, with float32/float64 tensors and k >= `min_kernel`, its weight
    gradient comes from the numba kernel; otherwise (and under torch.fx or torch.compile)
    everything is PyTorch's."""

    min_kernel = 5                     # 3 x 3 is fast in PyTorch already

    def __init__(self, channels: int, kernel_size: int, bias: bool = True):
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2,
                         groups=channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy) or torch.compiler.is_compiling():
            return super().forward(x)      # FX and torch.compile see a plain convolution
        fast = (x.device.type == "cpu" and self.weight.requires_grad and torch.is_grad_enabled()
                and x.dtype in (torch.float32, torch.float64) and x.dtype == self.weight.dtype
                and self.kernel_size[0] >= self.min_kernel and not torch.jit.is_scripting()
                and weight_grad() is not None)
        if not fast:
            return super().forward(x)
        return _DepthwiseFn.apply(x, self.weight, self.bias)
