"""Is the network being traced? The one question the modules' input checks ask first.

torch.fx (timm's feature extractor, `create_feature_extractor`) runs a module's forward on
symbolic proxies instead of tensors, and TorchScript compiles it without running it. Neither
can take a Python `if` on a shape, so every module of the network (lpr.py, dms.py, mamba.py,
model.py) skips its input check while `tracing()` is true. Eager mode and torch.compile run
the checks, with their one-line errors.

This is the lowest layer of the package: it imports torch only, so that any module may ask.
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True while torch.fx traces symbolically or TorchScript scripts: a Python `if` on a
    shape cannot run then, so the modules skip their input checks (eager mode and
    torch.compile keep them, with their one-line errors)."""
    fx = torch.fx._symbolic_trace             # is_fx_symbolic_tracing: newer torch, no warning
    fx_tracing = getattr(fx, "is_fx_symbolic_tracing", None) or fx.is_fx_tracing
    return fx_tracing() or torch.jit.is_scripting()
