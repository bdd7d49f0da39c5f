# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: nbgrader,tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · MAMIM: learning tissue before labels
#
# **What.** *Masked image modelling*: hide most of each tile and train the network to paint
# the hidden part back. No labels are needed, so it can use every tile there is. SSMamba's
# abstract calls its version **MAMIM** (Mamba Masked Image Modeling) and runs it *on the
# target dataset itself*.
#
# **Why.** Networks pretrained on natural photographs (ImageNet) learn edges of cars and
# dogs; H&E tissue looks nothing like that (the abstract's "domain shift"). To fill a hidden
# patch of tissue, the network must learn what tissue looks like: how nuclei are spaced, how
# glands curve, how stroma runs. Those are the features a classifier needs later (05).
#
# **The recipe here** (SimMIM-style; the paper gives no details): with a mask $M$ over the
# stem's token grid and $M\!\uparrow$ the same mask in pixels,
#
# $$\tilde x = x \odot (1 - M\!\uparrow), \quad t = \mathrm{stem}(\tilde x), \quad
# \tilde t = t \odot (1 - M) + m \odot M, \quad z = \mathrm{stages}(\tilde t), \quad
# \hat x = \mathrm{PixelShuffle}(W z)$$
#
# $$\mathcal L = \frac{\sum M\!\uparrow \odot (\hat x - y)^2}{3 \sum M\!\uparrow}, \qquad
# y = \frac{x - \mu_p}{\sigma_p}\ \text{(each mask patch } p \text{ standardised)} .$$
#
# Hidden tokens are *replaced* by a learned mask token $m$, not dropped as in MAE: a scan
# needs the full sequence, in every direction. The loss counts hidden pixels only. And each
# tile is shown at a random magnification (zoom $\in [0.5, 2]$), the abstract's
# multi-magnification pretraining (notebook 08 measures what it buys).

# %% tags=["parameters"]
data_dir = "sample:idc-breast"   # the target data; MAMIM uses its training patients, not its labels
extra_data = "sample:idc-breast-unlabeled"   # more unlabelled tiles ("": none); held-out patients left out
output_dir = "runs/notebooks/04_mamim_pretraining"
image_size = 64
epochs = 2
batch_size = 32
device = "auto"
seed = 0
model = "ssmamba_lite_cpu"      # the laptop-sized preset; on a GPU: "ssmamba_lite_tiny"
model_args = {}                 # overrides of SSMambaConfig fields, e.g. {"use_lpr": False}
mask_ratio = 0.6          # share of mask patches hidden
mask_patch_size = 16      # side of a mask patch in pixels (divides image_size)
min_zoom = 0.5            # multi-magnification views: zoom range
max_zoom = 2.0
lr = 1.5e-3
max_steps_per_epoch = 0   # more than 0: cut epochs short
n_show = 8                # tiles in the reconstruction pictures
progress = True           # progress bars while training

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ssmamba_lite.course.figures import save_figure
from ssmamba_lite.course.runner import require_data
from ssmamba_lite.engine.device import resolve_device

data_dir = require_data(data_dir, dataset="idc-breast", labelled=False)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
dev = resolve_device(device)
_ = torch.manual_seed(seed)

# %% [markdown]
# ## 1. Masks
#
# `MaskGenerator` hides exactly `round(mask_ratio · number of patches)` square patches of
# `mask_patch_size` pixels in each tile. Large patches and a high ratio (60%) make the task
# hard enough that copying neighbouring pixels does not solve it.

# %%
from ssmamba_lite.course.figures import image_row
from ssmamba_lite.engine.data import load_image, scan_unlabelled
from ssmamba_lite.engine.transforms import eval_transform
from ssmamba_lite.mamim import MaskGenerator, upsample_mask

pool = scan_unlabelled(data_dir)
print(f"{len(pool)} unlabelled tiles in {data_dir}")
pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n_show].tolist()
tiles = torch.stack([eval_transform(image_size)(load_image(pool.paths[i])) for i in pick])
ratios = [0.2, 0.4, 0.6, 0.8]
views = [tiles[0]]
for r in ratios:
    m = MaskGenerator(image_size, mask_patch_size, 4, r)(1, torch.Generator().manual_seed(seed))
    views.append(tiles[0] * (1 - upsample_mask(m, 4)[0]) + upsample_mask(m, 4)[0] * -1)
fig = image_row(views, ["tile"] + [f"mask ratio {r}" for r in ratios])
save_figure(fig, out, "masks")
plt.show()

# %% [markdown]
# ### Exercise 1 (2 points): block masks
#
# Write `make_mask`, the masks of `MaskGenerator`: the image is cut into square blocks of
# `mask_patch_size` pixels ($b = $ `image_size // mask_patch_size` per side); draw one score
# per block, `torch.rand(batch, b * b, generator=generator)` (row-major block order), and hide
# the $n = \mathrm{round}(\text{mask\_ratio} \cdot b^2)$ blocks with the *smallest* scores.
# Return the mask on the stem's token grid, one token per `stem_stride` pixels: a bool tensor
# `(batch, image_size // stem_stride, image_size // stem_stride)`, `True` = hidden.

# %% nbgrader={"grade": false, "grade_id": "mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
import torch


def make_mask(batch, image_size, mask_patch_size, mask_ratio, generator, stem_stride=4):
    """Bool (batch, image_size // stem_stride, image_size // stem_stride): True = hidden."""
    ### BEGIN SOLUTION
    blocks = image_size // mask_patch_size
    n_hidden = round(mask_ratio * blocks * blocks)
    scores = torch.rand(batch, blocks * blocks, generator=generator)
    hidden = torch.zeros(batch, blocks * blocks, dtype=torch.bool)
    hidden.scatter_(1, scores.argsort(dim=1)[:, :n_hidden], True)
    tokens = mask_patch_size // stem_stride                     # tokens per block side
    hidden = hidden.view(batch, blocks, blocks)
    return hidden.repeat_interleave(tokens, 1).repeat_interleave(tokens, 2)
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "mask_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Checks make_mask against the library's MaskGenerator, from the same random numbers. While
# make_mask runs, MaskGenerator and MAMIM raise an error: using them scores 0.
import torch

from ssmamba_lite.course.exercises import assert_equal, forbidden
from ssmamba_lite.mamim import MAMIM, MaskGenerator


def check_mask(batch, image_size, mask_patch_size, mask_ratio, seed, stem_stride=4):
    what = f"make_mask({batch}, {image_size}, {mask_patch_size}, {mask_ratio}, seed {seed})"
    reference = MaskGenerator(image_size, mask_patch_size, stem_stride, mask_ratio)(
        batch, torch.Generator().manual_seed(seed))
    with forbidden(MaskGenerator, MAMIM, exercise="mask"):
        mine = make_mask(batch, image_size, mask_patch_size, mask_ratio,
                         torch.Generator().manual_seed(seed), stem_stride)
    assert torch.is_tensor(mine) and mine.dtype == torch.bool, \
        f"{what}: expected a bool tensor, got {getattr(mine, 'dtype', type(mine).__name__)}"
    assert_equal(mine, reference, what)


check_mask(2, 64, 16, 0.6, seed=0)
### BEGIN HIDDEN TESTS
for seed, args in enumerate([(3, 128, 32, 0.75), (1, 32, 8, 0.5), (4, 96, 16, 0.25),
                             (2, 64, 64, 0.4)], start=1):
    check_mask(*args, seed=seed)
check_mask(2, 48, 12, 0.5, seed=5, stem_stride=2)
### END HIDDEN TESTS
print("make_mask: checks passed")

# %% [markdown]
# ### Exercise 2 (2 points): the masked loss
#
# Write MAMIM's loss: the mean squared error between the prediction $\hat x$ and the target
# $y$ over the *hidden* pixels only (all three colour channels),
# $\mathcal L = \sum M\!\uparrow \odot (\hat x - y)^2 \,/\, (3 \sum M\!\uparrow)$. Here
# $M\!\uparrow$ is the token mask `mask` (`(batch, h, w)`, True = hidden) enlarged to pixels
# (each token covers `stem_stride` x `stem_stride` pixels), and the target is $y = x$, or
# with `norm_pix_loss` each mask patch standardised: $y$ = `patch_normalize(images,
# mask_patch_size)[0]` (imported for you).

# %% nbgrader={"grade": false, "grade_id": "masked_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
import torch

from ssmamba_lite.mamim import patch_normalize


def masked_loss(pred, images, mask, mask_patch_size, norm_pix_loss=True, stem_stride=4):
    """Scalar tensor: mean squared error over the hidden pixels.

    pred, images: (batch, 3, H, W); mask: (batch, H // stem_stride, W // stem_stride) bool.
    """
    ### BEGIN SOLUTION
    m = mask[:, None].float()
    m = m.repeat_interleave(stem_stride, 2).repeat_interleave(stem_stride, 3)  # (batch, 1, H, W)
    target = patch_normalize(images.float(), mask_patch_size)[0] if norm_pix_loss else images
    return ((pred - target) ** 2 * m).sum() / (3 * m.sum())
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "masked_loss_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Checks masked_loss against the loss of the library's MAMIM on random images and masks. While
# masked_loss runs, MAMIM raises an error: using it scores 0 (patch_normalize is yours to use).
import torch

from ssmamba_lite.course.exercises import assert_close, forbidden  # noqa: F811
from ssmamba_lite.mamim import MAMIM  # noqa: F811  (each test cell imports what it needs)
from ssmamba_lite.model import SSMamba


def check_masked_loss(batch, image_size, mask_patch_size, norm_pix_loss, seed):
    torch.manual_seed(seed)
    net = SSMamba(num_classes=0, dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), d_state=2)
    mamim = MAMIM(net, mask_patch_size, norm_pix_loss=norm_pix_loss).eval()
    images = torch.randn(batch, 3, image_size, image_size)
    mask = mamim.mask_generator(image_size)(batch, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        loss, pred, _ = mamim(images, mask)
    with torch.no_grad(), forbidden(MAMIM, exercise="masked_loss"):
        mine = masked_loss(pred, images, mask, mask_patch_size, norm_pix_loss)
    assert_close(torch.as_tensor(mine).reshape(()), loss,
                 f"masked_loss (norm_pix_loss={norm_pix_loss}, {image_size} px)", seed=seed)


check_masked_loss(2, 32, 8, True, seed=0)
### BEGIN HIDDEN TESTS
check_masked_loss(3, 32, 16, False, seed=1)
check_masked_loss(1, 64, 16, True, seed=2)
check_masked_loss(2, 64, 32, False, seed=3)
### END HIDDEN TESTS
print("masked_loss: checks passed")

# %% [markdown]
# ## 2. Multi-magnification views
#
# `RandomMagnification` zooms each tile by a factor drawn log-uniformly in
# [`min_zoom`, `max_zoom`]: a crop enlarged (zoom in) or the tile shrunk and enlarged back
# (zoom out: fine detail lost), always at the same size.

# %%
from ssmamba_lite.mamim import RandomMagnification

raw = torch.nn.functional.interpolate(load_image(pool.paths[pick[0]])[None].float(),
                                      size=(image_size, image_size), mode="bilinear",
                                      antialias=True)[0].round().to(torch.uint8)
rm = RandomMagnification(min_zoom, max_zoom)
fig = image_row([raw] + [rm(raw) for _ in range(5)], ["tile"] + [f"view {i + 1}" for i in range(5)])
save_figure(fig, out, "magnification_views")
plt.show()

# %% [markdown]
# ## 3. Pretraining
#
# `ssmamba_lite.engine.train.pretrain` runs the loop: AdamW, warm-up then cosine learning rate,
# the views above plus flips, rotations and stain jitter, a checkpoint after every epoch.
# It writes `encoder.safetensors` (the weights notebook 05 can start from) into its folder.
#
# Which images? The paper pretrains *on the target dataset itself*. Here that is the training
# part of `data_dir` (its own split, or the patient split fine-tuning makes with the same
# seed), labels unused, plus the `extra_data` pool minus any image of a held-out patient: the
# patients we will judge on stay unseen by both stages. `pretrain` prints the count and writes
# the patients it saw to `pretrain_patients.json`, which fine-tuning checks.

# %%
from ssmamba_lite.engine.train import PretrainConfig, pretrain

run_dir = out / "mamim"
cfg = PretrainConfig(data=str(data_dir), out=str(run_dir), model=model, model_args=model_args,
                     image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                     seed=seed, device=device, mask_ratio=mask_ratio,
                     mask_patch_size=mask_patch_size, min_zoom=min_zoom, max_zoom=max_zoom,
                     max_steps_per_epoch=max_steps_per_epoch, progress=progress,
                     extra_data=extra_data)
history = pretrain(cfg)
print(f"encoder weights: {run_dir / 'encoder.safetensors'}")

# %%
import pandas as pd
from IPython.display import display

hist = pd.DataFrame(history)
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(hist["epoch"], hist["loss"], marker="o")
ax.set_xlabel("epoch"), ax.set_ylabel("masked reconstruction loss")
ax.set_title("MAMIM loss (hidden pixels only)")
ax.grid(alpha=0.3)
fig.tight_layout()
save_figure(fig, out, "loss_curve")
plt.show()
display(hist)

# %% [markdown]
# ## 4. What it paints back
#
# Rows: the tile, what the network saw, and its reconstruction (visible pixels pasted back).
# A short run paints blurry, tissue-coloured guesses; longer runs place nuclei and edges.
# The network does not have to be a good painter: the painting is only the pretext.

# %%
from ssmamba_lite.course.analysis import load_mamim
from ssmamba_lite.course.figures import reconstruction_figure

mamim = load_mamim(run_dir, dev)
gen = torch.Generator().manual_seed(seed)
mask = mamim.mask_generator(image_size)(len(tiles), gen).to(dev)
masked, result, _ = mamim.reconstruct(tiles.to(dev), mask)
fig = reconstruction_figure(masked, result, tiles, n=n_show)
save_figure(fig, out, "reconstructions")
plt.show()

# %% [markdown]
# ## 5. Explore the mask ratio
#
# How hard is the task at each ratio? In JupyterLab, move the slider to hide more or less of
# the same tiles and see the reconstruction; below it, the loss of the trained model against
# the ratio, for all to see.

# %%
import ipywidgets as widgets

from ssmamba_lite.course.figures import explorer


def show_ratio(mask_ratio=0.6):
    m = MaskGenerator(image_size, mask_patch_size, 4, mask_ratio)(len(tiles), gen).to(dev)
    masked, result, _ = mamim.reconstruct(tiles.to(dev), m)
    reconstruction_figure(masked, result, tiles, n=min(4, n_show))
    plt.show()


_ = explorer(show_ratio, mask_ratio=widgets.FloatSlider(value=mask_ratio, min=0.1, max=0.9,
                                                        step=0.1, description="mask ratio"))

# %%
rows = []
with torch.no_grad():
    for r in np.round(np.arange(0.1, 0.95, 0.1), 2):
        m = MaskGenerator(image_size, mask_patch_size, 4, float(r))(len(tiles), gen).to(dev)
        loss, _, _ = mamim(tiles.to(dev), m)
        rows.append({"mask ratio": float(r), "loss": float(loss)})
by_ratio = pd.DataFrame(rows)
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(by_ratio["mask ratio"], by_ratio["loss"], marker="o")
ax.axvline(mask_ratio, color="k", ls=":", lw=1, label="trained at")
ax.set_xlabel("mask ratio"), ax.set_ylabel("loss on hidden pixels"), ax.legend(fontsize=8)
fig.tight_layout()
save_figure(fig, out, "loss_by_mask_ratio")
plt.show()

# %% [markdown]
# Next, **05** fine-tunes a classifier from this encoder and from scratch, and compares them.
# To reuse this run there, pass `mamim_encoder_path` = the `encoder.safetensors` printed above.
