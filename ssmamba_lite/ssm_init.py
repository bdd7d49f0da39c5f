"""Where a selective scan's parameters start: Δ's bias and the state matrix A.

Both Mamba blocks (mamba.py) and DMS (dms.py) use these, so that "the same S6" means the same
numbers at step 0. Symbols as in scan.py's glossary.

Step size Δ (Mamba, Gu & Dao 2023, section 3.6 and its reference code):
    Δ_0 ~ log-uniform in [dt_min, dt_max]           how far each channel looks back at first:
                                                    a step of Δ forgets like exp(-Δ |A|)
    b_Δ = softplus^{-1}(Δ_0) = Δ_0 + log(1 - exp(-Δ_0))
so that Δ_t = softplus(W_Δ δ_t + b_Δ) starts near Δ_0 while W_Δ δ_t is small.

State matrix A (S4D-real, Gu et al. 2022, "On the parameterization and initialization of
diagonal state space models", eq. (7)):
    A_n = -(n + 1),  n = 0 .. N-1, the same for every channel
    A_log = log(-A)   stored instead of A, so that A = -exp(A_log) stays negative (the state
                      decays, never explodes) whatever the optimiser does to A_log.
"""

from __future__ import annotations

import math

import torch


def dt_bias(*shape: int, dt_min: float = 1e-3, dt_max: float = 0.1,
            floor: float = 1e-4) -> torch.Tensor:
    """b_Δ of the given shape: softplus^{-1} of Δ_0, log-uniform in [dt_min, dt_max]
    (clamped below at `floor`). Draws from torch's global generator."""
    dt = torch.exp(torch.rand(*shape) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=floor)             # Δ_0
    return dt + torch.log(-torch.expm1(-dt))                        # softplus^{-1}(Δ_0)


def s4d_real_a_log(channels: int, d_state: int) -> torch.Tensor:
    """A_log (channels, N) with A = -exp(A_log) = -(1, 2, ..., N) in every row (S4D-real)."""
    A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(channels, 1)
    return torch.log(A)
