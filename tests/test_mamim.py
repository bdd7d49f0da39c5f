"""MAMIM: masks, masked loss, reconstruction, multi-magnification views."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from ssmamba_lite.engine.checkpoint import load_weights
from ssmamba_lite.engine.data import load_image, sample_dir
from ssmamba_lite.engine.factory import mamim_from_record
from ssmamba_lite.engine.transforms import eval_transform
from ssmamba_lite.mamim import (
    DECODERS,
    MAMIM,
    MaskGenerator,
    RandomMagnification,
    crop_enlarge,
    default_mask_patch,
    down_up_blur,
    magnify,
    patch_normalize,
)
from ssmamba_lite.presets import PRESETS


@pytest.mark.parametrize("ratio", [0.25, 0.6, 0.75])
def test_mask_covers_the_requested_ratio_in_blocks(ratio):
    gen = MaskGenerator(128, mask_patch_size=32, stem_stride=4, mask_ratio=ratio)
    mask = gen(5, torch.Generator().manual_seed(0))
    assert mask.shape == (5, 32, 32) and mask.dtype == torch.bool
    per_image = mask.float().mean((1, 2))
    assert torch.allclose(per_image, torch.full((5,), round(ratio * 16) / 16))
    blocks = mask.view(5, 4, 8, 4, 8)                  # each 8x8 block of tokens is all-or-nothing
    assert (blocks.all(dim=(2, 4)) | ~blocks.any(dim=(2, 4))).all()
    assert not torch.equal(mask[0], mask[1]), "masks differ between images"


def test_bad_mask_settings_are_named():
    with pytest.raises(ValueError, match="mask_patch_size 24 must divide image_size 64"):
        MaskGenerator(64, 24)
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskGenerator(64, 16, mask_ratio=1.0)
    with pytest.raises(ValueError, match="SSMamba model"):
        MAMIM(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("decoder, remask", [(d, False) for d in DECODERS] +
                         [("hierarchical", True)])
def test_loss_counts_only_hidden_pixels(decoder, remask):
    torch.manual_seed(0)
    mm = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0), norm_pix_loss=False,
               decoder=decoder, remask=remask).eval()                      # no drop-path noise
    x = torch.randn(2, 3, 64, 64)
    mask = mm.mask_generator(64)(2)
    loss, pred, _ = mm(x, mask)
    m = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand_as(x)
    assert torch.allclose(loss, ((pred - x) ** 2)[m].mean(), rtol=1e-5)
    x2 = x.clone()
    x2[~m] += 5.0                     # visible pixels change the input but not the loss target ...
    pred2 = mm(x2, mask)[1]
    assert not torch.allclose(pred2, pred)
    x3 = x.clone()
    x3[m] += 5.0                      # ... and hidden pixels never reach the encoder
    assert torch.allclose(mm(x3, mask)[1], pred, atol=1e-5)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("size", [32, 96, 160])
def test_both_decoders_paint_every_pixel_for_every_preset_and_size(preset, size):
    encoder = timm.create_model(preset, num_classes=0)
    for decoder in DECODERS:
        mm = MAMIM(encoder, decoder=decoder).eval()
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            loss, pred, mask = mm(x)
        assert pred.shape == x.shape and mask.shape == (1, size // 4, size // 4)
        assert torch.isfinite(loss)
        assert mm.patch_size(size) == default_mask_patch(size)


def test_the_hierarchical_decoder_reads_every_stage_and_is_small():
    torch.manual_seed(0)
    mm = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0)).eval()
    feats = mm.features(torch.randn(1, 32, 16, 16))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    base = mm.decoder(feats)
    for i in range(len(feats)):                     # a change at any stage changes the picture
        moved = [f + (5.0 if j == i else 0.0) for j, f in enumerate(feats)]
        assert not torch.allclose(mm.decoder(moved), base), f"stage {i + 1} is not read"
    assert sum(p.numel() for p in mm.decoder.parameters()) < 50_000   # 100 kB in float16
    linear = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0), decoder="linear")
    assert sum(p.numel() for p in linear.decoder.parameters()) > 300_000


@pytest.mark.parametrize("size", [64, 72])
def test_remask_replaces_wholly_hidden_positions_at_every_stage(size):
    """SparK's choice as an arm: after each stage, a position whose every stem cell is hidden
    holds that stage's token, whatever the image; a position with a visible cell is the
    stage's own output."""
    torch.manual_seed(0)
    mm = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0), remask=True).eval()
    assert {f"stage_tokens.{i}" for i in range(4)} <= mm.no_weight_decay()
    mask = torch.zeros(1, size // 4, size // 4)
    mask[:, :8, :8] = 1                          # a 32 px hidden corner
    feats = []
    for _ in range(2):
        stem = mm.encoder.stem(torch.randn(1, 3, size, size))
        with torch.no_grad():
            feats.append(mm.features(stem, mask))
    for i, (a, b) in enumerate(zip(*feats)):
        cells = 8 >> i                           # the hidden corner on stage i's grid
        token = mm.stage_tokens[i][0, :, 0, 0]
        assert torch.equal(a[0, :, 0, 0], token) and torch.equal(b[0, :, cells - 1, 0], token)
        assert not torch.equal(a[0, :, -1, -1], b[0, :, -1, -1]), f"stage {i + 1}"
    plain = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0))
    assert not any("stage_tokens" in k for k in plain.state_dict())


def test_a_perfect_prediction_scores_zero():
    torch.manual_seed(0)
    mm = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0)).eval()
    x = torch.rand(2, 3, 64, 64)
    target = patch_normalize(x, 16)[0]

    class Painter(torch.nn.Module):
        def __init__(self, picture):
            super().__init__()
            self.picture = picture

        def forward(self, feats):
            return self.picture

    mm.decoder = Painter(target)                             # paints the truth
    assert float(mm(x)[0]) == 0.0
    mm.decoder = Painter(torch.zeros_like(target))           # the flat painter: 1.0
    assert abs(float(mm(x)[0]) - 1.0) < 1e-3


def test_masks_are_sized_to_the_image():
    assert [default_mask_patch(s) for s in (32, 48, 64, 96, 128, 224)] == [8, 12, 16, 16, 16, 16]
    for size in (32, 64, 224):
        assert (size // default_mask_patch(size)) ** 2 >= 16
    with pytest.raises(ValueError, match="image size 12"):
        default_mask_patch(12)                 # 4 px patches: 9 mask units, too few
    with pytest.raises(ValueError, match="hides 0"):
        MaskGenerator(32, 16, mask_ratio=0.1)
    assert MaskGenerator(64, None).patch == 16
    with pytest.raises(ValueError, match="decoder must be one of"):
        MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0), decoder="unet")


def test_a_run_from_before_the_decoder_choice_loads_with_its_linear_head(tmp_path):
    """An old pretraining record has no "decoder": its whole checkpoint (keys decoder.0.*) is
    the linear head's, and loads into the module its record describes."""
    torch.manual_seed(0)
    old = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0), 16, decoder="linear")
    assert "decoder.0.weight" in old.state_dict()
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, tmp_path / "old.safetensors")
    record = {"model": "ssmamba_lite_cpu", "image_size": 64,
              "run": {"mask_patch_size": 16, "mask_ratio": 0.6, "norm_pix_loss": True}}
    back = mamim_from_record(record)
    assert back.decoder_kind == "linear"
    load_weights(back, tmp_path / "old.safetensors")
    x = torch.randn(1, 3, 64, 64)
    mask = old.mask_generator(64)(1, torch.Generator().manual_seed(0))
    assert torch.equal(back.eval()(x, mask)[1], old.eval()(x, mask)[1])


@pytest.mark.parametrize("decoder, falls_to", [("linear", 0.8), ("hierarchical", 0.95)])
def test_mamim_loss_falls_on_real_images(decoder, falls_to):
    """12 steps on one batch and mask. The linear head starts higher (its random 0.4M weights
    paint noise; the hierarchical decoder starts near the flat painter's 1.0) and memorises a
    fixed batch faster; which one generalises is benchmarks/mamim_decoders.py's question."""
    torch.manual_seed(0)
    paths = sorted((sample_dir("idc-breast-unlabeled") / "images").glob("*.png"))[:16]
    x = torch.stack([eval_transform(64)(load_image(p)) for p in paths])
    mm = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0), decoder=decoder)
    mask = mm.mask_generator(64)(16, torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(mm.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss = mm(x, mask)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < falls_to * losses[0], losses


def test_reconstruction_pastes_visible_pixels():
    torch.manual_seed(0)
    mm = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0))
    x = torch.randn(2, 3, 64, 64)
    masked, result, mask = mm.reconstruct(x)
    m = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand_as(x)
    assert torch.equal(result[~m], x[~m]) and torch.equal(masked[m], torch.zeros_like(x[m]))


def test_magnification_views():
    img = torch.arange(64 * 64, dtype=torch.float32).view(1, 64, 64).repeat(3, 1, 1)
    assert torch.allclose(magnify(img, 1.0), img)
    zoomed = magnify(img, 2.0)                           # centre 32x32 enlarged
    assert zoomed.shape == img.shape and zoomed.min() >= img[:, 16:48, 16:48].min() - 1
    blurred = magnify(img, 0.5)
    assert blurred.shape == img.shape and not torch.allclose(blurred, img)
    u8 = (torch.rand(3, 50, 50) * 255).to(torch.uint8)
    out = RandomMagnification(0.5, 2.0)(u8)
    assert out.dtype == torch.uint8 and out.shape == u8.shape


def test_zoom_below_one_is_a_blur_and_above_one_a_crop():
    """A frame 8 px wide around a dark tile: the blur keeps the field of view (the frame is
    still there, softened), the crop narrows it (the frame is gone)."""
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    img[:, :8], img[:, -8:], img[:, :, :8], img[:, :, -8:] = 255, 255, 255, 255
    blurred, cropped = down_up_blur(img, 2.0), crop_enlarge(img, 2.0)
    assert torch.equal(magnify(img, 0.5), blurred) and torch.equal(magnify(img, 2.0), cropped)
    assert blurred[:, :4].float().mean() > 200 and blurred[:, 28:36, 28:36].max() < 10
    assert cropped.max() == 0                                  # the centre 32x32, enlarged
    sharp = (img[:, 6:10].float() - img[:, 5:9].float()).abs().max()
    assert (blurred[:, 6:10].float() - blurred[:, 5:9].float()).abs().max() < sharp
    with pytest.raises(ValueError, match="factor must be >= 1"):
        down_up_blur(img, 0.5)
    with pytest.raises(ValueError, match="factor must be >= 1"):
        crop_enlarge(img, 0.5)
