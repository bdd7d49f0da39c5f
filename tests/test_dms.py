"""DirectionalMultiScale: scan orders, per-direction scans equal to a plain loop, fusion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmamba_lite.dms import (
    NUM_ORDERS,
    DirectionalMultiScale,
    DirectionalScan,
    inverse_scan_order,
    scan_order,
)
from ssmamba_lite.scan import selective_scan_reference

SIZES = [(3, 5), (5, 3), (4, 7), (6, 9), (1, 6)]


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("direction", range(NUM_ORDERS))
def test_scan_order_inverse_round_trip(h, w, direction):
    order = scan_order(h, w, direction, window=2)
    inv = inverse_scan_order(h, w, direction, window=2)
    assert order.dtype == torch.long and order.shape == (h * w,)
    assert torch.equal(order.sort().values, torch.arange(h * w))       # a permutation
    x = torch.randn(2, h * w)
    assert torch.equal(x[:, order][:, inv], x)                            # back to image order
    assert torch.equal(inv[order], torch.arange(h * w))


def test_scan_orders_are_the_documented_paths():
    h, w = 3, 4
    img = torch.arange(h * w).view(h, w)
    assert torch.equal(scan_order(h, w, 0), img.flatten())                 # row-major
    assert torch.equal(scan_order(h, w, 1), img.t().flatten())             # column-major
    assert torch.equal(scan_order(h, w, 2), img.flatten().flip(0))
    assert torch.equal(scan_order(h, w, 3), img.t().flatten().flip(0))
    # windowed: the first 2x2 tile first, row-major inside it; then the next tile to the right
    assert scan_order(h, w, 4, window=2)[:8].tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    assert scan_order(h, w, 5, window=2)[:8].tolist() == [0, 4, 1, 5, 8, 9, 2, 6]
    orders = {tuple(scan_order(5, 6, k, window=2).tolist()) for k in range(NUM_ORDERS)}
    assert len(orders) == NUM_ORDERS                                      # all different
    with pytest.raises(ValueError, match="direction"):
        scan_order(3, 4, NUM_ORDERS)


@pytest.mark.parametrize("split_channels", [False, True])
def test_directional_scan_equals_one_reference_scan_per_direction(split_channels):
    """The K directions stacked along channels (one grouped kernel call) give exactly what K
    separate scans with each direction's own parameters give; with split, direction k reads
    only its own slice of channels."""
    torch.manual_seed(0)
    D, N, R, h, w = 12, 4, 2, 3, 5
    dirs = (0, 1, 2, 3, 4, 7)
    K = len(dirs)
    scan = DirectionalScan(D, dirs, d_state=N, dt_rank=R, window=2, split_channels=split_channels)
    Dk = D // K if split_channels else D
    with torch.no_grad():
        scan.A_log.add_(torch.rand_like(scan.A_log))            # make directions differ
        scan.D.add_(torch.randn_like(scan.D))
    x = torch.randn(2, D, h, w)
    got = scan(x)                                               # (2, K, Dk, h, w)
    assert got.shape == (2, K, Dk, h, w)
    A = -torch.exp(scan.A_log).view(K, Dk, N)
    for k, direction in enumerate(dirs):
        order = scan_order(h, w, direction, window=2)
        xk = x[:, k * Dk:(k + 1) * Dk] if split_channels else x
        u = xk.flatten(2)[:, :, order]                          # (2, Dk, L) in scan order
        x_dbl = torch.einsum("bdl,cd->bcl", u, scan.x_proj_weight[k])
        dt, B, C = torch.split(x_dbl, [R, N, N], dim=1)
        dt = torch.einsum("brl,dr->bdl", dt, scan.dt_proj_weight[k])
        y = selective_scan_reference(u, dt, A[k], B, C, scan.D.view(K, Dk)[k],
                                     delta_bias=scan.dt_proj_bias[k], delta_softplus=True)
        expected = torch.empty_like(y)
        expected[:, :, order] = y                               # back to image order
        torch.testing.assert_close(got[:, k].flatten(2), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        DirectionalScan(10, 4, split_channels=True)


def test_row_major_scan_is_causal_and_reverse_sees_the_future():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 6, 7)
    x2 = x.clone()
    x2[..., -1, -1] += 5.0                                      # change the last pixel only
    forward_only = DirectionalMultiScale(8, directions=(0,), scales=(1,))
    both = DirectionalMultiScale(8, directions=(0, 2), scales=(1,))
    with torch.no_grad():
        d1 = (forward_only(x2) - forward_only(x)).abs()[0].amax(0)  # (H, W)
        d2 = (both(x2) - both(x)).abs()[0].amax(0)
    assert d1[:4].max() == 0            # rows before the change are never reached (3x3 conv aside)
    assert d1[-1, -1] > 0
    assert d2[0, 0] > 0                 # the reversed scan carries it to the top-left corner


@pytest.mark.parametrize("split_channels", [False, True])
def test_dms_shapes_parameters_and_fusion(split_channels):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 6, 10, requires_grad=True)
    counts = {}
    for dirs in (1, 2, 4):
        for scales in ((1,), (1, 2), (1, 2, 3)):
            m = DirectionalMultiScale(16, directions=dirs, scales=scales, d_state=4, split_channels=split_channels)
            counts[dirs, scales] = sum(p.numel() for p in m.parameters())
            y = m(x)
            assert y.shape == x.shape
            w = m.fusion_weights()
            assert w.shape == (len(scales), dirs)
            torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    if split_channels:   # directions share out the channels: only the fusion logits a_{s,k} grow with K
        assert counts[4, (1, 2)] - counts[1, (1, 2)] == 2 * (4 - 1)
    else:       # every direction brings a full set of scan parameters
        D, R, N = 16, 1, 4   # per direction: W_x, W_Δ, b_Δ, A_log, D, and one fusion logit
        per_direction = (R + 2 * N) * D + D * R + D + D * N + D + 1
        assert counts[2, (1,)] - counts[1, (1,)] == per_direction
        assert counts[4, (1,)] - counts[2, (1,)] == 2 * per_direction
    assert counts[4, (1,)] < counts[4, (1, 2)] < counts[4, (1, 2, 3)]
    # each extra scale brings one more DirectionalScan of the same size
    assert counts[4, (1, 2, 3)] - counts[4, (1, 2)] == counts[4, (1, 2)] - counts[4, (1,)]
    m = DirectionalMultiScale(16, directions=2, scales=(1, 2), fuse="concat", split_channels=split_channels)
    assert m.fuse_proj.in_channels == (2 * 16 if split_channels else 2 * 2 * 16)
    y = m(x)
    y.sum().backward()
    assert y.shape == x.shape and torch.isfinite(x.grad).all()


def test_coarse_scale_scans_the_pooled_map():
    """Scale s scans the map average-pooled by s (ceil for sizes s does not divide)."""
    torch.manual_seed(0)
    m = DirectionalMultiScale(4, directions=1, scales=(1, 2), d_state=2)
    seen = {}

    def keep(key, which):
        def hook(mod, inp, out):
            seen[key] = out if which == "out" else inp[0]
        return hook

    m.conv.register_forward_hook(keep("conv", "out"))
    for i in (0, 1):
        m.scans[i].register_forward_hook(keep(i, "in"))
    m(torch.randn(1, 4, 6, 8))
    x = F.silu(seen["conv"])
    assert torch.equal(seen[0], x)
    torch.testing.assert_close(seen[1], F.avg_pool2d(x, 2))
    seen.clear()
    m(torch.randn(1, 4, 7, 9))
    assert seen[1].shape[-2:] == (4, 5)


def test_dms_errors():
    with pytest.raises(ValueError, match="directions"):
        DirectionalMultiScale(8, directions=0)
    with pytest.raises(ValueError, match="scales"):
        DirectionalMultiScale(8, scales=(0,))
    with pytest.raises(ValueError, match="fuse"):
        DirectionalMultiScale(8, fuse="max")
    with pytest.raises(ValueError, match=r"\(batch, 8, H, W\)"):
        DirectionalMultiScale(8)(torch.randn(1, 4, 4, 4))


def test_training_after_inference_mode_at_the_same_size():
    """The scan-order cache filled under torch.inference_mode (as feature extraction does) still
    serves training: inference tensors cannot be saved for backward."""
    torch.manual_seed(0)
    dms = DirectionalMultiScale(8, directions=4, scales=(1,))
    x = torch.randn(2, 8, 7, 5)                       # a size no other test uses
    with torch.inference_mode():
        dms(x)
    dms(x.requires_grad_()).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
