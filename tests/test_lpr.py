"""LocalPerceptionResidual: x + DWConv(x), shape-preserving, per-channel, local."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmamba_lite.lpr import LocalPerceptionResidual


def test_lpr_is_x_plus_depthwise_conv():
    torch.manual_seed(0)
    lpr = LocalPerceptionResidual(6, kernel_size=5)
    x = torch.randn(2, 6, 7, 9)
    expected = x + F.conv2d(x, lpr.dwconv.weight, lpr.dwconv.bias, padding=2, groups=6)
    torch.testing.assert_close(lpr(x), expected)
    assert lpr(x).shape == x.shape


def test_lpr_starts_from_identity_when_branch_is_zero():
    lpr = LocalPerceptionResidual(4)
    torch.nn.init.zeros_(lpr.dwconv.weight)
    torch.nn.init.zeros_(lpr.dwconv.bias)
    x = torch.randn(1, 4, 5, 5)
    assert torch.equal(lpr(x), x)


def test_lpr_parameter_count_and_locality():
    C, k = 8, 3
    lpr = LocalPerceptionResidual(C, k)
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
