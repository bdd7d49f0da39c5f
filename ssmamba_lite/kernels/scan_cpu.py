"""The fast CPU selective scan: one fused numba kernel per direction of time.

Same math as `ssmamba_lite.scan.selective_scan_reference` (read that first; symbols as in its glossary):
    Ā_t = exp(Δ_t A),   h_t = Ā_t ⊙ h_{t-1} + Δ_t B_t u_t,   y_t = <C_t, h_t> + D u_t
(the skip D u_t is added in the kernel, where u_t is already at hand: no PyTorch pass over
(batch, D, L) for it, forwards or backwards).

Why a kernel? Every pure-PyTorch formulation materialises (batch, D, L, N) tensors and is bound
by memory traffic. Here each (batch, channel) row walks L once and keeps only its N-vector state
h in a small local array: memory traffic is just the inputs and outputs.

Both passes run rows in parallel: the forward one job per (batch, channel) row, the backward
one job per (batch item, block of channels), so a batch of one uses every thread too.

Backward (reverse-mode, per row; g_t = ∂loss/∂h_t, carried backwards in time):
    g_t      = C_t dy_t + Ā_{t+1} ⊙ g_{t+1}           (g_L starts from the last state's gradient)
    ∂C_t     = dy_t h_t
    ∂B_t     = g_t Δ_t u_t
    ∂u_t     = Σ_n g_t B_t Δ_t + D dy_t
    ∂D       = Σ_t dy_t u_t
    ∂Δ_t     = Σ_n g_t (B_t u_t + A h_{t-1} Ā_t)
    ∂A       = Σ_t g_t h_{t-1} Ā_t Δ_t
The forward pass stores h only at the start of every chunk of `CHUNK` steps; the backward pass
recomputes the states of one chunk at a time from that checkpoint (memory O(L/CHUNK · N)), then
sweeps the chunk three times (g_t backwards in time; the sums over n and ∂A; ∂B and ∂C), in
loops over n that each write one array (or sum into scalars), so that the compiler vectorises
them: two arrays written in one loop may overlap as far as the compiler knows, and it then
keeps that loop scalar or guarded.
Large steps are safe: Ā_t = exp(Δ_t A) only ever decays, so nothing can overflow.
The forward sums y_t = Σ_n C_t h_t in float64 (a float32 sum is faster, and fails the
large-step test of tests/test_scan.py on ∂A: further from a float64 computation than
mamba-ssm's float32 reference).

Δ_t = softplus(δ_t + b) is computed inside the kernels, one row at a time (and recomputed in
the backward pass, which turns ∂Δ into ∂δ = ∂Δ · sigmoid(δ + b)): no (batch, D, L) tensor of
steps is written, read back and differentiated by PyTorch. The exp of Ā_t and the softplus use
vecmath.py's float32 functions, which the compiler vectorises (float64: the C library's).

B and C arrive in the kernels' order (Bb, G, Lb, N) (bc_order.py), so that one kernel serves
fixed (D, N), shared (batch, N, L) and grouped (batch, G, N, L) inputs, and the innermost loop
over n reads contiguous memory.

The kernels are registered as PyTorch operators (`ssmamba_lite::scan_cpu_forward` and
`::scan_cpu_backward`, torch.library) with fake functions that give their output shapes, so
torch.compile and FX treat a scan as one opaque node.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from ssmamba_lite.kernels.bc_order import to_kernel_order
from ssmamba_lite.kernels.vecmath import FASTMATH, decay_exp, sigmoid, softplus

CHUNK = 64  # checkpoint interval of the backward pass


@njit(inline="always", fastmath=FASTMATH)
def step_sizes(delta, bias, use_softplus, out):
    """out[t] = Δ_t = softplus(δ_t + b) (or δ_t + b) for one row: a loop that vectorises."""
    for t in range(delta.shape[0]):
        v = delta[t] + bias
        out[t] = softplus(v) if use_softplus else v


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def forward_kernel(u, delta, A, B, C, D, chunk, bias, use_softplus):
    """NumPy in, NumPy out: y, last state and chunk checkpoints (see the operators below).
    delta holds δ; the step is Δ = softplus(δ + bias[d]) (or δ + bias[d]); D: skip (dim,)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    nchunks = (L + chunk - 1) // chunk
    y = np.empty_like(u)
    last = np.empty((batch, dim, N), u.dtype)
    ckpt = np.empty((batch, dim, nchunks, N), u.dtype)
    per_gB, per_gC = dim // B.shape[1], dim // C.shape[1]
    for row in prange(batch * dim):
        b, d = np.int64(row) // dim, np.int64(row) % dim     # (prange counts in uint64)
        Bd = B[min(b, B.shape[0] - 1), d // per_gB]          # (Lb, N): B_t of this row's group
        Cd = C[min(b, C.shape[0] - 1), d // per_gC]
        Ad, ud, yd = A[d], u[b, d], y[b, d]                  # views: no index arithmetic per step
        h = np.zeros(N, u.dtype)
        dts = np.empty(L, u.dtype)
        step_sizes(delta[b, d], bias[d], use_softplus, dts)          # Δ_t of this row
        for c in range(nchunks):                 # (no t % chunk per step: an integer division)
            ckpt[b, d, c] = h
            for t in range(c * chunk, min(L, (c + 1) * chunk)):
                Bt = Bd[min(t, Bd.shape[0] - 1)]
                Ct = Cd[min(t, Cd.shape[0] - 1)]
                dt = dts[t]
                x = dt * ud[t]
                acc = 0.0                        # float64: see the module's notes
                for n in range(N):
                    h[n] = decay_exp(dt * Ad[n]) * h[n] + x * Bt[n]    # h_t = Ā_t h + Δ_t B_t u_t
                    acc += Ct[n] * h[n]                                # y_t = <C_t, h_t>
                yd[t] = acc + D[d] * ud[t]                             # + D u_t
        last[b, d] = h
    return y, last, ckpt


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def backward_kernel(u, delta, A, B, C, D, bias, use_softplus, ckpt, dy, dlast, chunk, parts):
    """NumPy in, NumPy out: du, dδ, dA, dD (both per batch item), dB, dC; `parts` channel
    blocks per batch item (any value gives the same result). dδ = ∂Δ · softplus'(δ + bias)
    (or ∂Δ)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    nchunks = ckpt.shape[2]
    per_gB, per_gC = dim // B.shape[1], dim // C.shape[1]
    du = np.empty_like(u)
    ddelta = np.empty_like(u)
    # One job per (batch item, block of channels): `parts` blocks per item, so that a batch of
    # one still fills the threads. Channels of a block share B and C (same group), so each job
    # accumulates ∂B, ∂C in its own slab, summed over the blocks at the end: no two threads
    # ever write the same memory. ∂A is per channel, hence per job already.
    dA = np.empty((batch, dim, N), u.dtype)
    dD = np.empty((batch, dim), u.dtype)
    dBp = np.zeros((batch * parts, B.shape[1], B.shape[2], N), u.dtype)
    dCp = np.zeros((batch * parts, C.shape[1], C.shape[2], N), u.dtype)
    for job in prange(batch * parts):
        b, p = np.int64(job) // parts, np.int64(job) % parts   # (prange counts in uint64)
        bB, bC = min(b, B.shape[0] - 1), min(b, C.shape[0] - 1)
        dB, dC = dBp[np.int64(job)], dCp[np.int64(job)]
        hs = np.empty((chunk + 1, N), u.dtype)   # h_{t0-1} .. h_{t1-1} of one chunk
        abar = np.empty((chunk, N), u.dtype)     # Ā_t of one chunk
        G = np.empty((chunk, N), u.dtype)        # g_t of one chunk
        g = np.empty(N, u.dtype)                 # g carried into the chunk from the next one
        dAd = np.empty(N, u.dtype)               # ∂A of one channel
        dts = np.empty(L, u.dtype)
        zero = np.zeros(1, u.dtype)[0]
        for d in range(p * dim // parts, (p + 1) * dim // parts):
            gB, gC = d // per_gB, d // per_gC
            g[:] = dlast[b, d]
            dAd[:] = zero
            dDd = zero                           # ∂D of one channel
            step_sizes(delta[b, d], bias[d], use_softplus, dts)      # Δ_t of this row
            for c in range(nchunks - 1, -1, -1):
                t0 = c * chunk
                t1 = min(L, t0 + chunk)
                hs[0] = ckpt[b, d, c]
                for t in range(t0, t1):          # recompute this chunk's states
                    i = t - t0
                    tB = min(t, B.shape[2] - 1)
                    dt = dts[t]
                    x = dt * u[b, d, t]
                    for n in range(N):
                        abar[i, n] = decay_exp(dt * A[d, n])
                        hs[i + 1, n] = abar[i, n] * hs[i, n] + x * B[bB, gB, tB, n]
                # Three sweeps over the chunk, each loop over n writing one array (so that
                # the compiler vectorises it): first g_t, backwards in time ...
                tC, dyt, last = min(t1 - 1, C.shape[2] - 1), dy[b, d, t1 - 1], t1 - 1 - t0
                for n in range(N):               # g at the chunk's last step: from the carry
                    G[last, n] = g[n] + C[bC, gC, tC, n] * dyt
                for t in range(t1 - 2, t0 - 1, -1):
                    i = t - t0
                    tC = min(t, C.shape[2] - 1)
                    dyt = dy[b, d, t]
                    for n in range(N):           # g_t = C_t dy_t + Ā_{t+1} g_{t+1}
                        G[i, n] = G[i + 1, n] * abar[i + 1, n] + C[bC, gC, tC, n] * dyt
                for n in range(N):
                    g[n] = G[0, n] * abar[0, n]  # -> the previous chunk
                # ... then the sums over n of each step, and ∂A ...
                for t in range(t0, t1):
                    i = t - t0
                    tB = min(t, B.shape[2] - 1)
                    dt, ut, dyt = dts[t], u[b, d, t], dy[b, d, t]
                    du_t = zero
                    ddt = zero
                    for n in range(N):
                        gbn = G[i, n] * B[bB, gB, tB, n]                 # g_t B_t
                        da = G[i, n] * hs[i, n] * abar[i, n]             # ∂Ā_t · Ā_t
                        du_t += gbn                                      # ∂u_t / Δ_t
                        ddt += gbn * ut + da * A[d, n]                   # ∂Δ_t
                    for n in range(N):               # ∂A (one array written per loop)
                        dAd[n] += G[i, n] * hs[i, n] * abar[i, n] * dt
                    du[b, d, t] = du_t * dt + D[d] * dyt
                    dDd += dyt * ut
                    ddelta[b, d, t] = ddt            # ∂Δ_t; turned into ∂δ_t below
                # ... then ∂B_t = g_t Δ_t u_t and ∂C_t = dy_t h_t.
                for t in range(t0, t1):
                    i = t - t0
                    tB, tC = min(t, B.shape[2] - 1), min(t, C.shape[2] - 1)
                    w, dyt = dts[t] * u[b, d, t], dy[b, d, t]
                    for n in range(N):
                        dB[gB, tB, n] += G[i, n] * w
                    for n in range(N):
                        dC[gC, tC, n] += dyt * hs[i + 1, n]
            dA[b, d] = dAd
            dD[b, d] = dDd
            if use_softplus:
                for t in range(L):                   # ∂δ = ∂Δ · sigmoid(δ + b)
                    ddelta[b, d, t] *= sigmoid(delta[b, d, t] + bias[d])
    dB = dBp.reshape(batch, parts, B.shape[1], B.shape[2], N).sum(axis=1)
    dC = dCp.reshape(batch, parts, C.shape[1], C.shape[2], N).sum(axis=1)
    return du, ddelta, dA, dD, dB, dC


def use_torch_threads() -> None:
    """numba's kernels run on as many threads as PyTorch is set to (torch.set_num_threads)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def backward_parts(batch: int, dim: int) -> int:
    """Channel blocks per batch item in the backward pass: enough jobs for every thread."""
    return max(1, min(dim, -(-numba.get_num_threads() // batch)))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


# The kernels as PyTorch operators (torch.library): opaque to torch.compile and FX, which see
# one node with the shapes the fake functions give, instead of tracing into NumPy and numba.
@torch.library.custom_op("ssmamba_lite::scan_cpu_forward", mutates_args=())
def scan_cpu_forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                     C: torch.Tensor, D: torch.Tensor, bias: torch.Tensor,
                     use_softplus: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y (batch, D, L) with the skip D u, last state (batch, D, N) and the chunk checkpoints of
    the states (batch, D, L / CHUNK, N); every input in the compute dtype, B and C in kernel
    order; Δ = softplus(delta + bias) when use_softplus, else delta + bias (D, bias: (D,))."""
    use_torch_threads()
    y, last, ckpt = forward_kernel(_np(u), _np(delta), _np(A), _np(B), _np(C), _np(D), CHUNK,
                                   _np(bias), use_softplus)
    return torch.from_numpy(y), torch.from_numpy(last), torch.from_numpy(ckpt)


@scan_cpu_forward.register_fake
def _(u, delta, A, B, C, D, bias, use_softplus):
    batch, dim, L = u.shape
    N = A.shape[1]
    return (u.new_empty(batch, dim, L), u.new_empty(batch, dim, N),
            u.new_empty(batch, dim, (L + CHUNK - 1) // CHUNK, N))


@torch.library.custom_op("ssmamba_lite::scan_cpu_backward", mutates_args=())
def scan_cpu_backward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                      C: torch.Tensor, D: torch.Tensor, bias: torch.Tensor, use_softplus: bool,
                      ckpt: torch.Tensor, dy: torch.Tensor,
                      dlast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                    torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of u, delta, A and D (per batch item), B and C (kernel order, per batch
    item)."""
    use_torch_threads()
    out = backward_kernel(_np(u), _np(delta), _np(A), _np(B), _np(C), _np(D), _np(bias),
                          use_softplus, _np(ckpt), _np(dy), _np(dlast), CHUNK,
                          backward_parts(u.shape[0], u.shape[1]))
    return tuple(torch.from_numpy(g) for g in out)


@scan_cpu_backward.register_fake
def _(u, delta, A, B, C, D, bias, use_softplus, ckpt, dy, dlast):
    batch, dim, _ = u.shape
    return (torch.empty_like(u), torch.empty_like(u), u.new_empty(batch, dim, A.shape[1]),
            u.new_empty(batch, dim), u.new_empty(batch, *B.shape[1:]),
            u.new_empty(batch, *C.shape[1:]))


def _setup(ctx, inputs, output):
    ctx.use_softplus = inputs[7]
    ctx.save_for_backward(*inputs[:7], output[2])


def _backward(ctx, dy, dlast, _dckpt):
    u, delta, A, B, C, D, bias, ckpt = ctx.saved_tensors
    dy = torch.zeros_like(delta) if dy is None else dy.to(delta.dtype)
    dlast = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=delta.dtype) \
        if dlast is None else dlast.to(delta.dtype)
    du, ddelta, dA, dD, dB, dC = scan_cpu_backward(u, delta, A, B, C, D, bias, ctx.use_softplus,
                                                   ckpt, dy.contiguous(), dlast.contiguous())
    # the kernel accumulates per batch item; a B or C shared by the batch sums them
    dB = dB.sum(0, keepdim=True) if B.shape[0] == 1 else dB
    dC = dC.sum(0, keepdim=True) if C.shape[0] == 1 else dC
    dbias = ddelta.sum((0, 2)) if ctx.needs_input_grad[6] else None    # ∂bias = Σ_{b,t} ∂δ
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
    y, last, _ = scan_cpu_forward(u.to(dtype).contiguous(), delta.contiguous(),
                                  A.to(dtype).contiguous(), to_kernel_order(B, dtype),
                                  to_kernel_order(C, dtype), skip, bias, bool(delta_softplus))
    return y, last
