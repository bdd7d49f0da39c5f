"""The Triton scan against the reference: run by tests/test_kernels.py in a process of its own.

    TRITON_INTERPRET=1 python -m pytest tests/triton_cases.py      (without a GPU)

Without a GPU the kernels must run in Triton's interpreter, which is chosen when Triton and the
kernels are first imported; the main test process may have imported Triton already (torch does,
for torch.compile), so these cases run in a fresh process. On a GPU they run compiled.
"""

from __future__ import annotations

import zlib

import pytest
import torch

from ssmamba_lite.kernels.oracle import random_scan_inputs
from ssmamba_lite.scan import selective_scan, selective_scan_reference


@pytest.fixture(scope="module")
def triton_scan():
    """The Triton kernel module and the device its tensors live on."""
    from ssmamba_lite.kernels import scan_triton

    return scan_triton, ("cuda" if torch.cuda.is_available() else "cpu")


def inputs(bc, batch=2, D=8, L=70, N=5, G=2, dtype=torch.float32, big=False, device="cpu"):
    """u, delta, A, B, C (no extras) with A in float32; big: Δ up to 40 (Δ|A| up to ~60), a
    stress test. The seed follows from the case (zlib.crc32, not hash(): str hashes change from
    process to process, PYTHONHASHSEED)."""
    return random_scan_inputs(batch, D, L, N, bc=bc, G=G,
                              delta=("uniform", 0.05, 40.05 if big else 0.55), extras=(),
                              dtype=dtype, param_dtype=torch.float32, device=device,
                              seed=zlib.crc32(repr((bc, L, N, big)).encode()), requires_grad=True)


def grads(fn, t):
    y, last = fn(t)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.device)
    wl = torch.randn(last.shape, generator=torch.Generator().manual_seed(2)).to(y.device)
    loss = (y.float() * w).sum() + (last.float() * wl).sum()
    return [y.float(), last.float(), *torch.autograd.grad(loss, list(t.values()))]


def reference(t):
    f32 = {k: v.detach().float().cpu().requires_grad_() for k, v in t.items()}
    out = grads(lambda x: selective_scan_reference(*x.values(), return_last_state=True), f32)
    return out


def close(got, want, tol, what):
    for name, a, b in zip(["y", "last", "du", "ddelta", "dA", "dB", "dC"], got, want):
        err = (a.float().cpu() - b).abs().max().item()
        scale = b.abs().max().item() + 1e-6
        assert err <= tol * scale, f"{what}: {name} off by {err:.2e} (max {scale:.2e})"


@pytest.mark.parametrize("bc", ["fixed", "shared", "grouped"])
def test_triton_matches_the_reference(triton_scan, bc):
    module, device = triton_scan
    t = inputs(bc, device=device)
    got = grads(lambda x: module.selective_scan_triton(*x.values()), t)
    close(got, reference(t), 2e-5, f"triton {bc}")


def test_triton_in_bfloat16_and_at_large_steps(triton_scan):
    module, device = triton_scan
    t = inputs("grouped", dtype=torch.bfloat16, device=device)
    got = grads(lambda x: module.selective_scan_triton(*x.values()), t)
    close(got, reference(t), 2e-2, "triton bf16 inputs, fp32 state")
    t = inputs("shared", big=True, L=33, device=device)
    got = grads(lambda x: module.selective_scan_triton(*x.values()), t)
    assert all(torch.isfinite(g).all() for g in got)
    close(got, reference(t), 1e-4, "triton, large steps")


def test_the_dispatcher_runs_triton_with_every_option(triton_scan):
    _, device = triton_scan
    t = random_scan_inputs(2, 8, 40, 4, bc="grouped", G=4,            # DMS's grouped layout
                           delta=("normal", 0.0, 1.0))                 # raw: softplus below
    a = selective_scan(**{k: v.to(device) for k, v in t.items()}, delta_softplus=True,
                       return_last_state=True, backend="triton")
    b = selective_scan(**t, delta_softplus=True, return_last_state=True, backend="reference")
    torch.testing.assert_close(a[0].cpu(), b[0], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(a[1].cpu(), b[1], atol=2e-5, rtol=1e-4)
