"""MAMIM: masks, masked loss, reconstruction, multi-magnification views."""

from __future__ import annotations

import pytest
import timm
import torch

from ssmamba_lite.engine.data import load_image, sample_dir
from ssmamba_lite.engine.transforms import eval_transform
from ssmamba_lite.mamim import (
    MAMIM,
    MaskGenerator,
    RandomMagnification,
    crop_enlarge,
    down_up_blur,
    magnify,
)


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


def test_loss_counts_only_hidden_pixels():
    torch.manual_seed(0)
    mm = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0), norm_pix_loss=False).eval()  # no drop-path noise
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


def test_mamim_loss_falls_on_real_images():
    torch.manual_seed(0)
    paths = sorted((sample_dir("idc-breast-unlabeled") / "images").glob("*.png"))[:16]
    x = torch.stack([eval_transform(64)(load_image(p)) for p in paths])
    mm = MAMIM(timm.create_model("ssmamba_lite_cpu", num_classes=0))
    mask = mm.mask_generator(64)(16, torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(mm.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss = mm(x, mask)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


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
