"""The Mamba block against mamba-ssm's own `Mamba`, and import hygiene."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ssmamba_lite.mamba import Mamba
from tests.test_scan import check


def twin_blocks(oracle, **kw):
    torch.manual_seed(0)
    theirs = oracle.Mamba(**kw)
    ours = Mamba(**kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def test_state_dict_loads_both_ways_strict(oracle):
    ours, theirs = twin_blocks(oracle, d_model=24, d_state=8)
    theirs.load_state_dict(Mamba(d_model=24, d_state=8).state_dict(), strict=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("kw", [dict(d_model=16, d_state=4), dict(d_model=32, d_state=16, d_conv=3,
                                                                   expand=1.5, dt_rank=5)])
def test_same_output_and_gradients_as_mamba_ssm(oracle, kw, backend):
    ours, theirs = twin_blocks(oracle, **kw)
    ours.scan_backend = backend
    x = torch.randn(3, 41, kw["d_model"])
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    check(ya, yb, "output")
    (ya.tanh().sum()).backward()
    (yb.tanh().sum()).backward()
    check(xa.grad, xb.grad, "d input")
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        check(p.grad, theirs_params[name].grad, f"d {name}", tol=2e-5)


def test_causal():
    """Changing a later token never changes an earlier output."""
    torch.manual_seed(0)
    block = Mamba(d_model=8, d_state=4)
    x = torch.randn(1, 30, 8)
    y = block(x)
    x2 = x.clone()
    x2[:, 20:] += 1.0
    y2 = block(x2)
    assert torch.equal(y[:, :20], y2[:, :20])
    assert not torch.allclose(y[:, 20:], y2[:, 20:])


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"Mamba: input must have shape \(batch, L, 8\)"):
        Mamba(d_model=8)(torch.zeros(2, 5, 7))


def test_import_touches_no_cuda_and_no_mamba_ssm():
    code = (
        "import sys, torch, ssmamba_lite\n"
        "assert 'mamba_ssm' not in sys.modules, 'mamba_ssm imported eagerly'\n"
        "assert 'causal_conv1d' not in sys.modules\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised at import'\n"
        "print('clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr
