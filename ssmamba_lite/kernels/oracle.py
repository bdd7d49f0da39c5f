"""Referees for the scans: mamba-ssm's own reference code, and random inputs to feed them.

Tests, benchmarks and notebooks hold this library's scans to two things, both found here:

    load_mamba_ssm_oracle()   mamba-ssm's pure-PyTorch `selective_scan_ref` and its `Mamba`
                              block, importable on a machine without mamba-ssm's compiled
                              CUDA extension (None when mamba-ssm is not installed)
    random_scan_inputs(...)   random arguments of `selective_scan`, the one maker of them

mamba-ssm is imported inside `load_mamba_ssm_oracle` only (it takes seconds); this module
itself imports torch and the standard library, nothing else.

Glossary of `random_scan_inputs` (symbols as in `ssmamba_lite.scan`; shapes in brackets)
    batch, D, L, N    sequences, channels, sequence length, state size
    bc                the shape of B and C:
                        "fixed"    (D, N)              the same for every item and step
                        "shared"   (batch, N, L)       one B_t, C_t for all channels (Mamba)
                        "grouped"  (batch, G, N, L)    G groups; channel d reads d // (D / G)
    G                 groups of the grouped shape (must divide D; unused otherwise)
    delta             how Δ is drawn, a distribution (below); the step itself when positive
                      ("uniform"), or the raw value to add delta_bias to and pass through
                      softplus (delta_softplus=True) when it can be negative ("normal")
    A                 how |A| is drawn (a distribution); A = -|A| < 0          (D, N)
    extras            which optional arguments to add, of "D" (the skip, (D,)), "z" (the
                      gate, (batch, D, L)) and "delta_bias" ((D,))
    bias_std          delta_bias ~ N(0, bias_std²)
    dtype             dtype of the activations u, delta, B, C, z
    param_dtype       dtype of the parameters A, D, delta_bias (None: `dtype`); float32 with a
                      low-precision `dtype` is how mamba-ssm runs under autocast
    device            where the tensors are put (they are always drawn on the CPU, so one seed
                      gives the same numbers on every device)
    seed              an int, or a torch.Generator to draw from (and advance)
    requires_grad     return leaf tensors that record gradients

A distribution is a tuple (kind, a, b):
    ("uniform", low, high)     U(low, high)
    ("normal", mean, std)      N(mean, std²)
    ("lognormal", mean, std)   exp(N(mean, std²)): positive, spread over orders of magnitude

u, B, C, D and z are standard normal. The draws come in one fixed order, u, delta, A, B, C,
then D, z, delta_bias (those asked for), so a seed fixes every value, and a call without some
of the extras draws the same u ... C as one with them.
"""

from __future__ import annotations

import functools
import sys
import types

import torch

BC_SHAPES = ("fixed", "shared", "grouped")   # the shapes of B and C (module docstring)
EXTRAS = ("D", "z", "delta_bias")
DISTRIBUTIONS = ("uniform", "normal", "lognormal")


@functools.cache
def load_mamba_ssm_oracle():
    """Import mamba-ssm's pure-PyTorch reference code on a machine without its CUDA kernels.

    Without the compiled extension `import mamba_ssm` fails ("No module named
    'selective_scan_cuda'"). We register an empty stand-in for it, make mamba-ssm's `Mamba`
    take its non-fused path (no causal_conv1d_fn) and route its scan to `selective_scan_ref`.
    Returns a namespace with `selective_scan_ref` and `Mamba`, or None when mamba-ssm is absent.
    Where the extension is installed, mamba-ssm is left as it is.
    """
    try:
        import selective_scan_cuda  # noqa: F401
        have_kernels = True
    except ImportError:
        have_kernels = False
        sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
    try:
        from mamba_ssm.modules import mamba_simple
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    except ImportError:
        return None
    if not have_kernels:
        mamba_simple.causal_conv1d_fn = None
        mamba_simple.selective_scan_fn = selective_scan_ref
    return types.SimpleNamespace(selective_scan_ref=selective_scan_ref, Mamba=mamba_simple.Mamba)


def _draw(spec: tuple, shape: tuple, generator: torch.Generator) -> torch.Tensor:
    """A float32 CPU tensor of `shape` from the distribution `spec` (see the module docstring)."""
    kind, a, b = spec
    if kind == "uniform":
        return torch.rand(*shape, generator=generator) * (b - a) + a
    if kind == "normal":
        return torch.randn(*shape, generator=generator) * b + a
    if kind == "lognormal":
        return torch.exp(torch.randn(*shape, generator=generator) * b + a)
    raise ValueError(f"random_scan_inputs: a distribution is (kind, a, b) with kind one of "
                     f"{DISTRIBUTIONS}, got {spec!r}")


def random_scan_inputs(batch: int, D: int, L: int, N: int, *, bc: str = "shared", G: int = 2,
                       delta: tuple = ("uniform", 0.05, 0.55), A: tuple = ("uniform", 0.5, 1.5),
                       extras=EXTRAS, bias_std: float = 1.0, dtype=torch.float32,
                       param_dtype=None, device="cpu", seed: int | torch.Generator = 0,
                       requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """Random arguments of `selective_scan`: {"u", "delta", "A", "B", "C"} and the `extras`,
    in the signature's order (so `fn(*inputs.values())` passes u, delta, A, B, C by position).

    Every argument is described in the module docstring. The defaults: positive steps
    Δ ~ U(0.05, 0.55), |A| ~ U(0.5, 1.5), B and C shared by the channels, all extras.
    """
    if bc not in BC_SHAPES:
        raise ValueError(f"random_scan_inputs: bc must be one of {BC_SHAPES}, got {bc!r}")
    if bc == "grouped" and (G < 1 or D % G):
        raise ValueError(f"random_scan_inputs: G = {G} groups must divide D = {D}")
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise ValueError(f"random_scan_inputs: extras are some of {EXTRAS}, got {sorted(unknown)}")
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    bc_shape = {"fixed": (D, N), "shared": (batch, N, L), "grouped": (batch, G, N, L)}[bc]
    t = {"u": torch.randn(batch, D, L, generator=g),
         "delta": _draw(delta, (batch, D, L), g),
         "A": -_draw(A, (D, N), g),
         "B": torch.randn(*bc_shape, generator=g),
         "C": torch.randn(*bc_shape, generator=g)}
    if "D" in extras:
        t["D"] = torch.randn(D, generator=g)
    if "z" in extras:
        t["z"] = torch.randn(batch, D, L, generator=g)
    if "delta_bias" in extras:
        t["delta_bias"] = torch.randn(D, generator=g) * bias_std
    params = ("A", "D", "delta_bias")
    return {k: v.to(device, (param_dtype or dtype) if k in params else dtype)
            .requires_grad_(requires_grad) for k, v in t.items()}
