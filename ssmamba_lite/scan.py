"""The selective scan (S6): the recurrence at the heart of every Mamba layer.

Paper name: the *selective state-space model* "S6" (Gu & Dao 2023, "Mamba"). SSMamba's DMS
module runs this scan along several directions and scales of an image; nothing else in the
model mixes information between far-apart tokens.

Glossary (code name -> math; shapes in brackets)
    batch        number of sequences scanned side by side
    D  (a size)  channels (Mamba's d_inner); each channel has its own state
    L            sequence length (tokens)
    N            state size per channel (d_state)
    u            u_t, the input                                   (batch, D, L)
    delta        Δ_t > 0, the step size (input dependent!)         (batch, D, L)
    A            A, the diagonal state matrix, real and negative   (D, N)
    B            B_t, how the input enters the state   (D, N) | (batch, N, L) | (batch, G, N, L)
    C            C_t, how the state is read out        same choices as B
    D  (a tensor) the skip weights                                  (D,)
    z            z_t, the gate                                      (batch, D, L)
    h            h_t, the hidden state                              (batch, D, N)
    G            groups: channel d uses B/C group d // (D / G)

The continuous system h'(t) = A h(t) + B x(t), y(t) = C h(t) (Mamba eq. 1a-1b), discretised
with step Δ by zero-order hold (Mamba eq. 4): Ā = exp(ΔA), B̄ = (ΔA)^{-1} (exp(ΔA) - I) ΔB.
Mamba's code keeps Ā exact and simplifies B̄ to ΔB (Euler for the input term): B̄ = (I + ΔA/2
+ O((ΔA)^2)) ΔB, so the two agree to first order in Δ, and their relative gap is ΔA/2, first
order in ΔA. Per channel d and state n, with everything depending on t ("selective",
Mamba's Algorithm 2):
    Ā_t = exp(Δ_t A)                      (decay: 0 < Ā_t < 1 because A < 0, Δ_t > 0)
    h_t = Ā_t ⊙ h_{t-1} + Δ_t B_t u_t      (h_0 = 0; Mamba eq. 2a with B̄_t ≈ Δ_t B_t)
    y_t = <C_t, h_t> + D u_t               (Mamba eq. 2b, plus the skip term D)
    out_t = y_t · silu(z_t)                (when z is given: the gate of the Mamba block)

Implementations with one signature, the one of mamba-ssm's `selective_scan_fn`, each tested
equal to the reference:
    selective_scan_reference     the loop above, plain PyTorch, differentiable by autograd
    kernels.scan_cpu             fused numba kernel (CPU tensors)
    kernels.scan_cuda            mamba-ssm's compiled CUDA kernel, when it is installed
    kernels.scan_triton          a Triton kernel (CUDA tensors, nothing to compile by hand)
    kernels.scan_chunked         plain PyTorch, time cut into chunks computed at once
`selective_scan` picks one (see `which_backend` / `backend_report`).
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton", "chunked")


# ---------------------------------------------------------------------------------------------
# Argument checks: one clear ValueError naming the argument and the shape it should have.
# ---------------------------------------------------------------------------------------------
def check_scan_args(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> None:
    """Raise ValueError if the arguments do not have selective_scan's shapes."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not torch.is_tensor(t):
            raise ValueError(f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must have shape (batch, D, L), got {tuple(u.shape)}")
    batch, dim, L = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"selective_scan: A must have shape (D, N) = ({dim}, N), got {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("selective_scan: A must be real (complex A is not supported)")
    N = A.shape[1]
    if tuple(delta.shape) != (batch, dim, L):
        raise ValueError(f"selective_scan: delta must have shape {(batch, dim, L)} like u, got {tuple(delta.shape)}")
    for name, M in (("B", B), ("C", C)):
        ok = (
            (M.dim() == 2 and tuple(M.shape) == (dim, N))
            or (M.dim() == 3 and tuple(M.shape) == (batch, N, L))
            or (M.dim() == 4 and M.shape[0] == batch and M.shape[2:] == (N, L)
                and M.shape[1] > 0 and dim % M.shape[1] == 0)
        )
        if not ok:
            raise ValueError(
                f"selective_scan: {name} must have shape (D, N) = {(dim, N)}, (batch, N, L) = "
                f"{(batch, N, L)} or (batch, G, N, L) with G dividing {dim}; got {tuple(M.shape)}")
    for name, t, shape in (("D", D, (dim,)), ("delta_bias", delta_bias, (dim,)), ("z", z, (batch, dim, L))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"selective_scan: {name} must have shape {shape}, got {tuple(t.shape)}")
    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if t.dtype not in floats:
            raise ValueError(f"selective_scan: {name} must be a floating tensor, got {t.dtype}")


def expand_groups(M: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, G, N, L) -> (batch, D, N, L): channel d reads group d // (D // G)."""
    return M.repeat_interleave(dim // M.shape[1], dim=1)


def work_dtype(u: torch.Tensor) -> torch.dtype:
    """Scans compute in float32 (float64 when u is float64), whatever the input dtype."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prologue(delta, delta_bias, delta_softplus, dtype):
    """Δ <- softplus(Δ + bias), computed in float32 (or float64) as mamba-ssm does."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias[:, None].to(delta.dtype)
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _epilogue(y, u, D, z, dtype_in):
    """out = (y + D u) · silu(z), cast back to the input dtype."""
    if D is not None:
        y = y + u * D[:, None].to(y.dtype)            # y_t += D u_t
    if z is not None:
        y = y * F.silu(z.to(y.dtype))                  # out_t = y_t · silu(z_t)
    return y.to(dtype_in)


# ---------------------------------------------------------------------------------------------
# The readable reference: the recurrence, one time step at a time.
# ---------------------------------------------------------------------------------------------
def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    """Selective scan as a plain loop over time. Same signature and result as mamba-ssm's
    `selective_scan_fn` (real A). One Python step per token: use it to learn and to test."""
    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    work = work_dtype(u)
    u, A, B, C = u.to(work), A.to(work), B.to(work), C.to(work)
    delta = _prologue(delta, delta_bias, delta_softplus, work)
    batch, dim, L = u.shape
    if B.dim() == 4:
        B = expand_groups(B, dim)                      # (batch, D, N, L)
    if C.dim() == 4:
        C = expand_groups(C, dim)

    def steps(M):
        """M_0 .. M_{L-1}, each broadcast to (batch, D, N) whatever M's layout. One unbind for
        all steps: indexing M[..., t] at every step would make autograd's backward write a
        gradient as large as all of M for each step, O(L^2) memory traffic for O(L) work."""
        if M.dim() == 2:                               # (D, N): the same at every step
            return [M[None]] * L
        if M.dim() == 3:                               # (batch, N, L): shared by all channels
            return M[:, None].unbind(-1)
        return M.unbind(-1)                            # (batch, D, N, L)

    h = u.new_zeros(batch, dim, A.shape[1])            # h_0 = 0              (batch, D, N)
    ys = []
    for dt, B_t, C_t, u_t in zip(delta[..., None].unbind(-2), steps(B), steps(C),
                                 u[..., None].unbind(-2)):   # Δ_t, u_t: (batch, D, 1)
        A_bar = torch.exp(dt * A)                      # Ā_t = exp(Δ_t A)
        h = A_bar * h + dt * B_t * u_t                 # h_t = Ā_t h_{t-1} + Δ_t B_t u_t
        ys.append((h * C_t).sum(-1))                   # y_t = <C_t, h_t>     (batch, D)
    y = torch.stack(ys, dim=-1)                        # (batch, D, L)
    out = _epilogue(y, u, D, z, dtype_in)
    return (out, h) if return_last_state else out


# ---------------------------------------------------------------------------------------------
# The dispatcher: which implementation runs, and why.
# ---------------------------------------------------------------------------------------------
_LOADED: dict = {}           # backend -> its function, once imported
_MISSING: dict = {}          # backend -> why it cannot run here (the import error)
_WARNED: set = set()         # fallbacks already announced


def _load(name: str, load):
    """`load()`'s result, or None after recording why it failed (once per backend)."""
    if name not in _MISSING and name not in _LOADED:
        try:
            _LOADED[name] = load()
        except Exception as err:              # a missing or broken optional package
            _MISSING[name] = f"{type(err).__name__}: {err}".splitlines()[0]
    return _LOADED.get(name)


def forget_backends() -> None:
    """Forget which backends imported, why others did not, and which fallbacks were announced
    (after installing a package in a running session, or between tests)."""
    _LOADED.clear()
    _MISSING.clear()
    _WARNED.clear()


def cuda_kernel():
    """mamba-ssm's compiled CUDA scan (kernels/scan_cuda.py), or None when its extension
    `selective_scan_cuda` does not import."""
    def load():
        import selective_scan_cuda  # noqa: F401  (the compiled extension itself)

        from ssmamba_lite.kernels.scan_cuda import selective_scan_cuda as fn
        return fn
    return _load("cuda", load)


def triton_kernel():
    """The Triton scan (kernels/scan_triton.py), or None when Triton does not import."""
    def load():
        from ssmamba_lite.kernels.scan_triton import selective_scan_triton
        return selective_scan_triton
    return _load("triton", load)


def cpu_kernel():
    """The numba CPU kernel (kernels/scan_cpu.py), or None when numba is missing."""
    def load():
        from ssmamba_lite.kernels.scan_cpu import selective_scan_cpu
        return selective_scan_cpu
    return _load("cpu", load)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def backend_report(u: torch.Tensor, backend: str = "auto") -> tuple[str, str]:
    """(the implementation `selective_scan` runs for a tensor like `u`, why).

    Order: the `backend` argument, then $SSMAMBA_SCAN, then automatic. CUDA tensors: mamba-ssm's
    kernel when its extension imports, else the Triton kernel, else the chunked torch scan.
    CPU tensors: the numba kernel, else the chunked torch scan. The L-step reference loop only
    when asked for. A forced backend that cannot run here is a ValueError saying why.
    """
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: backend must be one of {BACKENDS}, got {backend!r}")
    source = "backend argument"
    if backend == "auto":
        backend = os.environ.get("SSMAMBA_SCAN", "auto").strip().lower() or "auto"
        source = "$SSMAMBA_SCAN"
        if backend not in BACKENDS:
            raise ValueError(f"SSMAMBA_SCAN must be one of {BACKENDS}, got {backend!r}")
    cuda = u.device.type == "cuda"
    usable = {"cuda": cuda and cuda_kernel() is not None,
              "triton": (cuda or _interpreting()) and triton_kernel() is not None,
              "cpu": u.device.type == "cpu" and cpu_kernel() is not None,
              "chunked": True, "reference": True}
    if backend != "auto":
        if not usable[backend]:
            need = {"cuda": "CUDA tensors and mamba-ssm's compiled kernels",
                    "triton": "CUDA tensors (or TRITON_INTERPRET=1) and Triton",
                    "cpu": "CPU tensors and numba"}[backend]
            why = f" ({_MISSING[backend]})" if backend in _MISSING else ""
            raise ValueError(f"selective_scan: backend={backend!r} needs {need}{why}")
        return backend, f"asked for by the {source}"
    order = ("cuda", "triton", "chunked") if cuda else ("cpu", "chunked")
    name = next(b for b in order if usable[b])
    skipped = [f"{b}: {_MISSING.get(b, 'not for ' + u.device.type + ' tensors')}"
               for b in order[:order.index(name)]]
    why = "the fastest here" + (f" ({'; '.join(skipped)})" if skipped else "")
    if skipped:
        _warn_once(name, why)
    return name, why


def _warn_once(name: str, why: str) -> None:
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(f"selective_scan falls back to the {name!r} implementation: {why}",
                      stacklevel=3)


def which_backend(u: torch.Tensor, backend: str = "auto") -> str:
    """The name of the implementation `selective_scan` runs for a tensor like `u`
    (backend_report says why)."""
    return backend_report(u, backend)[0]


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend: str = "auto"):
    """Selective scan with mamba-ssm's signature, run by the fastest usable implementation.

    backend: "auto" (default), or force "reference" (the loop above), "cpu" (numba), "cuda"
    (mamba-ssm), "triton" or "chunked" (plain torch, time in chunks).
    Returns out (batch, D, L), and the last state (batch, D, N) if return_last_state.
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    name = which_backend(u, backend)
    if name == "reference":
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                        return_last_state)
    if name == "cuda":
        return cuda_kernel()(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                             return_last_state)
    dtype_in = u.dtype
    if name == "cpu":                     # the kernel applies bias, softplus and the skip D
        y, last = cpu_kernel()(u, delta.to(work_dtype(u)), A, B, C, D, delta_bias, delta_softplus)
        D = None
    else:
        delta = _prologue(delta, delta_bias, delta_softplus, work_dtype(u))
        if name == "chunked":
            from ssmamba_lite.kernels.scan_chunked import selective_scan_chunked
            y, last = selective_scan_chunked(u, delta, A, B, C)
        else:
            y, last = triton_kernel()(u, delta, A, B, C)
    out = _epilogue(y, u.to(y.dtype), D, z, dtype_in)
    return (out, last) if return_last_state else out
