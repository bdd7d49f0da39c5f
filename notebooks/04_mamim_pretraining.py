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
# *Previous:* [03 · LPR and DMS](03_lpr_and_dms.ipynb) · *Next:*
# [05 · Fine-tuning](05_finetuning.ipynb)
#
# **What.** *Masked image modelling*: hide most of each tile and train the network to paint
# the hidden part back. No labels are needed, so it can use every tile there is.

# %% [markdown]
# ## Learning objectives
#
# After this notebook you can
#
# - say what SSMamba's abstract states about MAMIM, and which parts of the recipe here are this
#   project's own design;
# - write MAMIM's block masks and its loss over hidden pixels (two graded exercises);
# - read a reconstruction figure correctly: the loss predicts *standardised* pixels, so the
#   picture borrows each hidden patch's true mean and standard deviation;
# - find the encoder this notebook hands on to [05](05_finetuning.ipynb) and
#   [09](09_wsi_mil.ipynb), and load a trained one instead of training.

# %% [markdown]
# ## Prerequisites
#
# - [03 · LPR and DMS](03_lpr_and_dms.ipynb): the network (stem, four stages, DMS, LPR) whose
#   encoder is pretrained here; [02](02_selective_scan_from_scratch.ipynb): the scan inside it.
# - PyTorch tensors and the mean squared error; a first look at the data in
#   [01 · Data](01_data.ipynb) (patients, the split).

# %% [markdown]
# ## What the paper says, and what is ours
#
# SSMamba's abstract ([Chai et al. 2026](https://arxiv.org/abs/2604.15711)) names three
# problems of ROI foundation models, the first being *cross-magnification domain shift*
# ("fixed-scale pretraining hinders adaptation to diverse clinical settings"), and proposes
# **Mamba Masked Image Modeling (MAMIM) "for mitigating domain shift"**. The framework learns
# "without relying on large external datasets", in two stages: "SSL pretraining on target ROI
# datasets followed by supervised fine-tuning (SFT)". That is all it states about MAMIM: no
# mask ratio, no decoder, no loss, no schedule.
#
# **This project's design** (SimMIM-style, [Xie et al. 2022](https://arxiv.org/abs/2111.09886);
# none of it is from the paper): square block masks, hidden tokens replaced by a learned mask
# token, a light decoder that fuses every stage of the encoder (after SparK,
# [Tian et al. 2023](https://arxiv.org/abs/2301.03580), and MambaMIM,
# [Tang et al. 2024](https://arxiv.org/abs/2408.08070)), a loss on hidden pixels with each mask
# patch standardised (as in MAE, [He et al. 2022](https://arxiv.org/abs/2111.06377)), and
# random zooms of each tile as our reading of "cross-magnification". The network is this project's SSMamba-lite, whose mixers
# are Mamba's selective scans ([Gu & Dao 2023](https://arxiv.org/abs/2312.00752)).

# %% [markdown]
# **Why it could help.** To fill a hidden patch of tissue, the network must learn what tissue
# looks like: how nuclei are spaced, how glands curve, how stroma runs, the features a
# classifier needs later. Pretraining on the *target* tiles themselves, rather than on a large
# external collection, is the abstract's premise; whether it pays off at this small scale is
# measured in 05 and 06.
#
# With a mask $M$ over the stem's token grid and $M\!\uparrow$ the same mask in pixels,
#
# $$\tilde x = x \odot (1 - M\!\uparrow), \quad t = \mathrm{stem}(\tilde x), \quad
# \tilde t = t \odot (1 - M) + m \odot M, \quad z_1, \dots, z_4 = \mathrm{stages}(\tilde t)$$
#
# $$f_4 = P_4 z_4, \quad f_i = \mathrm{GELU}\big(\mathrm{conv}_{3\times 3}(\mathrm{up}_2 f_{i+1}
# + P_i z_i)\big)\ (i = 3, 2, 1), \quad \hat x = \mathrm{PixelShuffle}_4(W f_1)$$
#
# $$\mathcal L = \frac{\sum M\!\uparrow \odot (\hat x - y)^2}{3 \sum M\!\uparrow}, \qquad
# y = \frac{x - \mu_p}{\sigma_p}\ \text{(each mask patch } p \text{ standardised)} .$$
#
# $z_i$ is the output of stage $i$ (a map 4, 8, 16, 32 times coarser than the tile; $z_4$
# after the encoder's final norm), $P_i$ a 1x1 convolution to the decoder's $d = 32$ channels,
# $W$ a 1x1 convolution from $d$ to $3 \cdot 4^2$ channels (three colours of a 4x4 block): the decoder starts from the coarsest
# map, enlarges it step by step and adds each finer stage, then paints every 4x4 pixel block
# from a vector of its own. Hidden tokens are *replaced* by a learned mask token $m$, not
# dropped as in MAE: a scan needs the full sequence, in every direction. The loss counts hidden
# pixels only. And each
# tile is shown at a random magnification (zoom $\in [0.5, 2]$; notebook 08 measures what it
# buys).

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
mask_patch_size = 0       # side of a mask patch in pixels; 0: sized to the image (16 at 64 px)
decoder = "hierarchical"  # or "linear": SimMIM's one-layer head on the last stage
min_zoom = 0.5            # multi-magnification views: zoom range
max_zoom = 2.0
lr = 1.5e-3
max_steps_per_epoch = 0   # more than 0: cut epochs short
n_show = 8                # tiles in the reconstruction pictures
progress = True           # progress bars while training
retrain = False           # True: pretrain here even when trained weights can be loaded

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
# hard enough that copying neighbouring pixels does not solve it. The default patch is sized
# to the image (`mamim.default_mask_patch`): the largest of 16, 12, 8 or 4 px that divides
# the tile and leaves at least 16 patches in it, so that a mask ratio still means something (16 px at 64 px).

# %%
from ssmamba_lite.course.figures import image_row
from ssmamba_lite.engine.data import find_unlabelled, load_image
from ssmamba_lite.engine.transforms import eval_transform
from ssmamba_lite.mamim import MaskGenerator, upsample_mask

pool = find_unlabelled(data_dir)
print(f"{len(pool)} unlabelled tiles in {data_dir}")
pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n_show].tolist()
tiles = torch.stack([eval_transform(image_size)(load_image(pool.paths[i])) for i in pick])
ratios = [0.2, 0.4, 0.6, 0.8]
views = [tiles[0]]
for r in ratios:
    m = MaskGenerator(image_size, mask_patch_size or None, 4, r)(
        1, torch.Generator().manual_seed(seed))
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
                             (2, 64, 32, 0.4)], start=1):
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
# ## 3. Pretraining, or a trained encoder
#
# `ssmamba_lite.engine.train.pretrain` runs the loop: AdamW, warm-up then cosine learning rate,
# the views above plus flips, rotations and stain jitter, a checkpoint after every epoch.
# It writes `mamim/encoder.safetensors` into `output_dir`: notebooks 05 and 09 of the same run
# look for it there (`ssmamba_lite/course/handoff.py`).
#
# Which images? The paper pretrains *on the target dataset itself*. Here that is the training
# part of `data_dir` (its own split, or the patient split fine-tuning makes with the same
# seed), labels unused, plus the `extra_data` pool minus any image of a held-out patient: the
# patients we will judge on stay unseen by both stages. `pretrain` prints the count and writes
# the patients it saw to `pretrain_patients.json`, which fine-tuning checks.
#
# **Trained weights instead.** Pretraining takes a while, so, unless `retrain = True`, this
# notebook loads the MAMIM encoder that ships with the package when it was made
# for these settings (`ssmamba_lite_cpu`, 64 px, `sample:idc-breast`; made by `ssmamba-lite
# course weights`, see `ssmamba_lite/sample_data/weights/README.md`), and says so. With other
# data, model or image size it trains here.

# %%
import json

from ssmamba_lite.course.handoff import find
from ssmamba_lite.course.weights import PRETRAIN
from ssmamba_lite.engine.train import PretrainConfig, pretrain

run_dir = out / "mamim"
other_decoder = decoder != PRETRAIN["decoder"]      # the shipped encoder has the default one
if other_decoder and not retrain:
    print(f"decoder={decoder!r}: the shipped weights have the {PRETRAIN['decoder']} decoder, "
          f"so this notebook pretrains here")
found = find("mamim_encoder", output_dir, data_dir, model, model_args, image_size,
             retrain or other_decoder, here="04_mamim_pretraining")
print(found.message)
if found.path is None:
    cfg = PretrainConfig(data=str(data_dir), out=str(run_dir), overwrite=True, model=model,
                         model_args=model_args, image_size=image_size, epochs=epochs,
                         batch_size=batch_size, lr=lr, seed=seed, device=device,
                         mask_ratio=mask_ratio, mask_patch_size=mask_patch_size,
                         decoder=decoder, min_zoom=min_zoom, max_zoom=max_zoom,
                         max_steps_per_epoch=max_steps_per_epoch, progress=progress,
                         extra_data=extra_data)
    history = pretrain(cfg)
    print(f"encoder weights: {run_dir / 'encoder.safetensors'}")
else:
    history = json.loads((found.path / "history.json").read_text())   # its pretraining run

# %% [markdown]
# The loss per epoch, of the run trained here or of the loaded encoder's pretraining run (its
# `history.json`). It counts hidden pixels only, on the zoomed and jittered training views.

# %%
import pandas as pd
from IPython.display import display

hist = pd.DataFrame(history)
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(hist["epoch"], hist["loss"], marker="o")
ax.set_xlabel("epoch"), ax.set_ylabel("masked reconstruction loss")
ax.set_title("MAMIM loss (hidden pixels only)" if found.path is None
             else "MAMIM loss of the loaded run")
ax.grid(alpha=0.3)
fig.tight_layout()
save_figure(fig, out, "loss_curve")
plt.show()
display(hist)

# %% [markdown]
# ### Why the decoder must see every stage
#
# The encoder's last stage is 32 times coarser than the tile. A decoder that reads only that
# map (SimMIM's one-layer head, `decoder = "linear"`) paints each 32 x 32 pixel square
# linearly from one vector; at 64 px the map is 2 x 2, so one vector paints four 16 px mask
# patches at once, and a hidden patch can only be filled with something close to its mean.
# The hierarchical decoder reads every stage and paints each 4 x 4 block from a vector of its
# own. The figure shows the masked loss per epoch of both heads, trained with the same seed and
# data (`benchmarks/mamim_decoders.py`, its command in the file it writes), and a third arm,
# `hier-remask`: the hierarchical decoder with SparK's re-masking, a mask token written over the
# hidden positions after every stage instead of at the stem only. 1.0 is the flat painter,
# which fills every hidden patch with its true mean colour.

# %%
from ssmamba_lite.engine.data import SAMPLE_ROOT

print("last-stage map at this image size: "
      f"{image_size // 32} x {image_size // 32} (one vector per 32 x 32 pixels)")
curves = json.loads((SAMPLE_ROOT / "weights" / "mamim_decoders.json").read_text())
fig, ax = plt.subplots(figsize=(4.8, 3))
for arm, r in curves["arms"].items():
    ax.plot(range(1, len(r["loss"]) + 1), r["loss"], marker=".", label=f"{arm} decoder")
ax.axhline(1.0, color="gray", ls="--", lw=1, label="flat painter")
ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
ax.set_xlabel("epoch"), ax.set_ylabel("masked loss (training views)"), ax.legend(fontsize=8)
ax.set_title(f"{curves['model']}, {curves['image_size']} px, {curves['pool']} tiles", fontsize=9)
ax.grid(alpha=0.3)
fig.tight_layout()
save_figure(fig, out, "decoders_loss_curves")
plt.show()
for arm, r in curves["arms"].items():
    print(f"{arm}: last epoch {r['loss'][-1]:.3f}; un-augmented tiles, eval mode: "
          f"{r['eval_train']:.3f} on training tiles, {r['eval_held_out']:.3f} on tiles of "
          f"held-out patients")
if {"hierarchical", "hier-remask"} <= set(curves["arms"]):
    gap = curves["arms"]["hier-remask"]["eval_held_out"] - \
        curves["arms"]["hierarchical"]["eval_held_out"]
    print(f"re-masking minus stem-only, held-out tiles: {gap:+.3f} (one seed per arm: no "
          f"interval, so no verdict; more seeds would say whether it is more than noise)")

# %% [markdown]
# ## 4. What it paints back
#
# Rows: the tile, what the network saw, and its reconstruction (visible pixels pasted back).
#
# **Read it with care.** The network predicts *standardised* pixels $y = (x - \mu_p)/\sigma_p$
# of each hidden mask patch $p$. To show them as colours, `MAMIM.reconstruct` multiplies by
# the *true* $\sigma_p$ and adds the *true* $\mu_p$ of the hidden patch, numbers the network
# never saw. So the average colour and contrast of every hidden patch in the bottom row come
# from the original tile; only the pattern inside the patch (where the dark and light spots
# are) is the network's. Judge the texture, not the colour.
#
# The shipped weights hold the encoder, the mask token and the hierarchical decoder (40k
# weights). A run trained here uses its own decoder. (A run of the linear head would ship
# without its 0.4M-weight decoder, over the package's size budget; given the encoder that
# decoder is a linear map, so `course.weights.fit_decoder` refits it in closed form.)
#
# **How much did it learn?** The cell also prints the loss of the laziest painter, which fills
# every hidden patch with its true mean colour (0 in standardised pixels; a loss of about 1).
# A model whose loss sits close to that one paints nearly flat patches, as a short
# pretraining or the linear head does; only a loss clearly below it means the network predicts
# structure. Even then, expect blur: a squared error is lowest for the *average* of all the
# fills that fit the visible context, so a hidden patch gets the smooth continuation of the
# edges and shades around it (a gland's border, the white of fat, the run of stroma), not the
# sharp nuclei that were there.

# %%
from ssmamba_lite.course.analysis import load_mamim
from ssmamba_lite.course.figures import reconstruction_figure
from ssmamba_lite.course.weights import shipped_mamim
from ssmamba_lite.engine.splits import pretraining_samples
from ssmamba_lite.mamim import patch_normalize, upsample_mask  # noqa: F811  (this cell stands alone)

gen = torch.Generator().manual_seed(seed)
if found.path is None:
    mamim = load_mamim(run_dir, dev)
else:
    seen = pretraining_samples(PretrainConfig(data=str(data_dir), extra_data=extra_data,
                                              seed=seed))
    fit_on = torch.randperm(len(seen), generator=gen)[:512].tolist()
    fit_tiles = torch.stack([eval_transform(image_size)(load_image(seen.paths[i]))
                             for i in fit_on])
    mamim, fit_loss = shipped_mamim(found.path, fit_tiles, dev, gen)
    how = "fitted in closed form" if mamim.decoder_kind == "linear" else "loaded"
    print(f"shipped {mamim.decoder_kind} decoder {how}: masked loss {fit_loss:.3f} on "
          f"{len(fit_on)} of the {len(seen)} training tiles (for scale, the pretraining run's "
          f"last epoch, on zoomed and jittered views: {history[-1]['loss']:.3f})")
mask = mamim.mask_generator(image_size)(len(tiles), gen).to(dev)
masked, result, _ = mamim.reconstruct(tiles.to(dev), mask)
if mamim.norm_pix_loss:
    with torch.no_grad():
        loss_here = float(mamim(tiles.to(dev), mask)[0])
    y = patch_normalize(tiles.float(), mamim.patch_size(image_size))[0]
    m_px = upsample_mask(mask.cpu(), mamim.stem_stride)
    flat = float((y ** 2 * m_px).sum() / (3 * m_px.sum()))    # the loss of predicting 0
    print(f"on these {len(tiles)} tiles: masked loss {loss_here:.3f}; painting every hidden "
          f"patch flat in its true mean colour would score {flat:.3f}")
fig = reconstruction_figure(masked, result, tiles, n=n_show)
fig.suptitle("reconstruction: hidden patches de-normalised with their true mean and std",
             fontsize=9)
fig.tight_layout()
save_figure(fig, out, "reconstructions")
plt.show()

# %% [markdown]
# ### Watching a pretraining run in TensorBoard
#
# `pretrain` writes TensorBoard events into its run folder: the masked loss and learning rate
# of every step, and after the first epoch, every `snapshot_every` epochs (5) and the last, a
# grid of the same `snapshot_images` tiles (8) with the same masks: masked input |
# reconstruction | original, one row per tile, so that the Images tab shows what the decoder
# learns to paint as training goes on. In JupyterLab:
#
#     %load_ext tensorboard
#     %tensorboard --logdir runs/notebooks/04_mamim_pretraining
#
# (`tensorboard --logdir runs` in a terminal shows every run at http://localhost:6006).
# When this notebook pretrained here, the cell below draws the first and the last grid from
# the event file itself.

# %%
from ssmamba_lite.engine.tracking import read_images

grids = read_images(run_dir).get("mamim/masked_reconstruction_original", []) \
    if found.path is None else []
if grids:
    import io

    from PIL import Image

    firstlast = [grids[0], grids[-1]] if len(grids) > 1 else grids
    fig, axes = plt.subplots(1, len(firstlast), figsize=(2.6 * len(firstlast), 6),
                             squeeze=False)
    for ax, (step, png) in zip(axes[0], firstlast):
        ax.imshow(Image.open(io.BytesIO(png)))
        ax.set_title(f"step {step}\nmasked | painted | original", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, out, "tensorboard_images")
    plt.show()
else:
    print("the loaded encoder's run folder keeps no TensorBoard events (its weights were made "
          "by `ssmamba-lite course weights`): set retrain = True, or run `ssmamba-lite "
          "pretrain ... --out runs/mine` and open TensorBoard on runs/")

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
    m = MaskGenerator(image_size, mamim.patch_size(image_size), 4, mask_ratio)(
        len(tiles), gen).to(dev)
    masked, result, _ = mamim.reconstruct(tiles.to(dev), m)
    reconstruction_figure(masked, result, tiles, n=min(4, n_show))
    plt.show()


_ = explorer(show_ratio, mask_ratio=widgets.FloatSlider(value=mask_ratio, min=0.1, max=0.9,
                                                        step=0.1, description="mask ratio"))

# %% [markdown]
# Up to 64 tiles at every ratio from 0.1 to 0.9, with fresh masks: the loss of the model above
# on their hidden pixels, beside the flat painter's (each hidden patch its true mean colour),
# and the ratio it was pretrained at (dotted).

# %%
pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed + 1))[:64]
many = torch.stack([eval_transform(image_size)(load_image(pool.paths[i])) for i in pick.tolist()])
target = patch_normalize(many.float(), mamim.patch_size(image_size))[0] \
    if mamim.norm_pix_loss else many.float()
rows = []
with torch.no_grad():
    for r in np.round(np.arange(0.1, 0.95, 0.1), 2):
        m = MaskGenerator(image_size, mamim.patch_size(image_size), 4, float(r))(len(many), gen)
        loss, _, _ = mamim(many.to(dev), m.to(dev))
        m_px = upsample_mask(m, mamim.stem_stride)
        flat = (target ** 2 * m_px).sum() / (3 * m_px.sum())     # the loss of predicting 0
        rows.append({"mask ratio": float(r), "loss": float(loss), "flat painter": float(flat)})
by_ratio = pd.DataFrame(rows)
better = by_ratio.loc[by_ratio["loss"] < by_ratio["flat painter"], "mask ratio"].tolist()
print(f"on {len(many)} tiles the model's loss is below the flat painter's at mask ratios "
      f"{better or 'none'}")
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.plot(by_ratio["mask ratio"], by_ratio["loss"], marker="o", label="model")
ax.plot(by_ratio["mask ratio"], by_ratio["flat painter"], ls="--", color="gray",
        label="flat painter")
ax.axvline(mamim.mask_ratio, color="k", ls=":", lw=1, label="trained at")
ax.set_xlabel("mask ratio"), ax.set_ylabel("loss on hidden pixels"), ax.legend(fontsize=8)
fig.tight_layout()
save_figure(fig, out, "loss_by_mask_ratio")
plt.show()

# %% [markdown]
# ## What you learned
#
# - SSMamba's abstract states that MAMIM pretrains on the *target* ROI data, without large
#   external data, to mitigate cross-magnification domain shift, before supervised
#   fine-tuning. Masks, decoder, loss and zooms here are this project's SimMIM-style design.
# - The decoder decides whether the pretext task can be learnt at all: a head on the 2 x 2
#   last-stage map of a 64 px tile paints near-flat patches; one that fuses every stage and
#   paints at the stem's stride gets below the flat painter (the decoder figure of section 3).
# - MAMIM hides square blocks of the tile, replaces their stem tokens with a learned mask
#   token (a scan needs every position), and scores only the hidden pixels, each mask patch
#   standardised.
# - A reconstruction shows the network's *pattern* inside each hidden patch; its mean colour
#   and contrast are the true patch's, put back for display.
# - The last figure puts the model's loss beside the flat painter's at every mask ratio; the
#   line above it lists the ratios where this model paints better than flat patches.
# - The encoder lands in `<output_dir>/mamim/encoder.safetensors`; the next notebooks find it
#   there, or load the shipped one, and print which (`course/handoff.py`).
#
# Next, [05 · Fine-tuning](05_finetuning.ipynb) trains a classifier from this encoder and from
# scratch, and compares them on held-out patients. `mamim_encoder_path` there still takes any
# `encoder.safetensors` explicitly.

# %% [markdown]
# ## Self-check
#
# **Q1** (1 point). A 64 px tile, mask patches of 16 px, `mask_ratio = 0.6`: how many mask
# patches does `MaskGenerator` hide in each tile? Set `q1_hidden_patches`.

# %% nbgrader={"grade": false, "grade_id": "q1_hidden_patches", "locked": false, "schema_version": 3, "solution": true, "task": false}
q1_hidden_patches = None     # your answer: a whole number
### BEGIN SOLUTION
q1_hidden_patches = 10
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q1_hidden_patches_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q1", q1_hidden_patches, "4a44dc15364204a8", decimals=0)

# %% [markdown]
# **Q2** (1 point). In that setting, which share of a tile's pixels does the loss count? (Not
# 0.6: think about the rounding.) Three decimals; set `q2_loss_share`.

# %% nbgrader={"grade": false, "grade_id": "q2_loss_share", "locked": false, "schema_version": 3, "solution": true, "task": false}
q2_loss_share = None     # your answer: a number between 0 and 1
### BEGIN SOLUTION
q2_loss_share = 0.625
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q2_loss_share_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q2", q2_loss_share, "42c2fafec1898f65", decimals=3)

# %% [markdown]
# **Q3** (1 point). Which of these does SSMamba's abstract state? Set `q3_abstract` to `"a"`,
# `"b"`, `"c"` or `"d"`.
#
# - (a) MAMIM hides 60% of each image.
# - (b) SSL pretraining runs on the target ROI datasets, without large external datasets.
# - (c) MAMIM's decoder is a single linear layer.
# - (d) MAMIM drops the hidden tokens, as MAE does.

# %% nbgrader={"grade": false, "grade_id": "q3_abstract", "locked": false, "schema_version": 3, "solution": true, "task": false}
q3_abstract = None     # your answer: "a", "b", "c" or "d"
### BEGIN SOLUTION
q3_abstract = "b"
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q3_abstract_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q3", q3_abstract, "3e23e8160039594a")

# %% [markdown]
# **Q4** (not graded). Why does MAMIM replace hidden tokens with a mask token instead of
# dropping them, as MAE does with a Vision Transformer?
#
# <details><summary>Answer</summary>
#
# A transformer treats its input as a set (positions come from embeddings), so MAE can feed
# only the visible tokens. A DMS scan walks the token map along fixed orders (rows, columns,
# their reverses, windows): dropping tokens would break those paths and the 2D layout that the
# convolutions of the stem, LPR and the conv stages rely on. Keeping every position and marking
# the hidden ones with a learned token keeps the map whole.
#
# </details>
#
# **Q5** (not graded). A reconstruction in section 4 looks almost right in colour. What does
# that tell you about the network?
#
# <details><summary>Answer</summary>
#
# Little. The network predicts standardised pixels; the figure puts back each hidden patch's
# *true* mean and standard deviation, so the colour and contrast of each patch come from the
# original tile. Only the arrangement inside the patch is predicted. The loss numbers (and 05's
# fine-tuning) are the measurements; the picture is an illustration.
#
# </details>

# %% [markdown]
# ## Exercises
#
# 1. **Train it yourself.** Set `retrain = True` (and `epochs = 10`) and compare the loss
#    curve and reconstructions with the shipped encoder's (100 epochs). After how many epochs
#    do the hidden patches stop being flat, and where does the blur come from (section 4)?
# 2. **The linear head.** Set `decoder = "linear"` (the notebook then pretrains here) with
#    `epochs = 10`: compare its loss with the flat painter's in section 5 and look at its
#    reconstructions. Then set `image_size = 128` (a 4 x 4 last-stage map): does the linear
#    head's gap to the hierarchical decoder shrink?
# 3. **Mask ratio.** Pretrain with `mask_ratio = 0.3` and `0.8` (with `retrain = True`) and
#    compare the curves of section 5: does the model trained on the harder task also do better
#    at easy ratios?
# 4. **Mask patch size.** With `retrain = True`, try `mask_patch_size = 8` and `32` (at 64 px,
#    32 px patches leave only 4 per tile). Small patches can be filled by copying neighbours;
#    what happens to the loss, and to what the encoder must learn?
# 5. **No zoom.** Set `min_zoom = max_zoom = 1.0` (with `retrain = True`; the shipped encoder
#    was pretrained with zooms) to pretrain at one magnification; notebook
#    [08](08_cross_magnification.ipynb) measures what the zooms do for a classifier.
# 6. **Your own tiles.** Point `data_dir` at a folder of your own tiles; the shipped weights
#    will not fit (other data), and the notebook says why and trains.
