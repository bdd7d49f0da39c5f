"""A chunked selective scan in plain PyTorch: the fallback when no kernel can run.

The L-step loop of scan.py issues L small operations one after another; on a GPU each waits for
the last, so it is hundreds of times slower than a kernel. Here time is cut into chunks of T
steps, and everything inside a chunk is computed at once, because the recurrence unrolls
(Ā_t = exp(Δ_t A), so products of Ā are exponentials of sums):

    a_t  = Δ_t A                     (log Ā_t <= 0)        cs_t = Σ_{r<=t} a_r (within the chunk)
    h_t  = exp(cs_t) ⊙ h_0  +  Σ_{s<=t} exp(cs_t - cs_s) ⊙ Δ_s B_s u_s     (h_0: state before)
    y_t  = <C_t, h_t>

exp(cs_t - cs_s) <= 1 for s <= t, so nothing overflows however large Δ is. A chunk costs a
(T x T) decay matrix per channel and state; the chunks run one after another, carrying h.
Differentiable by autograd; memory grows with T (default 16).
"""

from __future__ import annotations

import torch

from ssmamba_lite.kernels.bc_order import to_kernel_order


def _expanded(M: torch.Tensor, batch: int, D: int, L: int, dtype) -> torch.Tensor:
    """B or C as (batch or 1, D, L or 1, N): the kernel order with its groups repeated."""
    M = to_kernel_order(M, dtype)                                   # (Bb, G, Lb, N)
    return M.repeat_interleave(D // M.shape[1], dim=1)


def selective_scan_chunked(u, delta, A, B, C, chunk: int = 16):
    """Core scan y_t = <C_t, h_t> and the last state. delta holds the final step sizes (bias
    and softplus applied) in the compute dtype. Returns (y (batch, D, L), last (batch, D, N))."""
    dtype = delta.dtype
    batch, D, L = u.shape
    N = A.shape[1]
    u, A = u.to(dtype), A.to(dtype)
    Bx, Cx = _expanded(B, batch, D, L, dtype), _expanded(C, batch, D, L, dtype)
    h = u.new_zeros(batch, D, N)
    ys = []
    for t0 in range(0, L, chunk):
        t1 = min(L, t0 + chunk)
        dt = delta[:, :, t0:t1, None]                            # (batch, D, T, 1)
        Bt = Bx[:, :, t0:t1] if Bx.shape[2] > 1 else Bx         # (., D, T or 1, N)
        Ct = Cx[:, :, t0:t1] if Cx.shape[2] > 1 else Cx
        cs = torch.cumsum(dt * A[None, :, None, :], dim=2)       # (batch, D, T, N)
        x = dt * Bt * u[:, :, t0:t1, None]                       # Δ_s B_s u_s
        diff = cs[:, :, :, None, :] - cs[:, :, None, :, :]       # cs_t - cs_s  (b, D, T, T, N)
        causal = torch.ones(t1 - t0, t1 - t0, dtype=torch.bool, device=u.device).tril()
        decay = torch.where(causal[None, None, :, :, None], diff,
                            torch.full_like(diff, float("-inf"))).exp()
        hs = torch.einsum("bdtsn,bdsn->bdtn", decay, x) + cs.exp() * h[:, :, None, :]
        ys.append((hs * Ct).sum(-1))                             # y_t = <C_t, h_t>
        h = hs[:, :, -1]
    return torch.cat(ys, dim=2), h
