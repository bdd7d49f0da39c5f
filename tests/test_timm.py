"""The presets behave like timm models: the conventions timm's own model tests check
(tests/test_models.py of huggingface/pytorch-image-models, whose file is not shipped with
timm), FX feature extraction, and torch.compile for inference and training."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
from timm.models import create_feature_extractor

import ssmamba_lite  # noqa: F401  (registers the presets)
from ssmamba_lite.engine.transforms import MEAN, STD

PRESETS = timm.list_models("ssmamba_lite_*")


def test_the_presets_are_listed():
    assert PRESETS == ["ssmamba_lite_cpu", "ssmamba_lite_small", "ssmamba_lite_tiny"]


@pytest.mark.parametrize("name", PRESETS)
def test_default_cfg_pooling_and_heads(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    assert tuple(cfg["mean"]) == MEAN and tuple(cfg["std"]) == STD, "what the engine trains on"
    state = model.state_dict()
    assert f"{cfg['classifier']}.weight" in state and f"{cfg['first_conv']}.weight" in state
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.shape[1:] == (model.num_features, *cfg["pool_size"])
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == pre.shape
        model.reset_classifier(0, "")                        # no head, no pooling
        assert model(x).shape == feats.shape
        model.reset_classifier(5, "")                        # a head at every position
        assert model(x).shape == (1, 5, *cfg["pool_size"])
        bare = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert bare(x).shape == feats.shape
    with pytest.raises(ValueError, match="global_pool must be one of"):
        model.reset_classifier(0, "token")


def test_forward_intermediates_and_pruning():
    model = timm.create_model("ssmamba_lite_cpu").eval()
    x = torch.randn(2, 3, 96, 64)
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.allclose(final, model.forward_features(x))
        for c, r, t in zip(info.channels(), info.reduction(), inter):
            assert t.shape == (2, c, 96 // r, 64 // r)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape[1] for t in last_two] == info.channels()[-2:]
        assert torch.equal(model.forward_intermediates(x, indices=[-1], norm=True)[1][0], final)
        kept = model.prune_intermediate_layers([1])
        assert kept == [1] and len(model.stages) == 2 and model.num_classes == 0
        assert model(x).shape == (2, info.channels()[1], 96 // 8, 64 // 8)
    with pytest.raises(ValueError, match="indices must be in 1..4"):
        timm.create_model("ssmamba_lite_cpu").forward_intermediates(x, indices=7)


@pytest.mark.parametrize("feature_cls", [None, "getter"])
def test_features_only(feature_cls):
    kw = {"feature_cls": feature_cls} if feature_cls else {}
    model = timm.create_model("ssmamba_lite_cpu", features_only=True, **kw).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == model.feature_info.channels() == [32, 64, 96, 128]
    assert [64 // o.shape[-1] for o in outs] == model.feature_info.reduction()


def test_fx_feature_extraction_forward_and_backward():
    model = timm.create_model("ssmamba_lite_cpu", num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    fx = create_feature_extractor(model, return_nodes=["stages.1", "head"])
    with torch.no_grad():
        out = fx(x)
        assert torch.equal(out["head"], model(x))
        assert out["stages.1"].shape == (2, 64, 8, 8)
    model.train()
    fx = create_feature_extractor(model, return_nodes=["head"])
    fx(x)["head"].mean().backward()
    missing = [n for n, p in fx.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:3]}"


def test_clear_errors_stay_in_eager_mode():
    model = timm.create_model("ssmamba_lite_cpu")
    with pytest.raises(ValueError, match="nearest valid sizes: 64x64"):
        model(torch.randn(1, 3, 70, 64))
    with pytest.raises(ValueError, match=r"input must have shape \(batch, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))


@pytest.mark.slow
def test_torch_compile_trains_and_matches_eager():
    """One compiled graph (training mode: BatchNorm on batch statistics, so both runs see the
    same numbers) matches eager outputs and gradients, then trains. Compiling a second, eval
    graph as well would double the test's time (minutes with a cold inductor cache)."""
    torch.manual_seed(0)
    model = timm.create_model("ssmamba_lite_cpu", num_classes=3, drop_path_rate=0.0)
    compiled = torch.compile(model)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train()
        a = compiled(x)
        b = model(x)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        ga = torch.autograd.grad(a.sum(), model.stem[0].weight)[0]
        gb = torch.autograd.grad(b.sum(), model.stem[0].weight)[0]
        torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        losses = []
        for _ in range(4):                                  # a compiled training loop
            loss = torch.nn.functional.cross_entropy(compiled(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
