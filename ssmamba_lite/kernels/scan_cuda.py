"""mamba-ssm's compiled CUDA selective scan, called directly.

`selective_scan_cuda` is the extension mamba-ssm builds (its `fwd` and `bwd`). We import it
on its own, not through `mamba_ssm`: that package's __init__ also imports Mamba2, Mamba3 and
their optional dependencies, and one missing package there would hide a working kernel.

    fwd(u, delta, A, B, C, D, z, delta_bias, softplus) -> out, x, [out_z]
        x holds the scan's running states; the last state is x[:, :, -1, 1::2]
    bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, softplus, recompute)
        -> du, ddelta, dA, dB, dC, dD, ddelta_bias, [dz]
B and C of shape (batch, N, L) go in as (batch, 1, N, L); (D, N) and (batch, G, N, L) as they
are. The signature and the options are those of `scan.selective_scan`.
"""

from __future__ import annotations

import torch


class SelectiveScanCUDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, return_last_state):
        import selective_scan_cuda

        u, delta = u.contiguous(), delta.contiguous()
        ctx.squeeze = (B.dim() == 3, C.dim() == 3)
        B = B.unsqueeze(1) if B.dim() == 3 else B
        C = C.unsqueeze(1) if C.dim() == 3 else C
        B, C = B.contiguous(), C.contiguous()
        D = D.contiguous() if D is not None else None
        z = z.contiguous() if z is not None else None
        out, x, *rest = selective_scan_cuda.fwd(u, delta, A, B, C, D, z, delta_bias, softplus)
        ctx.softplus, ctx.has = softplus, (D is not None, z is not None, delta_bias is not None)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, x, out)
        result = rest[0] if z is not None else out
        return (result, x[:, :, -1, 1::2]) if return_last_state else result

    @staticmethod
    def backward(ctx, dout, *_):
        import selective_scan_cuda

        u, delta, A, B, C, D, z, delta_bias, x, out = ctx.saved_tensors
        du, ddelta, dA, dB, dC, dD, dbias, *rest = selective_scan_cuda.bwd(
            u, delta, A, B, C, D, z, delta_bias, dout.contiguous(), x,
            out if z is not None else None, None, ctx.softplus, False)
        dB = dB.squeeze(1) if ctx.squeeze[0] else dB
        dC = dC.squeeze(1) if ctx.squeeze[1] else dC
        has_d, has_z, has_bias = ctx.has
        return (du, ddelta, dA, dB, dC, dD if has_d else None, rest[0] if has_z else None,
                dbias if has_bias else None, None, None)


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                        delta_softplus=False, return_last_state=False):
    """mamba-ssm's kernel with selective_scan's signature (CUDA tensors)."""
    return SelectiveScanCUDA.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                   return_last_state)
