"""The fast CPU selective scan: one fused numba kernel per direction of time.

Same math as `ssmamba_lite.scan.selective_scan_reference` (read that first; symbols as in its glossary):
    Ā_t = exp(Δ_t A),   h_t = Ā_t ⊙ h_{t-1} + Δ_t B_t u_t,   y_t = <C_t, h_t> + D u_t
(the skip D u_t is added in the kernel, where u_t is already at hand: no PyTorch pass over
(batch, D, L) for it, forwards or backwards).

Why a kernel? Every pure-PyTorch formulation materialises (batch, D, L, N) tensors and is bound
by memory traffic. Here each job walks L once and keeps only its states h in a small local
array: memory traffic is just the inputs and outputs.

Channels in the vector lanes. A job is one batch item and a block of up to WIDTH channels
that share B and C (one group). Its state is h (N, W): row n holds state n of every channel of
the block. Each step reads B_t and C_t once for the block (N numbers each, broadcast over the
channels) and every loop runs over the W channels, contiguous in memory, so the compiler turns
it into a long vector loop:
    for n:  h[n, :] = exp(Δ_t[:] A[n, :]) ⊙ h[n, :] + Δ_t[:] u_t[:] B_t[n]
            y_t[:] += C_t[n] h[n, :]
No horizontal sum (y_t of each channel is one lane), and the N·W multiply-adds of a step are
independent, so the step-to-step dependency of h never stalls the loop. The kernels therefore
read and write sequences as (batch, L, D), channels last; `selective_scan_cpu` transposes u, δ
(and dy) once per call. A batch of one still fills every thread: its channels are split into
as many blocks as there are threads (`channels_per_job`).

Backward (reverse-mode; g_t = ∂loss/∂h_t, carried backwards in time):
    g_t      = C_t dy_t + Ā_{t+1} ⊙ g_{t+1}           (g_L starts from the last state's gradient)
    ∂C_t     = Σ_channels dy_t h_t
    ∂B_t     = Σ_channels g_t Δ_t u_t
    ∂u_t     = Σ_n g_t B_t Δ_t + D dy_t
    ∂D       = Σ_t dy_t u_t
    ∂Δ_t     = Σ_n g_t (B_t u_t + A h_{t-1} Ā_t)
    ∂A       = Σ_t g_t h_{t-1} Ā_t Δ_t
The forward pass stores h only at the start of every chunk of `CHUNK` steps; the backward pass
recomputes the states of one chunk at a time from that checkpoint (memory O(L/CHUNK · N) per
channel; a chunk's states, decays and g of a block, 3 · CHUNK · N · W floats, stay in the
core's L2 cache), then sweeps the chunk twice (g_t backwards in time; then the sums). Each loop
over the channels writes one array (or sums into a scalar), so that the compiler vectorises
it: two arrays written in one loop may overlap as far as the compiler knows, and it then keeps
that loop scalar or guarded. ∂B_t and ∂C_t are sums over the block's channels: one vector
reduction per (t, n).
Large steps are safe: Ā_t = exp(Δ_t A) only ever decays, so nothing can overflow.
The forward sums y_t in float64 (the same speed here, and further from a float64 computation
in float32: a float32 sum of a float32 kernel once failed the large-step test of
tests/test_scan.py).

Δ_t = softplus(δ_t + b) is computed inside the kernels, one step of a block at a time (and
recomputed in the backward pass, which turns ∂Δ into ∂δ = ∂Δ · sigmoid(δ + b)): no
(batch, D, L) tensor of steps is written, read back and differentiated by PyTorch. The exp of
Ā_t and the softplus use vecmath.py's float32 functions, which the compiler vectorises
(float64: the C library's).

B and C arrive in the kernels' order (Bb, G, Lb, N) (bc_order.py), so that one kernel serves
fixed (D, N), shared (batch, N, L) and grouped (batch, G, N, L) inputs.

The kernels are registered as PyTorch operators (`ssmamba_lite::scan_cpu_forward` and
`::scan_cpu_backward`, torch.library) with fake functions that give their output shapes, so
torch.compile and FX treat a scan as one opaque node.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange

from ssmamba_lite.kernels.bc_order import to_kernel_order
from ssmamba_lite.kernels.vecmath import FASTMATH, decay_exp, sigmoid, softplus

CHUNK = 16   # checkpoint interval of the backward pass
WIDTH = 192  # at most this many channels per job (a chunk's backward arrays stay in L2)
# error_model "numpy": a division is IEEE (inf/NaN), not a Python ZeroDivisionError check,
# which would branch inside softplus's loop and keep it from being vectorised.
KERNEL = dict(parallel=True, cache=True, fastmath=FASTMATH, error_model="numpy")


@njit(inline="always")
def jobs_per_item(dim, unit, width):
    """Jobs of one batch item: blocks of at most `width` channels inside each `unit` of
    channels that share B and C."""
    return dim // unit * ((unit + width - 1) // width)


@njit(inline="always")
def block_of(job, dim, unit, width):
    """Batch item b and channels [d0, d1) of a job (see jobs_per_item)."""
    per_unit = (unit + width - 1) // width
    per_item = jobs_per_item(dim, unit, width)
    b = np.int64(job) // per_item                          # (prange counts in uint64)
    r = np.int64(job) % per_item
    first = (r // per_unit) * unit
    d0 = first + (r % per_unit) * width
    return b, d0, min(d0 + width, first + unit)


@njit(inline="always", fastmath=FASTMATH)
def step_sizes(delta, bias, use_softplus, out):
    """out[k] = Δ = softplus(δ[k] + b[k]) (or δ[k] + b[k]) for the channels of one step."""
    for k in range(out.shape[0]):
        v = delta[k] + bias[k]
        out[k] = softplus(v) if use_softplus else v


@njit(**KERNEL)
def forward_kernel(u, delta, A, B, C, D, chunk, bias, use_softplus, width):
    """NumPy in, NumPy out: y (batch, L, D), last state (batch, D, N) and chunk checkpoints
    (batch, L / chunk, N, D). u, δ: (batch, L, D); the step is Δ = softplus(δ + bias[d]) (or
    δ + bias[d]); D: skip (dim,); width: channels per job (any value gives the same result)."""
    batch, L, dim = u.shape
    N = A.shape[1]
    nchunks = (L + chunk - 1) // chunk
    y = np.empty_like(u)
    last = np.empty((batch, dim, N), u.dtype)
    ckpt = np.empty((batch, nchunks, N, dim), u.dtype)
    per_gB, per_gC = dim // B.shape[1], dim // C.shape[1]
    unit = math.gcd(per_gB, per_gC)
    per_item = jobs_per_item(dim, unit, width)
    for job in prange(batch * per_item):
        b, d0, d1 = block_of(job, dim, unit, width)
        w = d1 - d0
        Bb = B[min(b, B.shape[0] - 1), d0 // per_gB]          # (Lb, N): B_t of this block
        Cb = C[min(b, C.shape[0] - 1), d0 // per_gC]
        At = np.ascontiguousarray(A[d0:d1].T)                 # (N, W): A[n, channel]
        h = np.zeros((N, w), u.dtype)
        dt = np.empty(w, u.dtype)                            # Δ_t of each channel
        x = np.empty(w, u.dtype)                             # Δ_t u_t
        acc = np.empty(w, np.float64)                        # y_t (float64: module notes)
        bias_b, D_b = bias[d0:d1], D[d0:d1]
        for c in range(nchunks):                 # (no t % chunk per step: an integer division)
            ckpt[b, c, :, d0:d1] = h
            for t in range(c * chunk, min(L, (c + 1) * chunk)):
                u_t = u[b, t, d0:d1]
                step_sizes(delta[b, t, d0:d1], bias_b, use_softplus, dt)
                for k in range(w):
                    x[k] = dt[k] * u_t[k]
                for k in range(w):
                    acc[k] = D_b[k] * u_t[k]                               # D u_t
                Bt = Bb[min(t, Bb.shape[0] - 1)]
                Ct = Cb[min(t, Cb.shape[0] - 1)]
                for n in range(N):
                    bn, cn, hn, an = Bt[n], Ct[n], h[n], At[n]
                    for k in range(w):                  # h_t = Ā_t h_{t-1} + Δ_t B_t u_t
                        hn[k] = decay_exp(dt[k] * an[k]) * hn[k] + x[k] * bn
                    for k in range(w):                  # y_t += C_t[n] h_t[n]
                        acc[k] += cn * hn[k]
                y_t = y[b, t]
                for k in range(w):
                    y_t[d0 + k] = acc[k]
        last[b, d0:d1] = h.T
    return y, last, ckpt


@njit(**KERNEL)
def backward_kernel(u, delta, A, B, C, D, bias, use_softplus, ckpt, dy, dlast, chunk, width):
    """NumPy in, NumPy out: du, dδ (batch, L, D), dA (batch, D, N) and dD (batch, D) per batch
    item, dB, dC (batch, G, Lb, N) per batch item; u, δ, dy (batch, L, D); width: channels per
    job (any value gives the same result). dδ = ∂Δ · softplus'(δ + bias) (or ∂Δ)."""
    batch, L, dim = u.shape
    N = A.shape[1]
    nchunks = ckpt.shape[1]
    per_gB, per_gC = dim // B.shape[1], dim // C.shape[1]
    unit = math.gcd(per_gB, per_gC)
    per_item = jobs_per_item(dim, unit, width)
    du = np.empty_like(u)
    ddelta = np.empty_like(u)
    dA = np.empty((batch, dim, N), u.dtype)
    dD = np.empty((batch, dim), u.dtype)
    # ∂B, ∂C: each job sums its block's channels into a slab of its own, the slabs are summed
    # at the end: no two threads ever write the same memory. ∂A, ∂D are per channel already.
    dBp = np.zeros((batch * per_item, B.shape[1], B.shape[2], N), u.dtype)
    dCp = np.zeros((batch * per_item, C.shape[1], C.shape[2], N), u.dtype)
    for job in prange(batch * per_item):
        b, d0, d1 = block_of(job, dim, unit, width)
        w = d1 - d0
        bB, bC = min(b, B.shape[0] - 1), min(b, C.shape[0] - 1)
        gB, gC = d0 // per_gB, d0 // per_gC
        dB, dC = dBp[np.int64(job)], dCp[np.int64(job)]
        At = np.ascontiguousarray(A[d0:d1].T)                 # (N, W)
        g = np.ascontiguousarray(dlast[b, d0:d1].T)           # g carried into a chunk
        dAb = np.zeros((N, w), u.dtype)                       # ∂A of the block
        dDb = np.zeros(w, u.dtype)                            # ∂D of the block
        hs = np.empty((chunk + 1, N, w), u.dtype)             # h_{t0-1} .. h_{t1-1}
        abar = np.empty((chunk, N, w), u.dtype)               # Ā_t of one chunk
        G = np.empty((chunk, N, w), u.dtype)                  # g_t of one chunk
        dts = np.empty((chunk, w), u.dtype)                   # Δ_t of one chunk
        xs = np.empty((chunk, w), u.dtype)                    # Δ_t u_t of one chunk
        du_t = np.empty(w, u.dtype)
        dDelta_t = np.empty(w, u.dtype)
        zero = np.zeros(1, u.dtype)[0]
        bias_b, D_b = bias[d0:d1], D[d0:d1]
        for c in range(nchunks - 1, -1, -1):
            t0 = c * chunk
            m = min(L, t0 + chunk) - t0
            hs[0] = ckpt[b, c, :, d0:d1]
            for i in range(m):                   # recompute this chunk's states
                t = t0 + i
                u_t = u[b, t, d0:d1]
                dt, x = dts[i], xs[i]
                step_sizes(delta[b, t, d0:d1], bias_b, use_softplus, dt)
                for k in range(w):
                    x[k] = dt[k] * u_t[k]
                Bt = B[bB, gB, min(t, B.shape[2] - 1)]
                for n in range(N):
                    ab, an, bn = abar[i, n], At[n], Bt[n]
                    for k in range(w):
                        ab[k] = decay_exp(dt[k] * an[k])                   # Ā_t
                    h_prev, h_new = hs[i, n], hs[i + 1, n]
                    for k in range(w):
                        h_new[k] = ab[k] * h_prev[k] + x[k] * bn           # h_t
            # First g_t, backwards in time ...
            t = t0 + m - 1
            Ct, dy_t = C[bC, gC, min(t, C.shape[2] - 1)], dy[b, t, d0:d1]
            for n in range(N):                   # the chunk's last step: Ā_{t+1} g_{t+1} = g
                Gi, gn, cn = G[m - 1, n], g[n], Ct[n]
                for k in range(w):
                    Gi[k] = gn[k] + cn * dy_t[k]
            for i in range(m - 2, -1, -1):
                t = t0 + i
                Ct, dy_t = C[bC, gC, min(t, C.shape[2] - 1)], dy[b, t, d0:d1]
                for n in range(N):
                    Gi, G_next, a_next, cn = G[i, n], G[i + 1, n], abar[i + 1, n], Ct[n]
                    for k in range(w):           # g_t = C_t dy_t + Ā_{t+1} g_{t+1}
                        Gi[k] = G_next[k] * a_next[k] + cn * dy_t[k]
            for n in range(N):
                gn, G0, a0 = g[n], G[0, n], abar[0, n]
                for k in range(w):
                    gn[k] = G0[k] * a0[k]        # -> the previous chunk
            # ... then the sums of each step.
            for i in range(m):
                t = t0 + i
                tB, tC = min(t, B.shape[2] - 1), min(t, C.shape[2] - 1)
                Bt, Ct = B[bB, gB, tB], C[bC, gC, tC]
                u_t, dy_t = u[b, t, d0:d1], dy[b, t, d0:d1]
                dt, x = dts[i], xs[i]
                du_t[:] = zero
                dDelta_t[:] = zero
                for n in range(N):
                    bn, Gi, h_prev, ab, an = Bt[n], G[i, n], hs[i, n], abar[i, n], At[n]
                    for k in range(w):
                        du_t[k] += Gi[k] * bn                                # Σ_n g_t B_t
                    for k in range(w):                   # ∂Δ_t = Σ_n g_t (B_t u_t + A h Ā_t)
                        dDelta_t[k] += Gi[k] * (bn * u_t[k] + h_prev[k] * ab[k] * an[k])
                    dA_n = dAb[n]
                    for k in range(w):                   # ∂A += g_t h_{t-1} Ā_t Δ_t
                        dA_n[k] += Gi[k] * h_prev[k] * ab[k] * dt[k]
                    sB = zero
                    for k in range(w):                   # ∂B_t = Σ_channels g_t Δ_t u_t
                        sB += Gi[k] * x[k]
                    dB[gB, tB, n] += sB
                    h_new = hs[i + 1, n]
                    sC = zero
                    for k in range(w):                   # ∂C_t = Σ_channels dy_t h_t
                        sC += dy_t[k] * h_new[k]
                    dC[gC, tC, n] += sC
                du_out, dd_out, delta_t = du[b, t], ddelta[b, t], delta[b, t, d0:d1]
                for k in range(w):                       # ∂u_t = Δ_t Σ_n g_t B_t + D dy_t
                    du_out[d0 + k] = du_t[k] * dt[k] + D_b[k] * dy_t[k]
                for k in range(w):                       # ∂D += dy_t u_t
                    dDb[k] += dy_t[k] * u_t[k]
                if use_softplus:                         # ∂δ = ∂Δ · sigmoid(δ + b)
                    for k in range(w):
                        dd_out[d0 + k] = dDelta_t[k] * sigmoid(delta_t[k] + bias_b[k])
                else:
                    for k in range(w):
                        dd_out[d0 + k] = dDelta_t[k]
        dA[b, d0:d1] = dAb.T
        dD[b, d0:d1] = dDb
    dB = dBp.reshape(batch, per_item, B.shape[1], B.shape[2], N).sum(axis=1)
    dC = dCp.reshape(batch, per_item, C.shape[1], C.shape[2], N).sum(axis=1)
    return du, ddelta, dA, dD, dB, dC


def use_torch_threads() -> None:
    """numba's kernels run on as many threads as PyTorch is set to (torch.set_num_threads)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def channels_per_job(batch: int, dim: int, groups_B: int, groups_C: int) -> int:
    """The kernels' `width`: blocks of at most WIDTH channels sharing B and C, and enough jobs
    for every thread when the batch is small."""
    unit = math.gcd(dim // groups_B, dim // groups_C)        # channels sharing B and C
    jobs_wanted = -(-numba.get_num_threads() // batch)       # per batch item
    blocks = max(-(-unit // WIDTH), -(-jobs_wanted // (dim // unit)))   # per unit
    return -(-unit // min(blocks, unit))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _width(u: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> int:
    return channels_per_job(u.shape[0], u.shape[2], B.shape[1], C.shape[1])


# The kernels as PyTorch operators (torch.library): opaque to torch.compile and FX, which see
# one node with the shapes the fake functions give, instead of tracing into NumPy and numba.
@torch.library.custom_op("ssmamba_lite::scan_cpu_forward", mutates_args=())
def scan_cpu_forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                     C: torch.Tensor, D: torch.Tensor, bias: torch.Tensor,
                     use_softplus: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y (batch, L, D) with the skip D u, last state (batch, D, N) and the chunk checkpoints of
    the states (batch, L / CHUNK, N, D), from u, delta (batch, L, D), channels last; every
    input in the compute dtype, B and C in kernel order; Δ = softplus(delta + bias) when
    use_softplus, else delta + bias (D, bias: (D,))."""
    use_torch_threads()
    y, last, ckpt = forward_kernel(_np(u), _np(delta), _np(A), _np(B), _np(C), _np(D), CHUNK,
                                   _np(bias), use_softplus, _width(u, B, C))
    return torch.from_numpy(y), torch.from_numpy(last), torch.from_numpy(ckpt)


@scan_cpu_forward.register_fake
def _(u, delta, A, B, C, D, bias, use_softplus):
    batch, L, dim = u.shape
    N = A.shape[1]
    return (u.new_empty(batch, L, dim), u.new_empty(batch, dim, N),
            u.new_empty(batch, (L + CHUNK - 1) // CHUNK, N, dim))


@torch.library.custom_op("ssmamba_lite::scan_cpu_backward", mutates_args=())
def scan_cpu_backward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                      C: torch.Tensor, D: torch.Tensor, bias: torch.Tensor, use_softplus: bool,
                      ckpt: torch.Tensor, dy: torch.Tensor,
                      dlast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                    torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of u and delta (batch, L, D), of A and D (per batch item), B and C (kernel
    order, per batch item)."""
    use_torch_threads()
    out = backward_kernel(_np(u), _np(delta), _np(A), _np(B), _np(C), _np(D), _np(bias),
                          use_softplus, _np(ckpt), _np(dy), _np(dlast), CHUNK, _width(u, B, C))
    return tuple(torch.from_numpy(g) for g in out)


@scan_cpu_backward.register_fake
def _(u, delta, A, B, C, D, bias, use_softplus, ckpt, dy, dlast):
    batch, _, dim = u.shape
    return (torch.empty_like(u), torch.empty_like(u), u.new_empty(batch, dim, A.shape[1]),
            u.new_empty(batch, dim), u.new_empty(batch, *B.shape[1:]),
            u.new_empty(batch, *C.shape[1:]))


def _setup(ctx, inputs, output):
    ctx.use_softplus = inputs[7]
    ctx.save_for_backward(*inputs[:7], output[2])


def _backward(ctx, dy, dlast, _dckpt):
    u, delta, A, B, C, D, bias, ckpt = ctx.saved_tensors
    dy = torch.zeros_like(delta) if dy is None else dy.to(delta.dtype)
    dlast = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=delta.dtype) \
        if dlast is None else dlast.to(delta.dtype)
    du, ddelta, dA, dD, dB, dC = scan_cpu_backward(u, delta, A, B, C, D, bias, ctx.use_softplus,
                                                   ckpt, dy.contiguous(), dlast.contiguous())
    # the kernel accumulates per batch item; a B or C shared by the batch sums them
    dB = dB.sum(0, keepdim=True) if B.shape[0] == 1 else dB
    dC = dC.sum(0, keepdim=True) if C.shape[0] == 1 else dC
    dbias = ddelta.sum((0, 1)) if ctx.needs_input_grad[6] else None    # ∂bias = Σ_{b,t} ∂δ
    return du, ddelta, dA.sum(0), dB, dC, dD.sum(0), dbias, None


scan_cpu_forward.register_autograd(_backward, setup_context=_setup)


def selective_scan_cpu(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The scan y_t = <C_t, h_t> + D u_t and the last state, for CPU tensors.

    delta holds δ in the compute dtype (float32 or float64); the kernels compute the step
    Δ = softplus(δ + delta_bias) themselves (or δ + delta_bias without softplus, δ alone
    without a bias). D None: no skip. The gate z is applied by `scan.selective_scan`.
    Returns (y (batch, D, L), last state (batch, D, N)).
    """
    dtype = delta.dtype
    zeros = delta.new_zeros(delta.shape[1])
    bias = zeros if delta_bias is None else delta_bias.to(dtype).contiguous()
    skip = zeros if D is None else D.to(dtype).contiguous()
    y, last, _ = scan_cpu_forward(u.to(dtype).transpose(1, 2).contiguous(),   # (batch, L, D)
                                  delta.transpose(1, 2).contiguous(),
                                  A.to(dtype).contiguous(), to_kernel_order(B, dtype),
                                  to_kernel_order(C, dtype), skip, bias, bool(delta_softplus))
    return y.transpose(1, 2), last
