"""A Mamba block (Gu & Dao 2023), parameter-for-parameter the one of mamba-ssm.

`Mamba` has exactly the parameter names and shapes of `mamba_ssm.modules.mamba_simple.Mamba`,
so a state_dict loads both ways with strict=True. It runs everywhere: on CPU the scan is the
numba kernel of `kernels/scan_cpu.py`; on CUDA, mamba-ssm's and causal-conv1d's kernels when
installed.

Glossary (code name -> math; shapes in brackets; "Alg. 2" is Algorithm 2 of the Mamba paper,
"SSM + Selection (S6)")
    d_model      model width of the token stream x                   (batch, L, d_model)
    d_inner = D  expand * d_model: channels inside the block (Alg. 2's D)
    d_state = N  state size per channel (Alg. 2's N)
    dt_rank = R  rank of the low-rank projection that makes Δ (ceil(d_model / 16) by default)
    in_proj      x -> [x', z]                     (batch, L, 2D)     (Mamba's Figure 3)
    conv1d       causal depthwise conv over time, kernel d_conv, then SiLU
    x_proj       x' -> [δ (R), B_t (N), C_t (N)] per token: Alg. 2's s_B(x), s_C(x)
                 (lines 2-3) and the low-rank part of s_Δ(x): what makes the SSM *selective*
    dt_proj      Δ_t = softplus(W_Δ δ + b_Δ)      (batch, D, L)      Alg. 2 line 4, τ_Δ = softplus
    A_log        A = -exp(A_log)                  (D, N), negative so the state decays
    D            skip weights                     (D,)
    out_proj     D -> d_model

    out = out_proj( S6(x', Δ, A, B, C, D) · silu(z) )     with S6 as in scan.py (Alg. 2 lines 5-6)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmamba_lite.scan import selective_scan
from ssmamba_lite.ssm_init import dt_bias, s4d_real_a_log
from ssmamba_lite.tracing import tracing

_CONV: dict = {}             # causal-conv1d's function, or why it is not there


def causal_conv1d_kernel():
    """causal-conv1d's CUDA kernel, or None (the reason: conv_report())."""
    if not _CONV:
        try:
            import causal_conv1d_cuda  # noqa: F401  (the compiled extension itself)
            from causal_conv1d import causal_conv1d_fn
            _CONV["fn"] = causal_conv1d_fn
        except Exception as err:              # not installed, or without its kernel
            _CONV["missing"] = f"{type(err).__name__}: {err}".splitlines()[0]
    return _CONV.get("fn")


def conv_report() -> str:
    """Which causal convolution runs on CUDA tensors, and why."""
    if causal_conv1d_kernel() is not None:
        return "causal-conv1d's CUDA kernel"
    return f"F.conv1d (cuDNN) ({_CONV['missing']})"


def causal_depthwise_conv1d(x, weight, bias):
    """y_t = Σ_k w_k x_{t-k}: each channel mixes only its own past. x: (batch, D, L),
    weight: (D, 1, K). Followed by SiLU."""
    kernel = causal_conv1d_kernel() if x.is_cuda else None
    if kernel is not None:   # contiguous (batch, D, L), as mamba-ssm builds it: the kernel's
        # channel-last path (taken for a transposed view) needs D % 8 == 0
        return kernel(x.contiguous(), weight.squeeze(1), bias, activation="silu")
    L, K = x.shape[-1], weight.shape[-1]
    y = F.conv1d(x, weight, bias, padding=K - 1, groups=x.shape[1])[..., :L]  # drop the future
    return F.silu(y)


class Mamba(nn.Module):
    """Mamba mixer: (batch, L, d_model) -> (batch, L, d_model).

    scan_backend: "auto" (see scan.which_backend), "reference", "cpu" or "cuda".

    The arguments are mamba-ssm's `Mamba` (mamba_ssm/modules/mamba_simple.py), in its order,
    so that code written for it runs here and its weights load. Two of them only keep that
    signature and change nothing: `use_fast_path` (mamba-ssm's fused CUDA path; here
    scan_backend chooses the kernel) and `layer_idx` (mamba-ssm's key into its inference
    cache, which this block has none of). Both are stored, as mamba-ssm stores them.
    """

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001,
                 dt_max=0.1, dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True,
                 bias=False, use_fast_path=True, layer_idx=None, device=None, dtype=None,
                 scan_backend="auto"):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state                  # N
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path = use_fast_path      # mamba-ssm compatibility: not read here
        self.layer_idx = layer_idx              # mamba-ssm compatibility: not read here
        self.scan_backend = scan_backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **kw)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **kw)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **kw)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **kw)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **kw)

        # Δ's projection starts so that softplus(bias) is log-uniform in [dt_min, dt_max]
        # (ssm_init.py; Mamba's section 3.6).
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"Mamba: dt_init must be 'constant' or 'random', got {dt_init!r}")
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt_bias(self.d_inner, dt_min=dt_min, dt_max=dt_max,
                                            floor=dt_init_floor))
        self.dt_proj.bias._no_reinit = True

        # S4D-real initialisation: A_n = -(n + 1) for every channel (ssm_init.py).
        self.A_log = nn.Parameter(s4d_real_a_log(self.d_inner, d_state).to(device))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True

    def forward(self, hidden_states):
        if not tracing() and (hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model):
            raise ValueError(f"Mamba: input must have shape (batch, L, {self.d_model}), "
                             f"got {tuple(hidden_states.shape)}")
        xz = self.in_proj(hidden_states).transpose(1, 2)        # (batch, 2D, L)
        x, z = xz.chunk(2, dim=1)                               # x', z: (batch, D, L)
        x = causal_depthwise_conv1d(x, self.conv1d.weight, self.conv1d.bias)
        x_dbl = self.x_proj(x.transpose(1, 2))                  # (batch, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)     # W_Δ δ: (batch, D, L)
        A = -torch.exp(self.A_log.float())                      # A = -exp(A_log)
        y = selective_scan(
            x, dt, A, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
            self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
            backend=self.scan_backend)                          # (batch, D, L)
        return self.out_proj(y.transpose(1, 2))                 # (batch, L, d_model)
