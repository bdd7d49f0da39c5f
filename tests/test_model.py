"""SSMamba: config switches, input sizes, timm conventions, safetensors, determinism, CUDA path."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch

import ssmamba_lite
from ssmamba_lite.dms import DirectionalMultiScale
from ssmamba_lite.engine.checkpoint import load_weights, save_weights
from ssmamba_lite.layers.mixers import Attention2d, ConvMixer
from ssmamba_lite.lpr import LocalPerceptionResidual
from ssmamba_lite.mamba import Mamba
from ssmamba_lite.model import SSMamba, SSMambaConfig, nearest_valid_sizes
from ssmamba_lite.scan import cuda_kernel, which_backend

# A narrow network with the preset's layout: fast enough to test many sizes on two cores.
MINI = dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), d_state=4, num_classes=5,
            drop_path_rate=0.0)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def mini(**kw) -> SSMamba:
    return SSMamba(SSMambaConfig(**{**MINI, **kw}))


def test_import_does_not_touch_cuda_or_mamba_ssm():
    code = ("import sys, torch, ssmamba_lite; "
            "assert 'mamba_ssm' not in sys.modules, 'mamba_ssm imported'; "
            "assert 'numba' not in sys.modules, 'numba imported (kernels load on first use)'; "
            "assert not torch.cuda.is_initialized(), 'CUDA initialised'; "
            "import timm; assert 'ssmamba_lite_tiny' in timm.list_models('ssmamba_lite*')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_timm_create_model_and_conventions():
    torch.manual_seed(0)
    m = timm.create_model("ssmamba_lite_tiny", num_classes=9)
    assert isinstance(m, ssmamba_lite.SSMamba) and m.num_classes == 9
    assert 5e6 <= n_params(m) <= 8e6, n_params(m)
    assert m.pretrained_cfg["classifier"] == "head" and m.default_cfg is m.pretrained_cfg
    assert m.pretrained_cfg["input_size"] == (3, 224, 224)
    x = torch.randn(2, 3, 64, 96)
    feats = m.forward_features(x)
    assert feats.shape == (2, 384, 2, 3)
    assert m.forward_head(feats, pre_logits=True).shape == (2, 384)
    assert m(x).shape == (2, 9)
    m.reset_classifier(4)
    assert m(x).shape == (2, 4) and m.get_classifier().out_features == 4
    m.reset_classifier(0)
    assert m(x).shape == (2, 384)
    assert "stages.2.blocks.0.mixer.scans.0.A_log" in m.no_weight_decay()
    feats = timm.create_model("ssmamba_lite_tiny", features_only=True)
    assert [f.shape[1:] for f in feats(x)] == [(48, 16, 24), (96, 8, 12), (192, 4, 6), (384, 2, 3)]
    small = timm.create_model("ssmamba_lite_small")
    assert n_params(small) > 2 * n_params(m)


def test_switches_change_parameters_as_documented():
    base = mini()
    cfg = base.cfg
    # use_lpr=False removes C * (k*k + 1) parameters per block and every LPR module
    no_lpr = mini(use_lpr=False)
    k = cfg.lpr_kernel
    expected = sum(c * (k * k + 1) * d for c, d in zip(cfg.dims, cfg.depths))
    assert n_params(base) - n_params(no_lpr) == expected
    assert not any(isinstance(m, LocalPerceptionResidual) for m in no_lpr.modules())
    # directions: with split channels (default) only the fusion logits grow (K per scale and
    # DMS block); without, every direction brings its own scan parameters
    n_dms = sum(isinstance(x, DirectionalMultiScale) for x in base.modules())
    assert n_dms == 2 and cfg.split_channels
    p = [n_params(mini(directions=k)) for k in (1, 2, 4)]
    assert p[2] - p[0] == n_dms * len(cfg.scales) * (4 - 1)
    q = [n_params(mini(directions=k, split_channels=False)) for k in (1, 2, 4)]
    assert q[0] == p[0] and q[1] - q[0] > 100 * (p[1] - p[0]) and q[2] - q[1] == 2 * (q[1] - q[0])
    assert n_params(mini(scales=(1,))) < n_params(base) < n_params(mini(scales=(1, 2, 4)))
    # mixer kinds: the coarse stages hold the chosen mixer, the early stages convolutions
    kinds = {"dms": DirectionalMultiScale, "mamba1d": Mamba, "attention": Attention2d}
    for name, cls in kinds.items():
        m = mini(mixer=name)
        for i in (2, 3):
            assert any(isinstance(x, cls) for x in m.stages[i].modules())
        for i in (0, 1):
            assert {type(b.mixer) for b in m.stages[i].blocks} == {ConvMixer}
    assert len({n_params(mini(mixer=name)) for name in kinds}) == 3
    # per-stage mixer and d_state
    m = mini(mixer=("conv", "dms", "attention", "mamba1d"), d_state=(1, 2, 3, 8))
    assert isinstance(m.stages[1].blocks[0].mixer, DirectionalMultiScale)
    assert m.stages[1].blocks[0].mixer.scans[0].A_log.shape[1] == 2
    assert isinstance(m.stages[3].blocks[0].mixer.mamba, Mamba)
    assert m.stages[3].blocks[0].mixer.mamba.A_log.shape[1] == 8
    assert not any(isinstance(x, DirectionalMultiScale) for x in mini(conv_stages=4).modules())
    with pytest.raises(ValueError, match="mixer"):
        SSMambaConfig(mixer="lstm")
    with pytest.raises(ValueError, match="directions"):
        SSMambaConfig(directions=9)


@pytest.mark.parametrize("mixer", ["dms", "mamba1d", "attention"])
@pytest.mark.parametrize("size", [(32, 32), (64, 96), (128, 64)])
def test_forward_backward_every_mixer_and_size(mixer, size):
    torch.manual_seed(0)
    m = mini(mixer=mixer, conv_stages=1)
    x = torch.randn(2, 3, *size)
    out = m(x)
    assert out.shape == (2, 5)
    out.square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # every mixer learns: all its parameters get non-zero gradients (at 32 px the last maps
    # hold one token, and a one-step scan has no gradient for A: h_0 = 0)
    for i in (1, 2, 3) if min(size) >= 64 else ():
        for name, p in m.stages[i].blocks[0].mixer.named_parameters():
            assert p.grad.abs().sum() > 0, (i, name)


@pytest.mark.parametrize("size", [(32, 32), (96, 160), (256, 32), (512, 512)])
def test_sizes_the_stride_divides_work(size):
    m = mini().eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, *size)).shape == (1, 5)


def test_preset_at_1024_px():
    torch.manual_seed(0)
    m = timm.create_model("ssmamba_lite_tiny", num_classes=3).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 1024, 1024))
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_bad_sizes_raise_with_nearest_valid_sizes():
    m = mini()
    with pytest.raises(ValueError, match=r"100x128.*stride 32.*96x128 or 128x128"):
        m(torch.randn(1, 3, 100, 128))
    with pytest.raises(ValueError, match=r"16x70.*32x64 or 32x96"):
        m(torch.randn(1, 3, 16, 70))
    assert nearest_valid_sizes(33, 64, 32) == [(32, 64), (64, 64)]
    with pytest.raises(ValueError, match=r"\(batch, 3, H, W\)"):
        m(torch.randn(1, 1, 64, 64))


def test_seeded_determinism():
    def run():
        torch.manual_seed(123)
        m = mini()
        x = torch.randn(2, 3, 64, 64)
        out = m(x)
        out.sum().backward()
        return out.detach(), [p.grad.clone() for p in m.parameters()]

    (o1, g1), (o2, g2) = run(), run()
    assert torch.equal(o1, o2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    torch.manual_seed(124)
    assert not torch.equal(mini()(torch.randn(2, 3, 64, 64)), o1)


def test_grad_checkpointing_same_step_less_kept():
    """set_grad_checkpointing: the same outputs, gradients and BatchNorm statistics (drop path
    replays its RNG), fewer bytes kept for backward; eval and no_grad skip it."""
    def run(stages):
        torch.manual_seed(5)
        m = mini(drop_path_rate=0.3).train()
        for i in stages:
            m.stages[i].grad_checkpointing = True
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: kept.append(t.numel() * t.element_size()) or t, lambda t: t):
            out = m(torch.randn(2, 3, 64, 64))
        out.square().sum().backward()
        return out.detach(), [p.grad for p in m.parameters()], list(m.buffers()), sum(kept)

    plain = run(())
    for stages in ((0, 1), (0, 1, 2, 3)):
        other = run(stages)
        torch.testing.assert_close(other[0], plain[0])
        for a, b in zip(other[1] + other[2], plain[1] + plain[2]):
            torch.testing.assert_close(a, b)
        assert other[3] < 0.7 * plain[3], (stages, other[3], plain[3])
    m = mini()
    m.set_grad_checkpointing()
    assert all(s.grad_checkpointing for s in m.stages)
    m.set_grad_checkpointing(False)
    assert not any(s.grad_checkpointing for s in m.stages)


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    a = timm.create_model("ssmamba_lite_tiny", num_classes=9).eval()
    for buf in a.buffers():                                     # non-trivial BatchNorm stats
        if buf.dtype.is_floating_point:
            buf.uniform_(0.5, 1.5)
    path = tmp_path / "tiny.safetensors"
    save_weights(a, path)
    torch.manual_seed(1)
    b = timm.create_model("ssmamba_lite_tiny", num_classes=9).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.equal(a(x), b(x))
        load_weights(b, path)
        assert torch.equal(a(x), b(x))
        # timm's own loader reads the same file
        c = timm.create_model("ssmamba_lite_tiny", num_classes=9, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=9)).eval()
        assert torch.equal(a(x), c(x))


def test_grad_cam_target_layer():
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    m = mini().eval()
    with GradCAM(model=m, target_layers=[m.stages[-1]]) as cam:
        maps = cam(input_tensor=torch.randn(2, 3, 64, 96), targets=[ClassifierOutputTarget(1)] * 2)
    assert maps.shape == (2, 64, 96)


@pytest.mark.cuda
def test_cuda_uses_mamba_ssm_kernel(monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if cuda_kernel() is None:
        pytest.skip("mamba-ssm is installed without its CUDA kernels")
    import ssmamba_lite.scan as scan

    calls = []
    real = cuda_kernel()

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(scan, "cuda_kernel", lambda: counting)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)       # compare in fp32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    m = timm.create_model("ssmamba_lite_tiny", num_classes=9).cuda()
    x = torch.randn(2, 3, 128, 96, device="cuda")
    assert which_backend(x) == "cuda"
    out = m(x)
    out.sum().backward()
    assert out.shape == (2, 9) and torch.isfinite(out).all()
    n_dms = sum(isinstance(mod, DirectionalMultiScale) for mod in m.modules())
    assert len(calls) == n_dms * len(m.cfg.scales)       # every scan ran on mamba-ssm's kernel
    # and it computes what the CPU path computes
    cpu = timm.create_model("ssmamba_lite_tiny", num_classes=9)
    cpu.load_state_dict({k: v.cpu() for k, v in m.state_dict().items()})
    m.eval()
    cpu.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x).cpu(), cpu(x.cpu()), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(2, 8, 64, 64), (1, 6, 65, 67)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_norm_mlp_is_the_modules_forward_and_gradients(shape, channels_last):
    """layers/mlp.py's one-step MLP(Norm(x)) against the modules run one by one (float64):
    output, ∂x and every parameter's gradient; odd sizes and either memory order."""
    from timm.layers import LayerNorm2d

    from ssmamba_lite.layers.mlp import Mlp, fused_applies, norm_mlp
    torch.manual_seed(0)
    norm, mlp = LayerNorm2d(shape[1]).double(), Mlp(shape[1], 4.0).double()
    with torch.no_grad():                  # a norm that is not the identity
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weights = torch.randn(shape, dtype=torch.float64)
    results = []
    for fused in (False, True):
        xi = x.clone().requires_grad_()
        assert fused_applies(xi, norm, mlp)
        y = norm_mlp(xi, norm, mlp) if fused else mlp(norm(xi))
        params = list(norm.parameters()) + list(mlp.parameters())
        grads = torch.autograd.grad((y * weights).sum(), [xi] + params)
        results.append([y] + list(grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_large_maps_keep_less_for_backward_and_step_the_same():
    """A block on a map of RECOMPUTE_POSITIONS positions or more keeps only the MLP's input
    for backward (x and the norm's mean and 1/std, not Norm(x), h, GELU(h)): the same output
    and gradients as the modules, and 9·C - 2 numbers per position fewer kept (C = 8: at least
    8·C); smaller maps, and no_grad, are left to the modules."""
    from ssmamba_lite.layers import mlp as mlp_module
    from ssmamba_lite.model import Block
    torch.manual_seed(0)
    c = 8
    block = Block(c, "conv", SSMambaConfig(), d_state=4, drop_path=0.0)
    x = torch.randn(2, c, 64, 64).contiguous(memory_format=torch.channels_last)

    def run():
        kept = []
        xi = x.clone().requires_grad_()
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: kept.append(t.numel()) or t, lambda t: t):
            y = block(xi)
        grads = torch.autograd.grad(y.square().sum(), [xi] + list(block.parameters()))
        return [y] + list(grads), sum(kept)

    fused, kept_fused = run()
    old = mlp_module.RECOMPUTE_POSITIONS
    try:
        mlp_module.RECOMPUTE_POSITIONS = 64 * 64 + 1       # the same map, left to the modules
        plain, kept_plain = run()
    finally:
        mlp_module.RECOMPUTE_POSITIONS = old
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    positions = 2 * 64 * 64
    assert kept_plain - kept_fused >= 8 * c * positions, (kept_plain, kept_fused)
    small = torch.randn(2, c, 32, 32, requires_grad=True)
    assert not mlp_module.fused_applies(small, block.norm2, block.mlp)
    with torch.no_grad():
        assert not mlp_module.fused_applies(x, block.norm2, block.mlp)
