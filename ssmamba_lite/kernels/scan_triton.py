"""The selective scan in Triton: a GPU fast path that any stock CUDA PyTorch can run (Triton
compiles it on first use; nothing to build).

Same math as `ssmamba_lite.scan.selective_scan_reference` and as the numba kernel
(scan_cpu.py, whose docstring derives the backward):
    Ā_t = exp(Δ_t A),   h_t = Ā_t ⊙ h_{t-1} + Δ_t B_t u_t,   y_t = <C_t, h_t>

Work split: one program per (batch item, block of BLOCK_D channels of one B/C group). It walks
t = 0 .. L-1 holding its (BLOCK_D, N) states in registers, so (batch, D, L, N) is never
written; it stores h at the start of every chunk of CHUNK steps.
Backward: the same programs walk the chunks from the last; each recomputes its chunk's states
from the checkpoint into a small scratch buffer, then walks it backwards carrying g_t.
Gradients of B and C, which the block's channels share, are summed over those channels in
registers and written per (batch item, block); torch adds the blocks up afterwards, so the
result does not depend on scheduling (no atomics). Loads accept float32 or bfloat16; all
arithmetic and the state are float32.

Under TRITON_INTERPRET=1 the same kernels run on CPU tensors: that is how the tests hold them
to the reference without a GPU.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ssmamba_lite.kernels.bc_order import to_kernel_order

CHUNK = 64  # checkpoint interval of the backward pass


@triton.jit
def _forward(u, delta, A, B, C, y, last, ckpt, D, L, N, GB, LbB, BbB, perB, GC, LbC, BbC, perC,
             nchunks, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)          # this block's channels
    n = tl.arange(0, BLOCK_N)
    dm, nm = d < D, n < N
    m2 = dm[:, None] & nm[None, :]
    row = (b * D + d) * L                                           # start of (b, d) in u, Δ, y
    a = tl.load(A + d[:, None] * N + n[None, :], mask=m2, other=0.0)
    Bp = B + ((tl.minimum(b, BbB - 1) * GB + d // perB) * LbB)[:, None] * N + n[None, :]
    Cp = C + ((tl.minimum(b, BbC - 1) * GC + d // perC) * LbC)[:, None] * N + n[None, :]
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for c in range(0, nchunks):
        tl.store(ckpt + ((b * D + d[:, None]) * nchunks + c) * N + n[None, :], h, mask=m2)
        for t in range(c * CHUNK, tl.minimum(L, c * CHUNK + CHUNK)):
            dt = tl.load(delta + row + t, mask=dm, other=0.0).to(tl.float32)
            x = dt * tl.load(u + row + t, mask=dm, other=0.0).to(tl.float32)
            bt = tl.load(Bp + tl.minimum(t, LbB - 1) * N, mask=m2, other=0.0).to(tl.float32)
            ct = tl.load(Cp + tl.minimum(t, LbC - 1) * N, mask=m2, other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * a) * h + x[:, None] * bt     # h_t = Ā_t h_{t-1} + Δ_t B_t u_t
            tl.store(y + row + t, tl.sum(h * ct, axis=1), mask=dm)  # y_t = <C_t, h_t>
    tl.store(last + (b * D + d[:, None]) * N + n[None, :], h, mask=m2)


@triton.jit
def _backward(u, delta, A, B, C, ckpt, dy, dlast, du, ddelta, dA, dB, dC, scratch,
              D, L, N, GB, LbB, BbB, perB, GC, LbC, BbC, perC, nchunks, nblocks,
              CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    b, blk = tl.program_id(0), tl.program_id(1)
    d = blk * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    dm, nm = d < D, n < N
    m2 = dm[:, None] & nm[None, :]
    row = (b * D + d) * L
    a = tl.load(A + d[:, None] * N + n[None, :], mask=m2, other=0.0)
    Bp = B + ((tl.minimum(b, BbB - 1) * GB + d // perB) * LbB)[:, None] * N + n[None, :]
    Cp = C + ((tl.minimum(b, BbC - 1) * GC + d // perC) * LbC)[:, None] * N + n[None, :]
    # this program's slice of the partial dB, dC (batch, nblocks, Lb, N) and of the scratch
    dBp = dB + ((b * nblocks + blk) * LbB) * N + n
    dCp = dC + ((b * nblocks + blk) * LbC) * N + n
    sp = scratch + ((b * nblocks + blk) * (CHUNK + 1) * BLOCK_D + tl.arange(0, BLOCK_D)[:, None]) \
        * BLOCK_N + n[None, :]
    g = tl.load(dlast + (b * D + d[:, None]) * N + n[None, :], mask=m2, other=0.0)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dB_fixed = tl.zeros([BLOCK_N], dtype=tl.float32)                # used when Lb == 1
    dC_fixed = tl.zeros([BLOCK_N], dtype=tl.float32)
    for ci in range(0, nchunks):
        c = nchunks - 1 - ci
        t0 = c * CHUNK
        t1 = tl.minimum(L, t0 + CHUNK)
        tl.debug_barrier()                                          # the last chunk's reads done
        h = tl.load(ckpt + ((b * D + d[:, None]) * nchunks + c) * N + n[None, :], mask=m2,
                    other=0.0)
        tl.store(sp, h)                                             # h_{t0-1}
        for t in range(t0, t1):                                     # recompute h_t0 .. h_t1-1
            dt = tl.load(delta + row + t, mask=dm, other=0.0).to(tl.float32)
            x = dt * tl.load(u + row + t, mask=dm, other=0.0).to(tl.float32)
            bt = tl.load(Bp + tl.minimum(t, LbB - 1) * N, mask=m2, other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * a) * h + x[:, None] * bt
            tl.store(sp + (t - t0 + 1) * BLOCK_D * BLOCK_N, h)
        tl.debug_barrier()                                          # the scratch is written
        for tt in range(0, t1 - t0):                                # t = t1-1 .. t0
            t = t1 - 1 - tt
            i = t - t0
            h_prev = tl.load(sp + i * BLOCK_D * BLOCK_N)
            h_t = tl.load(sp + (i + 1) * BLOCK_D * BLOCK_N)
            dt = tl.load(delta + row + t, mask=dm, other=0.0).to(tl.float32)
            ut = tl.load(u + row + t, mask=dm, other=0.0).to(tl.float32)
            dyt = tl.load(dy + row + t, mask=dm, other=0.0).to(tl.float32)
            bt = tl.load(Bp + tl.minimum(t, LbB - 1) * N, mask=m2, other=0.0).to(tl.float32)
            ct = tl.load(Cp + tl.minimum(t, LbC - 1) * N, mask=m2, other=0.0).to(tl.float32)
            abar = tl.exp(dt[:, None] * a)
            gn = tl.where(m2, g + ct * dyt[:, None], 0.0)           # g_t
            da = gn * h_prev * abar                                 # ∂Ā_t · Ā_t
            tl.store(du + row + t, tl.sum(gn * bt, axis=1) * dt, mask=dm)       # ∂u_t
            tl.store(ddelta + row + t, tl.sum(gn * bt * ut[:, None] + da * a, axis=1),
                     mask=dm)                                                   # ∂Δ_t
            dA_acc += da * dt[:, None]                                          # ∂A
            db = tl.sum(gn * (dt * ut)[:, None], axis=0)                        # ∂B_t
            dc = tl.sum(tl.where(m2, h_t * dyt[:, None], 0.0), axis=0)          # ∂C_t
            if LbB == 1:
                dB_fixed += db
            else:
                tl.store(dBp + t * N, db, mask=nm)
            if LbC == 1:
                dC_fixed += dc
            else:
                tl.store(dCp + t * N, dc, mask=nm)
            g = gn * abar                                           # Ā_t g_t -> step t-1
    tl.store(dA + (b * D + d[:, None]) * N + n[None, :], dA_acc, mask=m2)
    if LbB == 1:
        tl.store(dBp, dB_fixed, mask=nm)
    if LbC == 1:
        tl.store(dCp, dC_fixed, mask=nm)


def block_d(D: int, per_group: int) -> int:
    """Channels per program: a power of two (at most 32) that divides the channels of a group,
    so that one program's channels share their B and C."""
    return min(32, per_group & -per_group)


def _sizes(u, A, Bk, Ck):
    batch, D, L = u.shape
    N = A.shape[1]
    perB, perC = D // Bk.shape[1], D // Ck.shape[1]
    bd = block_d(D, math.gcd(perB, perC))
    return batch, D, L, N, perB, perC, bd, triton.next_power_of_2(N), (L + CHUNK - 1) // CHUNK


@torch.library.custom_op("ssmamba_lite::scan_triton_forward", mutates_args=())
def scan_triton_forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                        C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y (batch, D, L), last state (batch, D, N), chunk checkpoints (batch, D, L/CHUNK, N),
    all float32; B and C in kernel order."""
    batch, D, L, N, perB, perC, bd, bn, nchunks = _sizes(u, A, B, C)
    y = u.new_empty(batch, D, L, dtype=torch.float32)
    last = u.new_empty(batch, D, N, dtype=torch.float32)
    ckpt = u.new_empty(batch, D, nchunks, N, dtype=torch.float32)
    _forward[(batch, D // bd)](u, delta, A, B, C, y, last, ckpt, D, L, N,
                               B.shape[1], B.shape[2], B.shape[0], perB,
                               C.shape[1], C.shape[2], C.shape[0], perC, nchunks,
                               CHUNK=CHUNK, BLOCK_D=bd, BLOCK_N=bn)
    return y, last, ckpt


@scan_triton_forward.register_fake
def _(u, delta, A, B, C):
    batch, D, L = u.shape
    N = A.shape[1]
    f32 = dict(dtype=torch.float32)
    return (u.new_empty(batch, D, L, **f32), u.new_empty(batch, D, N, **f32),
            u.new_empty(batch, D, (L + CHUNK - 1) // CHUNK, N, **f32))


@torch.library.custom_op("ssmamba_lite::scan_triton_backward", mutates_args=())
def scan_triton_backward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                         B: torch.Tensor, C: torch.Tensor, ckpt: torch.Tensor, dy: torch.Tensor,
                         dlast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                       torch.Tensor, torch.Tensor]:
    """Gradients (float32) of u, delta, A (per item), B and C (per item and block of
    channels, kernel order)."""
    batch, D, L, N, perB, perC, bd, bn, nchunks = _sizes(u, A, B, C)
    nblocks = D // bd
    f32 = dict(dtype=torch.float32)
    du, ddelta = u.new_empty(batch, D, L, **f32), u.new_empty(batch, D, L, **f32)
    dA = u.new_empty(batch, D, N, **f32)
    dB = u.new_zeros(batch, nblocks, B.shape[2], N, **f32)
    dC = u.new_zeros(batch, nblocks, C.shape[2], N, **f32)
    scratch = u.new_empty(batch, nblocks, CHUNK + 1, bd, bn, **f32)
    _backward[(batch, nblocks)](u, delta, A, B, C, ckpt, dy, dlast, du, ddelta, dA, dB, dC,
                                scratch, D, L, N, B.shape[1], B.shape[2], B.shape[0], perB,
                                C.shape[1], C.shape[2], C.shape[0], perC, nchunks, nblocks,
                                CHUNK=CHUNK, BLOCK_D=bd, BLOCK_N=bn)
    return du, ddelta, dA, dB, dC


@scan_triton_backward.register_fake
def _(u, delta, A, B, C, ckpt, dy, dlast):
    batch, D, L = u.shape
    N = A.shape[1]
    nblocks = D // block_d(D, math.gcd(D // B.shape[1], D // C.shape[1]))
    f32 = dict(dtype=torch.float32)
    return (u.new_empty(batch, D, L, **f32), u.new_empty(batch, D, L, **f32),
            u.new_empty(batch, D, N, **f32), u.new_empty(batch, nblocks, B.shape[2], N, **f32),
            u.new_empty(batch, nblocks, C.shape[2], N, **f32))


def _group_sum(dM: torch.Tensor, M: torch.Tensor, D: int) -> torch.Tensor:
    """Partial gradients (batch, blocks, Lb, N) -> M's kernel order (Bb, G, Lb, N): the blocks
    of one group added up, then the batch items when M is shared by them."""
    batch, nblocks = dM.shape[:2]
    G = M.shape[1]
    g = dM.view(batch, G, nblocks // G, *dM.shape[2:]).sum(2)
    return g.sum(0, keepdim=True) if M.shape[0] == 1 else g


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, output[2])


def _backward_fn(ctx, dy, dlast, _dckpt):
    u, delta, A, B, C, ckpt = ctx.saved_tensors
    dy = torch.zeros_like(delta, dtype=torch.float32) if dy is None else dy
    dlast = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32) \
        if dlast is None else dlast
    du, ddelta, dA, dB, dC = scan_triton_backward(u, delta, A, B, C, ckpt,
                                                  dy.float().contiguous(),
                                                  dlast.float().contiguous())
    return (du.to(u.dtype), ddelta.to(delta.dtype), dA.sum(0).to(A.dtype),
            _group_sum(dB, B, u.shape[1]).to(B.dtype), _group_sum(dC, C, u.shape[1]).to(C.dtype))


scan_triton_forward.register_autograd(_backward_fn, setup_context=_setup)


def selective_scan_triton(u, delta, A, B, C):
    """Core scan y_t = <C_t, h_t> and the last state (float32), for CUDA tensors (or CPU
    tensors under TRITON_INTERPRET=1). delta holds the final step sizes (bias and softplus
    applied); u, delta, B, C may be float32 or bfloat16. The skip term D and the gate z are
    applied by `scan.selective_scan`. Returns (y (batch, D, L), last state (batch, D, N))."""
    y, last, _ = scan_triton_forward(u.contiguous(), delta.contiguous(),
                                     A.float().contiguous(),
                                     to_kernel_order(B, B.dtype), to_kernel_order(C, C.dtype))
    return y, last
