"""The selective scan: reference and numba kernel against mamba-ssm's `selective_scan_ref`."""

from __future__ import annotations

import itertools
import sys

import pytest
import torch

from ssmamba_lite.kernels.oracle import random_scan_inputs
from ssmamba_lite.scan import (
    selective_scan,
    selective_scan_reference,
    which_backend,
)


def check(a: torch.Tensor, b: torch.Tensor, name: str, tol: float = 1e-5) -> None:
    """Max abs difference, relative to the size of the values, must stay under tol."""
    assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item() / scale
    assert err <= tol, f"{name}: max abs error {err:.2e} (relative to {scale:.2g}) > {tol:.0e}"


def make_inputs(batch=2, dim=6, L=23, N=4, bc="shared", G=2, dtype=torch.float32, seed=0,
                big_delta=False):
    """Every argument of the scan, all in `dtype`, recording gradients. Δ ~ U(0, 1) and
    |A| ~ U(0.1, 1.1); big_delta: Δ ~ U(0, 20) and |A| ~ U(0.1, 2.6), Δ|A| up to 52."""
    return random_scan_inputs(batch, dim, L, N, bc=bc, G=G,
                              delta=("uniform", 0.0, 20.0 if big_delta else 1.0),
                              A=("uniform", 0.1, 2.6 if big_delta else 1.1), bias_std=0.5,
                              dtype=dtype, seed=seed, requires_grad=True)


def run(fn, inputs, options, **kw):
    """Forward + backward through a nonlinear loss of out and the last state."""
    for t in inputs.values():
        t.grad = None
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    extra = {k: inputs[k] for k in options if k in ("D", "z", "delta_bias")}
    out, last = fn(*args, **extra, delta_softplus="softplus" in options,
                   return_last_state=True, **kw)
    (out.sin().sum() + last.cos().sum()).backward()
    grads = {k: inputs[k].grad.clone() for k in inputs if inputs[k].grad is not None}
    return out.detach(), last.detach(), grads


OPTIONS = [(), ("D",), ("z",), ("delta_bias", "softplus"), ("D", "z", "delta_bias", "softplus")]


@pytest.mark.parametrize("bc", ["fixed", "shared", "grouped"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) or "plain")
@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_matches_mamba_ssm_oracle(oracle, impl, bc, options):
    inputs = make_inputs(bc=bc, L=23 if bc != "grouped" else 70, seed=len(options))
    want = run(oracle.selective_scan_ref, inputs, options)
    got = run(selective_scan, inputs, options, backend=impl)
    check(got[0], want[0], "out")
    check(got[1], want[1], "last state")
    assert set(got[2]) == set(want[2])
    for k in want[2]:
        check(got[2][k], want[2][k], f"d{k}", tol=2e-5)


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_against_oracle(oracle, seed):
    """Random sizes, including L not a multiple of the kernel's checkpoint chunk (64)."""
    g = torch.Generator().manual_seed(100 + seed)
    batch, dim, N = (int(torch.randint(1, k, (1,), generator=g)) for k in (4, 9, 17))
    L = int(torch.randint(1, 200, (1,), generator=g))
    bc = ["fixed", "shared", "grouped"][seed % 3]
    G = 1 if bc != "grouped" else [d for d in (1, 2, 4, 8) if dim % d == 0][-1]
    inputs = make_inputs(batch, dim, L, N, bc=bc, G=G, seed=seed)
    opts = OPTIONS[-1]
    want = run(oracle.selective_scan_ref, inputs, opts)
    got = run(selective_scan, inputs, opts, backend="cpu")
    for a, b, name in zip(got[:2], want[:2], ["out", "last"]):
        check(a, b, name)
    for k in want[2]:
        check(got[2][k], want[2][k], f"d{k}", tol=2e-5)


@pytest.mark.parametrize("bc", ["fixed", "shared", "grouped"])
@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_gradcheck_float64(impl, bc):
    inputs = make_inputs(batch=2, dim=4, L=9, N=3, bc=bc, dtype=torch.float64)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]

    def f(u, delta, A, B, C, D, z, delta_bias):
        out, last = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True,
                                   return_last_state=True, backend=impl)
        return out, last

    assert torch.autograd.gradcheck(f, tuple(inputs[n] for n in names), eps=1e-6, atol=1e-6)


def test_large_steps_stay_finite_and_exact(oracle):
    """Δ·|A| up to 50 per step: the state decays to ~0 at once, nothing overflows, and the
    kernel stays at least as close to a float64 computation as mamba-ssm's float32 oracle."""
    inputs = make_inputs(batch=2, dim=8, L=300, N=8, big_delta=True)
    prod = inputs["delta"].detach()[..., None] * inputs["A"].detach().abs()[None, :, None, :]
    assert prod.max() > 45, "the stress test must reach Δ·|A| close to 50"
    truth = run(selective_scan_reference, {k: v.detach().double().requires_grad_()
                                           for k, v in inputs.items()}, ("D",))
    want = run(oracle.selective_scan_ref, inputs, ("D",))
    got = run(selective_scan, inputs, ("D",), backend="cpu")
    for t in list(got[:2]) + list(got[2].values()):
        assert torch.isfinite(t).all()
    check(got[0], want[0], "out")
    for k in want[2]:
        ours = (got[2][k].double() - truth[2][k]).abs().max().item()
        theirs = (want[2][k].double() - truth[2][k]).abs().max().item()
        assert ours <= 1.5 * theirs + 1e-6, f"d{k}: error {ours:.2e} vs oracle's {theirs:.2e}"


def test_reference_equals_kernel_without_oracle():
    """Holds the two implementations of this repo together even where mamba-ssm is absent."""
    inputs = make_inputs(batch=3, dim=5, L=130, N=7, bc="grouped", G=5)
    a = run(selective_scan_reference, inputs, OPTIONS[-1])
    b = run(selective_scan, inputs, OPTIONS[-1], backend="cpu")
    check(b[0], a[0], "out")
    for k in a[2]:
        check(b[2][k], a[2][k], f"d{k}", tol=2e-5)


def test_low_precision_inputs_return_their_dtype():
    inputs = make_inputs(dtype=torch.bfloat16)
    args = [inputs[k].detach() for k in ("u", "delta", "A", "B", "C")]
    out = selective_scan(*args, backend="cpu")
    ref = selective_scan_reference(*args)
    assert out.dtype == torch.bfloat16
    check(out.float(), ref.float(), "bf16 out", tol=1e-2)


def test_dispatch_choices(monkeypatch):
    u = torch.zeros(1, 2, 3)
    assert which_backend(u) == "cpu"
    assert which_backend(u, "reference") == "reference"
    monkeypatch.setenv("SSMAMBA_SCAN", "reference")
    assert which_backend(u) == "reference"
    assert which_backend(u, "cpu") == "cpu", "an explicit argument wins over the environment"
    monkeypatch.setenv("SSMAMBA_SCAN", "bogus")
    with pytest.raises(ValueError, match="SSMAMBA_SCAN"):
        which_backend(u)
    with pytest.raises(ValueError, match="backend"):
        which_backend(u, "gpu")
    with pytest.raises(ValueError, match="cuda"):
        which_backend(u, "cuda")


def test_forced_reference_really_runs_the_reference(monkeypatch):
    import ssmamba_lite.scan as scan

    calls = []
    monkeypatch.setattr(scan, "selective_scan_reference",
                        lambda *a, **k: calls.append(1) or torch.zeros(()))
    monkeypatch.setenv("SSMAMBA_SCAN", "reference")
    inputs = make_inputs()
    scan.selective_scan(*[inputs[k].detach() for k in ("u", "delta", "A", "B", "C")])
    assert calls == [1]


BAD = [
    ("u", lambda i: i["u"][0], r"u must have shape \(batch, D, L\)"),
    ("delta", lambda i: i["delta"][:, :, :-1], r"delta must have shape \(2, 6, 23\)"),
    ("A", lambda i: i["A"][:-1], r"A must have shape \(D, N\) = \(6, N\)"),
    ("B", lambda i: i["B"][..., :-1], r"B must have shape"),
    ("C", lambda i: i["C"][:1], r"C must have shape"),
    ("D", lambda i: i["D"][:3], r"D must have shape \(6,\)"),
    ("z", lambda i: i["z"][:1], r"z must have shape \(2, 6, 23\)"),
    ("delta_bias", lambda i: i["delta_bias"][:2], r"delta_bias must have shape \(6,\)"),
    ("u", lambda i: i["u"].long(), r"u must be a floating tensor"),
    ("A", lambda i: torch.complex(i["A"], i["A"]), r"A must be real"),
]


@pytest.mark.parametrize("name,bad,msg", BAD, ids=[f"{b[0]}-{n}" for n, b in enumerate(BAD)])
@pytest.mark.parametrize("fn", [selective_scan, selective_scan_reference])
def test_shape_and_dtype_mistakes_name_the_argument(fn, name, bad, msg):
    inputs = {k: v.detach() for k, v in make_inputs().items()}
    inputs[name] = bad(inputs)
    with pytest.raises(ValueError, match=msg):
        fn(**inputs)


def test_grouped_equals_expanded():
    """(batch, G, N, L) means channel d reads group d // (D / G)."""
    inputs = {k: v.detach() for k, v in make_inputs(bc="grouped", G=3).items()}
    expanded = dict(inputs, B=inputs["B"].repeat_interleave(2, 1), C=inputs["C"].repeat_interleave(2, 1))
    a = selective_scan(**inputs)
    for b, c in itertools.product(range(2), range(6)):
        single = {k: (v[b:b + 1, c:c + 1] if k in ("u", "delta", "z") else v) for k, v in expanded.items()}
        single.update(A=inputs["A"][c:c + 1], D=inputs["D"][c:c + 1],
                      delta_bias=inputs["delta_bias"][c:c + 1],
                      B=expanded["B"][b:b + 1, c], C=expanded["C"][b:b + 1, c])
        check(selective_scan(**single)[0, 0], a[b, c], f"row {b},{c}")


def test_cuda_tensors_pick_mamba_ssm_kernel_when_present(monkeypatch):
    """Dispatch logic for CUDA tensors, checked without a GPU on a stand-in tensor."""
    import types

    import ssmamba_lite.scan as scan

    fake_cuda = types.SimpleNamespace(is_cuda=True, device=torch.device("cuda"))
    scan.forget_backends()
    monkeypatch.setattr(scan, "cuda_kernel", lambda: (lambda *a: "kernel"))
    assert scan.which_backend(fake_cuda) == "cuda"
    assert scan.which_backend(fake_cuda, "reference") == "reference"
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", None)       # not installed
    try:
        with pytest.warns(UserWarning, match="falls back to the 'triton'.*selective_scan_cuda"):
            assert scan.which_backend(fake_cuda) == "triton", "no mamba-ssm kernel: Triton"
        scan.forget_backends()
        monkeypatch.setitem(sys.modules, "triton", None)                # nor Triton
        monkeypatch.delitem(sys.modules, "ssmamba_lite.kernels.scan_triton", raising=False)
        with pytest.warns(UserWarning, match="falls back to the 'chunked'"):
            name, why = scan.backend_report(fake_cuda)
        assert name == "chunked" and "cuda: ModuleNotFoundError" in why, "never the L-step loop"
        with pytest.raises(ValueError, match="needs CPU tensors"):
            scan.which_backend(fake_cuda, "cpu")
        with pytest.raises(ValueError, match="backend='cuda' needs .*selective_scan_cuda"):
            scan.which_backend(fake_cuda, "cuda")
    finally:
        monkeypatch.undo()
        scan.forget_backends()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("bc", ["fixed", "shared", "grouped"])
def test_cuda_kernel_matches_reference(bc):
    from ssmamba_lite.scan import cuda_kernel

    if cuda_kernel() is None:
        pytest.skip("mamba-ssm is installed without its CUDA kernels")
    cpu = make_inputs(batch=2, dim=8, L=100, N=8, bc=bc, G=2)
    gpu = {k: v.detach().cuda().requires_grad_() for k, v in cpu.items()}
    assert which_backend(gpu["u"]) == "cuda"
    want = run(selective_scan, cpu, OPTIONS[-1], backend="reference")
    got = run(selective_scan, gpu, OPTIONS[-1])
    check(got[0].cpu(), want[0], "out", tol=1e-4)
    check(got[1].cpu(), want[1], "last state", tol=1e-4)
    for k in want[2]:
        check(got[2][k].cpu(), want[2][k], f"d{k}", tol=1e-3)
