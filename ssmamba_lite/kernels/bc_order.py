"""B and C in the memory order the scan kernels read (numba and Triton alike).

`selective_scan` accepts B (and C) in three shapes; the kernels read one:

    (D, N)            fixed: the same for every item and step   -> (1, D, 1, N)
    (batch, N, L)     shared by all channels                    -> (batch, 1, L, N)
    (batch, G, N, L)  G groups; channel d reads group d // (D/G) -> (batch, G, L, N)

i.e. (Bb, G, Lb, N) with Bb in {1, batch} and Lb in {1, L}; a kernel reads item
min(b, Bb - 1), group d // (D / G), step min(t, Lb - 1), and its innermost loop over n reads
contiguous memory. Plain torch ops: autograd carries a kernel-order gradient back to the
caller's shape.
"""

from __future__ import annotations

import torch


def to_kernel_order(M: torch.Tensor, dtype) -> torch.Tensor:
    """B or C in any of the three accepted shapes -> contiguous (Bb, G, Lb, N) in `dtype`."""
    if M.dim() == 2:                      # (D, N): one group per channel, constant in time
        M = M[None, :, None, :]
    elif M.dim() == 3:                    # (batch, N, L): one group
        M = M.transpose(1, 2)[:, None]
    else:                                 # (batch, G, N, L)
        M = M.transpose(2, 3)
    return M.to(dtype).contiguous()
