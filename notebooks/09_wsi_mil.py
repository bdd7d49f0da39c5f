# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
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
# # 09 · Whole-slide images: tiles, features and slide-level classification (MIL)
#
# **What.** A pathologist's diagnosis is about a whole slide, not a tile. A whole-slide image
# (WSI) is far too large for any network (level 0 of a slide is often 100,000 x 100,000
# pixels), so slide-level models work in two steps:
#
# 1. **Tiles → features.** Find the tissue, cut it into tiles, and encode every tile with a
#    frozen encoder (here an SSMamba encoder): a slide becomes a *bag* of feature vectors.
# 2. **Bag → label (multiple-instance learning, MIL).** An aggregator weighs the tiles with
#    *attention* and classifies their weighted mean. We build two: **ABMIL** (gated
#    attention, a set of tiles) and **Mamba-MIL** (Mamba layers over the tile *sequence*
#    before the same attention pooling).
#
# **Why.** The SSMamba abstract ([arXiv:2604.15711](https://arxiv.org/abs/2604.15711)) also
# makes a slide-level claim: SSMamba outperforms 8 methods on 6 WSI datasets. The abstract does
# not say how its slide-level pipeline is built; the pipeline here (tiles, frozen features,
# ABMIL or a Mamba aggregator) is this project's own, the standard recipe of the papers below.
# This notebook is the path from a slide file to a slide-level prediction and an attention
# heatmap.
#
# **Papers.** ABMIL: Ilse, Tomczak & Welling, *Attention-based Deep Multiple Instance
# Learning*, ICML 2018 ([arXiv:1802.04712](https://arxiv.org/abs/1802.04712)). MambaMIL: Yang et
# al., *MambaMIL: Enhancing Long Sequence Modeling with Sequence Reordering in Computational
# Pathology*, MICCAI 2024 ([arXiv:2403.06800](https://arxiv.org/abs/2403.06800)).
#
# **Honest limits.** We have one real slide (unlabelled), so slide-level *learning* is shown on
# a **constructed benchmark**: bags of real IDC breast patches, one patient per bag, positive
# iff the bag holds at least one IDC-positive patch. The encoder is pretrained here with MAMIM
# on the tissue tiles of the slide itself (the paper's self-supervised-on-target idea, on a
# slide), a few epochs on a few dozen tiles: enough to show the path, far from a trained
# encoder. `checkpoint = "none"` gives random weights instead, a baseline for the mechanics.

# %% [markdown]
# ## Learning objectives
#
# After this notebook you can
# - take a slide file to a bag of tile features: tissue mask (Otsu), tiles at a physical scale
#   (µm per pixel), a frozen encoder, a feature cache;
# - write the attention pooling of ABMIL and say what Mamba-MIL adds before it, and why a
#   sequence model depends on the *order* of the tiles while ABMIL does not (measured here);
# - train both on bag labels only and evaluate them on bags of unseen patients;
# - read an attention heatmap honestly: colours by attention value, the uniform level 1/n, and
#   numbers for how far a bag's weights are from uniform.

# %% [markdown]
# ## Prerequisites
#
# - [08 · cross-magnification](08_cross_magnification.ipynb), the notebook before this one, and
#   [04 · MAMIM pretraining](04_mamim_pretraining.ipynb) (the encoder's pretraining);
# - [02 · the selective scan](02_selective_scan_from_scratch.ipynb): a Mamba layer is a
#   recurrence over a sequence, so what comes first changes what comes after;
# - softmax, a weighted mean, and cross-entropy.
#
# This is the last notebook of the course.

# %% tags=["parameters"]
data_dir = "sample:idc-breast"   # labelled patches with patient ids (labels.csv): the benchmark
output_dir = "runs/notebooks/09_wsi_mil"
image_size = 64          # tiles and patches are resized to this before the encoder
epochs = 10              # MIL training epochs
batch_size = 8           # bags per optimizer step
device = "auto"          # "auto": the GPU if there is one, else the CPU
seed = 0
slide_path = "sample:cmu-small-region/cmu_small_region.svs"   # any .svs/.tif slide
tile_size = 128          # tile side in pixels at the target resolution
tile_mpp = 1.0           # target µm/px (about 10x; the slide was scanned at 0.499 µm/px, 20x)
checkpoint = "mamim"     # "mamim": pretrain here on the slide's own tiles (section 2); "04":
                         # notebook 04's MAMIM encoder (this run's, else the shipped IDC one);
                         # an encoder folder or .safetensors file; "none": random weights
pretrain_epochs = 8      # MAMIM epochs on the tissue tiles of the slide (checkpoint mamim)
model = "ssmamba_lite_cpu"      # the laptop-sized preset (a checkpoint brings its own config)
bag_size = 4             # constructed benchmark: at most this many patches per bag
lr = 1e-3

# %%
import os

# PyTorch and numba (the CPU scan) each keep a pool of threads; let idle ones sleep rather than
# spin, or on a machine with few cores they slow each other down (set before importing torch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ssmamba_lite.course.runner import require_data
from ssmamba_lite.engine.data import resolve_data

data_dir = require_data(data_dir, dataset="idc-breast")
idc_labels = data_dir / "labels.csv"
slide_path = resolve_data(slide_path)
if not idc_labels.is_file():
    raise FileNotFoundError(f"{idc_labels} is missing: the constructed benchmark needs a "
                            f"labels.csv with path,label,patient_id in data_dir")
if not slide_path.is_file():
    raise FileNotFoundError(f"slide_path {str(slide_path)!r} does not exist: set it to any "
                            f".svs/.tif slide")
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(seed)


def save(fig, name):
    """Every figure is also written as a PNG into output_dir."""
    fig.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")


print("slide:", slide_path.resolve(), "\nfigures:", out.resolve())

# %% [markdown]
# ## 1. A slide, its tissue and its tiles
#
# `Slide` reads the file with OpenSlide (tifffile is the fallback). Level 0 is the full
# resolution; the file records its microns per pixel (mpp) and objective power. Tiles are cut
# at a *physical* scale: a tile of `tile_size` pixels at `tile_mpp` µm/px covers
# `tile_size x d` level-0 pixels, with the downsample d = tile_mpp / (the slide's mpp). A
# cohort mixing 20x (about 0.5 µm/px) and 40x (about 0.25) scans then gets tiles of the same
# size in µm; tiling every slide at its level 0 would not.
#
# **Tissue.** Stained tissue is coloured, glass is white or grey: on a small thumbnail we
# threshold the *saturation* channel at the Otsu threshold (the value that best splits the
# histogram into two classes, maximising the between-class variance
# σ_b²(t) = ω0(t) ω1(t) (μ0(t) − μ1(t))²). A tile is kept when at least half of it is tissue.

# %%
from ssmamba_lite.wsi.slide import Slide, target_downsample
from ssmamba_lite.wsi.tiles import tile_coords, tissue_mask

with Slide(slide_path) as slide:
    d = target_downsample(slide, mpp=tile_mpp)
    tile_size0 = round(tile_size * d)
    thumb = slide.thumbnail(1024)
    mask = tissue_mask(thumb)
    coords = tile_coords(slide.size, tile_size0, mask, min_tissue=0.5)
    examples = [slide.read(x, y, tile_size0, tile_size) for x, y in coords[:: max(1, len(coords) // 6)][:6]]
    size0, mpp, mag = slide.size, slide.mpp, slide.magnification
print(f"level 0: {size0[0]} x {size0[1]} px, {mpp} µm/px, scanned at {mag}x")
print(f"tiles of {tile_size} px at {tile_mpp} µm/px = {tile_size0} level-0 px; "
      f"{len(coords)} of them on tissue, tissue covers {mask.mean():.0%} of the thumbnail")

# %%
from matplotlib.patches import Rectangle

s = thumb.shape[1] / size0[0]                       # thumbnail pixels per level-0 pixel
fig, axes = plt.subplots(1, 3, figsize=(12, 5.5))
axes[0].imshow(thumb)
axes[0].set_title("thumbnail")
axes[1].imshow(mask, cmap="gray")
axes[1].set_title("tissue mask (Otsu on saturation)")
axes[2].imshow(thumb)
for x, y in coords:
    axes[2].add_patch(Rectangle((x * s, y * s), tile_size0 * s, tile_size0 * s, fill=False,
                                edgecolor="lime", linewidth=0.8))
axes[2].set_title(f"{len(coords)} tissue tiles")
for ax in axes:
    ax.axis("off")
save(fig, "tiles")
plt.show()

fig, axes = plt.subplots(1, len(examples), figsize=(2 * len(examples), 2.2))
for ax, tile in zip(np.atleast_1d(axes), examples):
    ax.imshow(tile)
    ax.axis("off")
fig.suptitle(f"some tiles ({tile_size} px at {tile_mpp} µm/px)")
save(fig, "tile_examples")
plt.show()

# %% [markdown]
# ## 2. MAMIM on the slide's own tiles
#
# SSMamba's premise is self-supervised pretraining on the *target* data, with no external
# dataset. For slides, the target data is the tissue of the slides themselves: `find_tiles`
# picks the tiles exactly as the extraction below will (same mask, grid, physical scale),
# MAMIM (notebook 04) reads them from the slide as batches need them (nothing is copied) and
# is trained to fill in their masked patches (on one small slide, too few tiles to learn much:
# the cell prints how far the loss gets below the flat painter's). No label is used; still, pass
# only the slides the model may see (keep a test cohort out). From the command line:
#
#     ssmamba-lite wsi pretrain --slides TRAIN_SLIDES --out runs/wsi_mamim --epochs 10
#     ssmamba-lite wsi extract --slides SLIDES --out FEATURES --checkpoint runs/wsi_mamim
#
# `checkpoint = "04"` takes the encoder of [04](04_mamim_pretraining.ipynb) instead: the one
# 04 pretrained in the same run, else the one that ships with the package, when it was made
# for `data_dir`, `model` and `image_size` (`ssmamba_lite/course/handoff.py`; the next cell
# says which). It was pretrained on IDC patches, the target data of the constructed benchmark
# of section 5, not on this slide, and **on patients that benchmark tests on**: 04's
# pretraining held out the validation patients of the course's fine-tuning split, while the
# benchmark draws a split of its own. Its test scores with that encoder are optimistic (the
# leak 05 warns about); section 5 prints how many of its test patients the encoder saw.

# %%
from ssmamba_lite.course.handoff import find
from ssmamba_lite.wsi.pretrain import pretrain_on_slides

if checkpoint == "04":
    found = find("mamim_encoder", output_dir, data_dir, model, {}, image_size)
    if found.path is None:
        print(f"checkpoint='04': no encoder of notebook 04 fits, so MAMIM pretrains on the "
              f"slide instead ({found.message})")
        checkpoint = "mamim"
    else:
        print(found.message)
        checkpoint = str(found.path)
if checkpoint == "mamim":
    t0 = time.time()
    mamim_history = pretrain_on_slides(
        [slide_path], out / "slide_mamim", tile_size=tile_size, mpp=tile_mpp, model=model,
        image_size=image_size, epochs=pretrain_epochs, batch_size=16, seed=seed, device=device,
        progress=False)
    checkpoint = str(out / "slide_mamim")
    losses = [h["loss"] for h in mamim_history]
    print(f"MAMIM on {len(coords)} tiles of the slide, {len(losses)} epochs in "
          f"{time.time() - t0:.0f} s: masked-patch loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"for scale: 1.0 is the flat painter (each hidden patch filled with its own mean "
          f"colour); this run ends at {losses[-1]:.3f}, {losses[-1] - 1.0:+.3f} against it. "
          f"A few dozen tiles of one small slide teach the pretext task little: this section "
          f"shows the mechanics, and notebook 04 trains MAMIM on thousands of tiles")
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot(range(1, len(losses) + 1), losses, marker="o")
    ax.axhline(1.0, color="gray", ls="--", lw=1, label="flat painter")
    ax.legend(fontsize=8)
    ax.set_xlabel("epoch"), ax.set_ylabel("MAMIM loss (masked patches)")
    ax.set_title("MAMIM on the slide's own tiles", fontsize=9)
    save(fig, "slide_mamim_loss")
    plt.show()

# %% [markdown]
# ## 3. Tiles → features, cached per slide
#
# `extract_cohort` does section 1 for every slide of a folder or cohort list, encodes the
# tiles in batches and writes `<slide>.h5` (features, coordinates, thumbnail, tile count,
# the encoder's fingerprint). A slide already extracted with the same encoder and settings is
# skipped, so an interrupted run resumes; an unreadable slide is reported by name and the
# others still run. From the command line, in one process or spread over processes, GPUs and
# machines by torchrun (each process claims the next slide, largest first):
#
#     ssmamba-lite wsi extract --slides SLIDES_DIR --out FEATURES_DIR --checkpoint ENCODER \
#         --tile-size 224          # at 0.5 µm/px, the default --mpp
#     torchrun --nproc-per-node 2 -m ssmamba_lite.cli wsi extract ...   # the same, 2 ranks
#
# With `checkpoint = "none"` the encoder has random weights: fine for the mechanics, not a
# result. The encoder's pooled output (`forward_head(..., pre_logits=True)`) is one vector of
# C numbers per tile.

# %%
from ssmamba_lite.wsi.cohort import extract_cohort
from ssmamba_lite.wsi.features import load_tile_encoder, read_features

encoder = load_tile_encoder(checkpoint, model, seed=seed)
t0 = time.time()
report = extract_cohort([slide_path], out / "slide_features", encoder, overwrite=True,
                        tile_size=tile_size, mpp=tile_mpp,
                        image_size=image_size, batch_size=32, device=device,
                        encoder_name=f"{model}:{checkpoint}")
slide_bag = read_features(out / "slide_features" / f"{slide_path.stem}.h5")
print({k: report[k] for k in ("done", "skipped", "failed", "tiles", "wall_seconds")})
print(f"features {slide_bag['features'].shape}, coords {slide_bag['coords'].shape} "
      f"in {time.time() - t0:.1f} s")

# %% [markdown]
# ## 4. The aggregators
#
# For a bag of tile features x_1..x_n (standardised with the training set's mean and standard
# deviation), both aggregators compute
#
# | step | equation | shape |
# |---|---|---|
# | embed | h_k = ReLU(W_e x_k) | (n, E) |
# | gated attention | a_k = softmax_k( w^T (tanh(V h_k) ⊙ sigmoid(U h_k)) ) | (n,) |
# | pool | z = Σ_k a_k h_k | (E,) |
# | classify | p(y) = softmax(W_c z) | (K,) |
#
# **ABMIL** treats the tiles as a *set*: the sum Σ_k a_k h_k, and the softmax over k, do not
# change when the tiles are listed in another order. **Mamba-MIL** first runs Mamba layers over
# the tiles *in the order the bag lists them* (h ← h + Mamba(LayerNorm(h)), forward and
# backward), so each tile embedding carries context from the tiles before and after it in that
# list. A Mamba layer is a recurrence (notebook 02): h_t depends on the inputs 1..t in their
# order, so another order gives other embeddings, other attention and another prediction.
#
# Which order is that? For a slide, `wsi extract` lists the tiles row by row over the slide
# (raster order, `tile_coords`), so neighbours in the list are mostly neighbours on the slide:
# the order that MambaMIL ([arXiv:2403.06800](https://arxiv.org/abs/2403.06800)) scans, plus a
# reordered sequence in a second branch. In the constructed benchmark of section 5 the patches
# of a bag come from one patient in a *random* order (they are shuffled when the bag is made)
# and have no position on a slide: there, the sequence carries no spatial information, and
# whatever Mamba-MIL does with the order is noise. Section 5 measures how much the order moves
# each aggregator's predictions.
#
# Bags have different lengths. To train several bags per step they are padded on the right
# with a mask; this is *exact*: padded tiles get attention 0, and the aggregator's forward
# scan is causal, so padding after a bag never reaches its tiles. The aggregator is
# bidirectional, though: its backward scan runs from the end, and over the padded length it
# would start in the padding. So each bag is reversed within its own length
# (`mil.reverse_within`), the padding stays after the reversed tiles, and the backward scan is
# causal over them too (the test suite checks that padding changes nothing).

# %%
from ssmamba_lite.wsi.mil import MILAggregator, MILConfig

for aggregator in ("abmil", "mamba"):
    net = MILAggregator(MILConfig(in_dim=slide_bag["features"].shape[1], aggregator=aggregator,
                                  hidden=64, attn_dim=32, layers=1, d_state=8))
    print(f"{aggregator:6s} {sum(p.numel() for p in net.parameters()):7,d} parameters")

# %% [markdown]
# ## 5. A constructed benchmark: bags of real IDC patches
#
# We have no labelled slides here, so we *construct* bags from `idc_breast` (50 x 50 px
# patches, labelled IDC-negative / IDC-positive, with patient ids). For every patient:
# negative bags hold negative patches only; in a positive bag, between one and all of its
# patches are positive (the "witnesses"). Bag label = positive iff it holds at least one
# positive patch. Patients are split into train / val / test, so the test bags come from
# patients the model never saw. This checks that the *pipeline learns*; it is not a
# slide-level dataset and its numbers are not comparable to the paper's.
#
# The patch features come from the same encoder as the slide's tiles, so a trained
# aggregator can be run on the slide afterwards. (`ssmamba-lite mil patch-bags` builds the
# same benchmark from the command line.)

# %%
from ssmamba_lite.engine.metrics import format_metrics
from ssmamba_lite.wsi import bench as mil_bench
from ssmamba_lite.wsi import train as mil_train

t0 = time.time()
bench_labels = mil_bench.write_patch_bags(idc_labels, out / "idc_bags", encoder,
                                          bag_size=bag_size, image_size=image_size, seed=seed,
                                          device=device)
bags, classes = mil_train.load_bags(out / "idc_bags" / "features", bench_labels)
split = mil_train.split_bags(bags)
counts = pd.DataFrame({name: {c: sum(b.label == i for b in part) for i, c in enumerate(classes)}
                       for name, part in split.items()}).T
seen_by = Path(checkpoint) / "pretrain_patients.json" if checkpoint not in ("none", "mamim") \
    else None
if seen_by is not None and Path(checkpoint).is_dir() and seen_by.is_file():
    test_patients = {b.patient for b in split["test"]}
    leaked = test_patients & set(json.loads(seen_by.read_text())["patients"])
    print(f"the encoder's MAMIM saw images of {len(leaked)} of the {len(test_patients)} test "
          f"patients" + (": its test scores here are optimistic" if leaked else ""))
print(f"{len(bags)} bags, {sum(len(b.features) for b in bags)} patches, "
      f"features in {time.time() - t0:.1f} s")
counts.astype(int)

# %%
from PIL import Image

patch_bags = {b["name"]: b for b in mil_bench.make_patch_bags(idc_labels, bag_size, seed=seed)}
truth = pd.read_csv(idc_labels).set_index("path")["label"]


def witnesses(bag):
    """How many patches of a bag are IDC-positive (known to us, hidden from the model)."""
    return sum(truth[p.relative_to(idc_labels.parent).as_posix()] == "idc_positive"
               for p in patch_bags[bag.name]["paths"])


# the positive test bag with the fewest witnesses (the hardest kind), and a negative one
show = [min((b for b in split["test"] if b.label == 1), key=lambda b: (witnesses(b), -len(b.features))),
        next(b for b in split["test"] if b.label == 0)]
fig, axes = plt.subplots(2, bag_size, figsize=(1.6 * bag_size, 3.8))
for row, bag in zip(axes, show):
    paths = patch_bags[bag.name]["paths"]
    for ax in row:
        ax.axis("off")
    for ax, p in zip(row, paths):
        ax.imshow(Image.open(p))
        rel = p.relative_to(idc_labels.parent).as_posix()
        ax.set_title("IDC+" if truth[rel] == "idc_positive" else "IDC-", fontsize=8)
    row[0].text(-10, 25, classes[bag.label], ha="right", va="center")
fig.suptitle("a positive and a negative test bag (patch labels are hidden from the model)")
save(fig, "example_bags")
plt.show()

# %% [markdown]
# ### Training both aggregators
#
# `train_mil` trains with AdamW and cross-entropy on the bag labels, validates every epoch
# and keeps the epoch with the best validation AUROC. Same from the command line:
#
#     ssmamba-lite mil train --features DIR --labels CSV --out RUN --aggregator mamba

# %%
histories, metrics = {}, {}
for aggregator in ("abmil", "mamba"):
    run = out / f"mil_{aggregator}"
    cfg = MILConfig(aggregator=aggregator, hidden=64, attn_dim=32, layers=1, d_state=8)
    tcfg = mil_train.MILTrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                    device=device)
    t0 = time.time()
    histories[aggregator] = mil_train.train_mil(split["train"], split["val"], classes, run,
                                                cfg, tcfg)["history"]
    metrics[aggregator] = mil_train.evaluate_mil(run, split["test"], classes, run / "test",
                                                 device=device)
    print(f"{aggregator}: {time.time() - t0:.1f} s, test {format_metrics(metrics[aggregator])}")

table = pd.DataFrame({a: {k: m[k] for k in ("accuracy", "balanced_accuracy", "auroc", "n")}
                      for a, m in metrics.items()}).T
table.to_csv(out / "test_metrics.csv")
majority = max(np.mean([b.label == k for b in split["test"]]) for k in range(len(classes)))
print(f"chance: balanced accuracy 0.5 and AUROC 0.5; always the majority class: accuracy "
      f"{majority:.2f}")
for aggregator, m in metrics.items():
    above = m["balanced_accuracy"] > 0.5 and m["auroc"] > 0.5 and m["accuracy"] > majority
    print(f"{aggregator}: " + ("above chance and the majority rate on every count" if above else
                               "not above chance on every count: this run does not show that it "
                               "learnt the bag labels"))
table.round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for aggregator, history in histories.items():
    ep = [h["epoch"] for h in history]
    axes[0].plot(ep, [h["train_loss"] for h in history], marker="o", label=aggregator)
    axes[1].plot(ep, [h["val"]["auroc"] for h in history], marker="o", label=aggregator)
axes[0].set(xlabel="epoch", ylabel="training loss")
axes[1].set(xlabel="epoch", ylabel="validation AUROC", ylim=(0.4, 1.0))
axes[1].axhline(0.5, color="gray", linestyle=":", label="chance")
axes[1].legend()
save(fig, "learning_curves")
plt.show()

# %% [markdown]
# ### Does the order of the tiles matter?
#
# We list the tiles of every test bag in another (random, seeded) order and predict again. For
# ABMIL the probabilities should move only by floating-point rounding; for Mamba-MIL they move
# as much as the order matters to the trained scan. On these shuffled bags no order is the
# right one, so this measures the sensitivity, not a gain.

# %%
from dataclasses import replace

rng = np.random.default_rng(seed)
reordered = []
for b in split["test"]:
    perm = rng.permutation(len(b.features))
    reordered.append(replace(b, features=b.features[perm], coords=np.asarray(b.coords)[perm]))
order_rows = {}
for aggregator in ("abmil", "mamba"):
    net, _ = mil_train.load_mil(out / f"mil_{aggregator}")
    p_orig, _ = mil_train.predict_bags(net, split["test"])
    p_perm, _ = mil_train.predict_bags(net, reordered)
    change = np.abs(p_orig[:, 1] - p_perm[:, 1])
    order_rows[aggregator] = {"max |Δp|": change.max(), "mean |Δp|": change.mean(),
                              "decisions changed": int((p_orig.argmax(1) != p_perm.argmax(1)).sum()),
                              "bags": len(change)}
order_table = pd.DataFrame(order_rows).T
print(order_table.to_string(formatters={"max |Δp|": "{:.2e}".format, "mean |Δp|": "{:.2e}".format,
                                        "decisions changed": "{:.0f}".format,
                                        "bags": "{:.0f}".format}))
ratio = order_rows["mamba"]["max |Δp|"] / max(order_rows["abmil"]["max |Δp|"], 1e-12)
print(f"\nreordering the tiles moves Mamba-MIL's p(positive) by up to "
      f"{order_rows['mamba']['max |Δp|']:.2e}, ABMIL's by up to "
      f"{order_rows['abmil']['max |Δp|']:.2e} ({ratio:.1e} times less for ABMIL): "
      + ("ABMIL is order-invariant up to rounding, Mamba-MIL is not"
         if order_rows["abmil"]["max |Δp|"] < 1e-5 < order_rows["mamba"]["max |Δp|"]
         else "see the table"))

# %% [markdown]
# ### Where does attention go?
#
# In a positive bag, a good aggregator should put its attention on the IDC-positive patches
# (the witnesses), although it was only ever told the *bag* label. The weights of a bag of n
# patches sum to 1, so **1/n is the uniform level**: a plain average of the patches. Two numbers
# say how far a bag's weights a_1..a_n are from it (`wsi.heatmap.attention_spread`):
#
# $$n \cdot \max_k a_k \quad (1 = \text{uniform},\ n = \text{one patch takes all}), \qquad
# \frac{H(a)}{\log n} = \frac{-\sum_k a_k \log a_k}{\log n} \quad (1 = \text{uniform},\ 0 =
# \text{one patch}).$$

# %%
model_abmil, _ = mil_train.load_mil(out / "mil_abmil")
_, attention = mil_train.predict_bags(model_abmil, show[:1])
paths = patch_bags[show[0].name]["paths"]
fig, axes = plt.subplots(1, len(paths), figsize=(1.8 * len(paths), 2.3))
for ax, p, a in zip(np.atleast_1d(axes), paths, attention[0]):
    ax.imshow(Image.open(p))
    rel = p.relative_to(idc_labels.parent).as_posix()
    ax.set_title(f"a={a:.2f}\n{'IDC+' if truth[rel] == 'idc_positive' else 'IDC-'}", fontsize=9)
    ax.axis("off")
fig.suptitle(f"ABMIL attention in a positive test bag (uniform: 1/n = {1 / len(paths):.2f})")
save(fig, "bag_attention")
plt.show()

# %%
from ssmamba_lite.wsi.heatmap import attention_spread

spread = attention_spread(attention[0])
print(f"this bag: n = {spread['n']}, n·max a = {spread['max_times_n']:.3f}, "
      f"H/log n = {spread['entropy_ratio']:.3f}")
positives = [b for b in split["test"] if b.label == 1]
_, test_attention = mil_train.predict_bags(model_abmil, positives)
spreads = pd.DataFrame([attention_spread(a) for a in test_attention])
hits = [witnesses(b) > 0 and truth[patch_bags[b.name]["paths"][int(np.argmax(a))]
                                  .relative_to(idc_labels.parent).as_posix()] == "idc_positive"
        for b, a in zip(positives, test_attention)]
chance = np.mean([witnesses(b) / len(b.features) for b in positives])
print(f"{len(positives)} positive test bags: n·max a median {spreads.max_times_n.median():.2f} "
      f"(max {spreads.max_times_n.max():.2f}), H/log n median {spreads.entropy_ratio.median():.3f}")
print(f"the most-attended patch is IDC-positive in {np.mean(hits):.0%} of them; picking a patch "
      f"at random would give {chance:.0%}")
near_uniform = spreads.max_times_n.median() < 1.25
print("reading: " + ("the weights stay close to uniform (median n·max a below 1.25), so the "
                     "pooling is close to a plain average of the patches" if near_uniform else
                     "the weights are clearly not uniform: ABMIL singles out some patches")
      + (f"; the largest weight lands on a witness more often than a random pick would "
         f"({np.mean(hits):.0%} against {chance:.0%}, {len(hits)} bags)" if np.mean(hits) > chance
         else "; the largest weight lands on a witness no more often than a random pick"))

# %% [markdown]
# **Reading it.** The printed line above is computed from this run. Weights near 1/n each
# (n·max a near 1, H/log n near 1) mean the aggregator has not learnt to single out the
# witnesses and works as a plain average of the patches; the hit rate against the random-pick
# rate says whether the largest weight lands on a witness more often than chance. Weak features
# (a few epochs of MAMIM on one slide's tiles, or random weights) and few epochs favour the
# former; exercise 1 tries a trained `checkpoint` and more epochs.

# %% [markdown]
# ## 6. An attention heatmap over the slide
#
# The trained aggregator runs on the slide's bag of tiles as on any other bag. Each tile is
# coloured by its attention *value*, from 0 (blue) to the largest weight of the slide (red),
# with a colour bar on which the uniform level 1/n is marked. Colouring by *rank* (as CLAM's
# heatmaps do) would spread any set of weights from blue to red, however close to uniform
# they are, and make a near-average look like a sharp choice; `colour_by="rank"` draws that
# version for comparison, and the numbers under the figure say how far from uniform the weights
# are.
#
# Read this as the mechanism only: the slide is skin, not breast, at another magnification,
# and the model learnt from IDC patches. With your own labelled slides the whole path is:
# `wsi extract` → `mil train` → `mil evaluate` (which writes `heatmaps/<slide>.png`).

# %%
from ssmamba_lite.course.diagrams import attention_heatmap_figure
from ssmamba_lite.wsi.heatmap import colormap, heatmap_overlay, save_heatmap

slide_as_bag = mil_train.Bag(slide_path.stem, torch.from_numpy(slide_bag["features"]),
                             slide_bag["coords"], 0, "slide")
probs, attention = mil_train.predict_bags(model_abmil, [slide_as_bag])
a_slide = attention[0]
n_tiles = len(a_slide)
save_heatmap(out / "slide_heatmap.png", slide_bag["thumbnail"], slide_bag["coords"], a_slide,
             slide_bag["tile_size0"], slide_bag["level0_size"])      # as `mil evaluate` writes it
overlays = [heatmap_overlay(slide_bag["thumbnail"], slide_bag["coords"], a_slide,
                            slide_bag["tile_size0"], slide_bag["level0_size"], colour_by=colour_by)
            for colour_by in ("value", "rank")]
fig = attention_heatmap_figure(*overlays, a_slide, ramp=colormap(np.linspace(0, 1, 256)) / 255,
                               p_positive=probs[0, 1])
save(fig, "slide_heatmap_figure")
plt.show()
slide_spread = attention_spread(a_slide)
print(f"{n_tiles} tiles, uniform 1/n = {1 / n_tiles:.4f}; weights from {a_slide.min():.4f} to "
      f"{a_slide.max():.4f}: n·max a = {slide_spread['max_times_n']:.2f}, "
      f"H/log n = {slide_spread['entropy_ratio']:.3f}")

# %% [markdown]
# ## What you learned
#
# - A slide becomes a bag of tile features: tissue by Otsu on the saturation of a thumbnail,
#   tiles at a physical scale (µm per pixel, from each slide's own resolution), a frozen
#   encoder, one `.h5` per slide.
# - ABMIL pools the tiles with gated attention and ignores their order; Mamba-MIL runs Mamba
#   layers over the tiles in the order the bag lists them, so reordering the tiles changes its
#   output (measured above) and not ABMIL's. On slides that order is raster order; in the
#   constructed benchmark it is random, so there the sequence carries nothing spatial.
# - Whether each aggregator learnt the bag labels of unseen patients is read off the test
#   table against chance (0.5 balanced accuracy and AUROC) and the majority rate, as section 5
#   printed; one run of a few epochs on few bags can fail to, and the numbers check the
#   pipeline, not the paper's WSI results.
# - Attention weights sum to 1: read them against 1/n, colour them by value, and measure their
#   spread (n·max a, H/log n) before saying that a model "looks at" some tiles.

# %% [markdown]
# ## Self-check
#
# Set each answer in its cell and run it; `check` says "correct" or raises an error.
#
# **Q1.** A slide gives a bag of n = 200 tiles and the attention is exactly uniform. What is
# each tile's weight? Three decimals.

# %%
from ssmamba_lite.course.quiz import check

q1 = 0.005     # change this to your answer, then run the cell
check("Q1", q1, "07e17407c7918077", decimals=3)

# %% [markdown]
# **Q2.** You list the tiles of every bag in a new random order and predict again. Which
# aggregator gives the same probabilities up to rounding: `"abmil"` or `"mamba"`?

# %%
q2 = "abmil"     # change this to your answer
check("Q2", q2, "82ad8cafa39d8980")

# %% [markdown]
# **Q3.** A bag of n = 4 tiles gets the weights (0.7, 0.1, 0.1, 0.1). What is n · max a? One
# decimal.

# %%
q3 = 2.8     # change this to your answer
check("Q3", q3, "c020bad937ece011", decimals=1)

# %% [markdown]
# **Q4.** A heatmap coloured by rank shows a bright red region. Why is that not yet evidence
# that the model attends to that region, and what would you check?
#
# <details><summary>Answer</summary>
#
# Ranks spread any set of weights over the whole colour scale: if every weight is within 1% of
# 1/n, the top quarter of the tiles is still orange to red. Check the values: colour by value with 1/n
# marked, and compute n·max a and H/log n. Only weights well above 1/n (n·max a clearly above
# 1, H/log n clearly below 1) single out tiles; and even then, "attended" means "weighted in
# the pooling", not "the reason for the diagnosis".
#
# </details>

# %% [markdown]
# ## Exercises
#
# 1. Encoders: set `checkpoint = "none"` (random weights), `"04"` (notebook 04's MAMIM encoder,
#    pretrained on IDC patches, the benchmark's own tissue, including most of its test
#    patients: section 5 prints how many, and its scores are optimistic for that reason) and
#    the default `"mamim"` (this slide's tiles). How far do the test AUROCs and the attention
#    spreads move?
# 2. Stability: `epochs = 30` and `seed = 1, 2`. Do ABMIL and Mamba-MIL keep their order in the
#    test table? Compare the differences with the spread over seeds.
# 3. Order: change the order test of section 5 to reverse each bag instead of shuffling it.
#    With `MILConfig(bidirectional=False)` (one forward scan only), does Mamba-MIL move more?
# 4. Fewer witnesses: pass `witness_fraction=0.5` to `write_patch_bags` (and to
#    `make_patch_bags`) in section 5, so that at most half the patches of a positive bag are
#    positive. Does the hit rate of the most-attended patch fall, and does n·max a grow or
#    shrink? (Larger bags cannot be built from the sample: it holds at most 4 patches of a class
#    per patient, and a bag holds one patient's patches.)
# 5. `tile_mpp = 0.5`, `tile_size = 224`: more, finer tiles per slide (the command line's
#    default scale). How many tiles, and how long does extraction take?
#
# Previous: [08 · cross-magnification](08_cross_magnification.ipynb). This is the last notebook
# of the course; the papers behind it are ABMIL
# ([arXiv:1802.04712](https://arxiv.org/abs/1802.04712)), MambaMIL
# ([arXiv:2403.06800](https://arxiv.org/abs/2403.06800)) and SSMamba
# ([arXiv:2604.15711](https://arxiv.org/abs/2604.15711)).
