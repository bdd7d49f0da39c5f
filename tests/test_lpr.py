"""LocalPerceptionResidual: x + DWConv(x), shape-preserving, per-channel, local."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmamba_lite.lpr import LocalPerceptionResidual


def test_lpr_is_x_plus_depthwise_conv():
    torch.manual_seed(0)
    lpr = LocalPerceptionResidual(6, kernel_size=5, zero_init=False)
    x = torch.randn(2, 6, 7, 9)
    expected = x + F.conv2d(x, lpr.dwconv.weight, lpr.dwconv.bias, padding=2, groups=6)
    torch.testing.assert_close(lpr(x), expected)
    assert lpr(x).shape == x.shape


def test_lpr_starts_as_the_identity_and_learns():
    torch.manual_seed(0)
    lpr = LocalPerceptionResidual(4)                     # zero_init=True by default
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(lpr(x), x)
    # ... yet its filters get a gradient, so training moves it away from the identity
    target = torch.randn_like(x)
    ((lpr(x) - target) ** 2).mean().backward()
    assert lpr.dwconv.weight.grad.abs().sum() > 0 and lpr.dwconv.bias.grad.abs().sum() > 0
    # PyTorch's default initialisation does not start at the identity: |DWConv(x)| ~ 0.6 |x|
    default = LocalPerceptionResidual(4, zero_init=False)
    ratio = (default(x) - x).norm() / x.norm()
    assert 0.2 < ratio < 1.5


def test_every_lpr_of_the_model_starts_as_the_identity():
    from ssmamba_lite.model import SSMamba

    net = SSMamba(dims=(8, 16), depths=(1, 1), conv_stages=1, num_classes=2)
    lprs = [m for m in net.modules() if isinstance(m, LocalPerceptionResidual)]
    assert len(lprs) == 2
    x = torch.randn(1, 8, 6, 6)
    assert all(torch.equal(m(x[:, :m.dim]), x[:, :m.dim]) for m in lprs if m.dim == 8)
    assert all(m.dwconv.weight.abs().sum() == 0 for m in lprs)
    old = SSMamba(dims=(8, 16), depths=(1, 1), conv_stages=1, num_classes=2, lpr_zero_init=False)
    assert all(m.dwconv.weight.abs().sum() > 0 for m in old.modules()
               if isinstance(m, LocalPerceptionResidual))


def test_lpr_parameter_count_and_locality():
    C, k = 8, 3
    lpr = LocalPerceptionResidual(C, k, zero_init=False)
    assert sum(p.numel() for p in lpr.parameters()) == C * (k * k + 1)
    # Local and per channel: a change at one pixel of channel 0 moves only its 3x3 neighbourhood
    # of channel 0.
    x = torch.randn(1, C, 9, 9)
    x2 = x.clone()
    x2[0, 0, 4, 4] += 10.0
    diff = (lpr(x2) - lpr(x)).abs() > 0
    assert diff[0, 1:].sum() == 0
    assert diff[0, 0].nonzero().min() >= 3 and diff[0, 0].nonzero().max() <= 5


def test_lpr_options_and_errors():
    lpr = LocalPerceptionResidual(4, norm=True, act=True)
    assert isinstance(lpr.norm, torch.nn.BatchNorm2d) and isinstance(lpr.act, torch.nn.GELU)
    assert lpr(torch.randn(2, 4, 3, 3)).shape == (2, 4, 3, 3)
    with pytest.raises(ValueError, match="odd"):
        LocalPerceptionResidual(4, kernel_size=4)
    with pytest.raises(ValueError, match=r"\(batch, 4, H, W\)"):
        lpr(torch.randn(2, 5, 3, 3))
