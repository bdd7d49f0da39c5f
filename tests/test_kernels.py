"""The Triton scan, the chunked torch scan and the numba kernels, held to their references.

Without a GPU the Triton kernels run in Triton's interpreter (TRITON_INTERPRET=1) on CPU
tensors, in a process of their own (tests/triton_cases.py): small shapes, the same code a GPU
compiles. Each case checks the output, the last state and the gradients of every input, for
fixed, shared and grouped B/C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
import torch

from ssmamba_lite import scan
from ssmamba_lite.kernels.scan_chunked import selective_scan_chunked
from tests import triton_cases
from tests.conftest import REPO
from tests.triton_cases import close, grads, inputs, reference


def expected_cases(module) -> dict[str, int]:
    """Test function of `module` -> how many cases pytest makes of it (its parametrizations)."""
    counts = {}
    for name, fn in vars(module).items():
        if name.startswith("test_") and callable(fn):
            counts[name] = 1
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "parametrize":
                    counts[name] *= len(mark.args[1])
    return counts


def case_outcomes(junit_xml: Path) -> dict[str, str]:
    """Test case id -> 'passed', 'skipped', 'failure' or 'error', from pytest's JUnit report."""
    outcomes = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        outcomes[case.get("name")] = kinds[0] if kinds else "passed"
    return outcomes


@pytest.mark.slow
def test_the_triton_kernels_match_the_reference(tmp_path):
    """Every case of tests/triton_cases.py runs in a fresh process and passes: none skipped,
    none missing (a case that is not collected or not run fails this test too)."""
    pytest.importorskip("triton")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    report = tmp_path / "triton_cases.xml"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={report}", str(REPO / "tests" / "triton_cases.py")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    outcomes = case_outcomes(report)
    not_passed = {case: kind for case, kind in outcomes.items() if kind != "passed"}
    assert not not_passed, f"Triton cases that did not pass: {not_passed}\n{r.stdout[-2000:]}"
    ran = Counter(case.partition("[")[0] for case in outcomes)
    assert ran == Counter(expected_cases(triton_cases)), \
        f"cases run {dict(ran)}, defined {expected_cases(triton_cases)}"


@pytest.mark.parametrize("bc", ["fixed", "shared", "grouped"])
def test_chunked_matches_the_reference(bc):
    t = inputs(bc, L=45)
    got = grads(lambda x: selective_scan_chunked(*x.values(), chunk=16), t)
    close(got, reference(t), 2e-5, f"chunked {bc}")
    t = inputs(bc, L=37, big=True)
    got = grads(lambda x: selective_scan_chunked(*x.values(), chunk=8), t)
    assert all(torch.isfinite(g).all() for g in got), "large steps overflow nothing"
    close(got, reference(t), 1e-4, f"chunked {bc}, large steps")


def test_without_numba_cpu_tensors_take_the_chunked_scan(monkeypatch):
    scan.forget_backends()
    monkeypatch.setitem(sys.modules, "numba", None)                     # not installed
    monkeypatch.delitem(sys.modules, "ssmamba_lite.kernels.scan_cpu", raising=False)
    try:
        u = torch.zeros(1, 2, 3)
        with pytest.warns(UserWarning, match="falls back to the 'chunked'.*cpu: .*numba"):
            assert scan.which_backend(u) == "chunked"
        assert scan.which_backend(u, "reference") == "reference"
    finally:
        monkeypatch.undo()
        scan.forget_backends()


@pytest.mark.slow
def test_gpu_check_runs_here_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: `make gpu-check` runs the full check")
    pytest.importorskip("triton")
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "no CUDA GPU" in r.stdout and "all checks passed" in r.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {row["backend"] for row in report["parity"]} == {"triton", "chunked"}
    assert all(row["ok"] for row in report["parity"]) and (tmp_path / "gpu_check.md").is_file()


@pytest.mark.parametrize("bc", ["fixed", "shared", "grouped"])
def test_numba_kernels_are_the_same_for_any_channel_blocking(bc):
    """The kernels split a batch item's channels into blocks (one job each; channels in the
    vector lanes) and sum the blocks' ∂B, ∂C: blocks of 8, 3 and 1 channels of a batch of one
    give the same outputs and gradients."""
    import numpy as np

    from ssmamba_lite.kernels import scan_cpu
    from ssmamba_lite.kernels.bc_order import to_kernel_order

    t = inputs(bc, batch=1, D=8, L=70, N=4, dtype=torch.float64)
    A = t["A"].double()
    Bk, Ck = to_kernel_order(t["B"], torch.float64), to_kernel_order(t["C"], torch.float64)
    lanes = [x.detach().transpose(1, 2).contiguous().numpy() for x in (t["u"], t["delta"])]
    arrays = lanes + [x.detach().contiguous().numpy() for x in (A, Bk, Ck)]
    arrays.append(np.linspace(-1.0, 1.0, 8))                       # the skip D
    step = (np.linspace(-0.5, 0.5, 8), True)                       # bias, softplus
    rng = np.random.default_rng(0)
    dy, dlast = rng.normal(size=arrays[0].shape), rng.normal(size=(1, 8, 4))
    results = []
    for width in (8, 3, 1):
        fwd = scan_cpu.forward_kernel(*arrays, scan_cpu.CHUNK, *step, width)
        bwd = scan_cpu.backward_kernel(*arrays, *step, fwd[2], dy, dlast, scan_cpu.CHUNK, width)
        results.append(fwd + bwd)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_a_small_batch_gets_a_job_for_every_thread():
    import numba

    from ssmamba_lite.kernels.scan_cpu import WIDTH, channels_per_job

    threads = numba.get_num_threads()
    for batch, dim, groups in ((1, 384, 1), (1, 192, 1), (1, 8, 4), (8, 192, 1), (3, 1000, 1)):
        width = channels_per_job(batch, dim, groups, groups)
        unit = dim // groups
        jobs = batch * groups * -(-unit // width)
        assert 1 <= width <= min(WIDTH, unit), (batch, dim, width)
        assert jobs >= min(threads, batch * dim), (batch, dim, width, jobs)


def test_float32_exp_of_the_scan_kernels():
    """`exp_f32` (the kernels' vectorisable exp) is within 2.5e-7 relative error of exp (two
    float32 rounding steps), and 3.1e-7 of torch.exp (its own rounding added), wherever exp
    is a normal number below 88.37, the decay's large |ΔA| included; gives inf from 88.38 on,
    keeps NaN; float64 kernels keep the C library's exp."""
    import numpy as np
    from numba import njit

    from ssmamba_lite.kernels.vecmath import decay_exp

    @njit
    def apply(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = decay_exp(x[i])
        return out

    x = np.linspace(-87.0, 88.37, 400_001).astype(np.float32)
    got, want = apply(x), np.exp(x.astype(np.float64))
    assert got.dtype == np.float32
    assert np.max(np.abs(got - want) / want) < 2.5e-7                # float32's eps: 1.19e-7
    by_torch = torch.exp(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(got - by_torch) / by_torch) < 3.1e-7        # + torch's own rounding
    assert apply(np.float32([0.0]))[0] == 1.0
    special = apply(np.float32([np.nan, np.inf, 89.0, 88.38, -np.inf, -100.0]))
    assert np.isnan(special[0]) and (special[1:4] == np.inf).all()
    assert 0 <= special[4] < 2e-38 and 0 <= special[5] < 2e-38       # (exp: 0 or a denormal)
    x64 = np.linspace(-50, 50, 1001)
    np.testing.assert_allclose(apply(x64), np.exp(x64), rtol=1e-15)   # float64 accuracy


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softplus_and_its_slope_in_the_kernels(dtype):
    """The kernels' softplus(δ + b) and its derivative equal PyTorch's F.softplus and its
    gradient (threshold 20 included): float32 within 4e-7 relative (the exp's 2.5e-7 and
    roundings), float64 to rounding."""
    import numpy as np
    from numba import njit

    from ssmamba_lite.kernels.vecmath import sigmoid, softplus

    @njit
    def apply(x):
        out, slope = np.empty_like(x), np.empty_like(x)
        for i in range(x.size):
            out[i], slope[i] = softplus(x[i]), sigmoid(x[i])
        return out, slope

    x = np.concatenate([np.linspace(-80, 40, 300_001), [0.0, 20.0, 20.001, 1e-30]])
    x = x.astype(dtype)
    got, slope = apply(x)
    assert got.dtype == slope.dtype == x.dtype
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    want = torch.nn.functional.softplus(xt)
    want.sum().backward()
    tol = 4e-7 if dtype == "float32" else 1e-15
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=tol, atol=0)
    np.testing.assert_allclose(slope, xt.grad.numpy(), rtol=tol, atol=tol)
    assert np.isnan(apply(np.array([np.nan], dtype))[0][0])


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_conv_weight_gradient_kernel(layout, bias, monkeypatch):
    """DepthwiseConv2d (the conv mixer's 7 x 7 filters) has nn.Conv2d's parameters and
    gradients; its weight gradient on CPU comes from the numba kernel (counted here)."""
    import torch.nn as nn

    from ssmamba_lite.kernels import dwconv_cpu
    from ssmamba_lite.layers.dwconv import DepthwiseConv2d

    calls = []
    kernel = dwconv_cpu.weight_grad_kernel
    monkeypatch.setattr(dwconv_cpu, "weight_grad_kernel",
                        lambda *a: calls.append(1) or kernel(*a))
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        torch.manual_seed(0)
        ref = nn.Conv2d(6, 6, 7, padding=3, groups=6, bias=bias).to(dtype)
        ours = DepthwiseConv2d(6, 7, bias=bias).to(dtype)
        ours.load_state_dict(ref.state_dict())
        assert ours.state_dict().keys() == ref.state_dict().keys()
        fmt = getattr(torch, layout if layout == "channels_last" else "contiguous_format")
        x = torch.randn(3, 6, 9, 11, dtype=dtype).contiguous(memory_format=fmt)
        g = torch.randn(3, 6, 9, 11, dtype=dtype)
        xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr, yo = ref(xr), ours(xo)
        torch.testing.assert_close(yo, yr, rtol=tol, atol=tol)
        yr.backward(g)
        yo.backward(g)
        for a, b in [(xo.grad, xr.grad), (ours.weight.grad, ref.weight.grad)] + (
                [(ours.bias.grad, ref.bias.grad)] if bias else []):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol * b.abs().max().item())
    assert len(calls) == 2, "the numba kernel computed the weight gradients"
    with torch.no_grad():                                  # inference: PyTorch's path alone
        ours(x)
    assert len(calls) == 2
