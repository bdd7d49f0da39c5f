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
# # 07 · Where does the model look? Grad-CAM on right and wrong tiles
#
# *Previous:* [06 · Ablations](06_ablations.ipynb) · *Next:*
# [08 · Cross-magnification](08_cross_magnification.ipynb)
#
# **What.** Grad-CAM ([Selvaraju et al. 2017](https://arxiv.org/abs/1610.02391)) draws, over a tile, which regions pushed the
# score of one class up. For a feature map $A^k$ (channel $k$) of a layer and the score $y^c$
# of class $c$:
#
# $$\alpha_k^c = \frac{1}{Z}\sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}}, \qquad
# L^c_{\text{Grad-CAM}} = \mathrm{ReLU}\Big(\sum_k \alpha_k^c A^k\Big),$$
#
# i.e. each channel weighted by how much the class score grows with it, summed, negatives
# dropped, and upsampled to the tile.
#
# **Why.** A good accuracy can rest on the wrong cues (stain colour, tile borders, the scanner).
# Looking at where the model looks, on tiles it gets right *and* wrong, is the first check a
# pathologist would ask for. It is a picture, not a proof: read it with care.
#
# SSMamba's last stage is coarse (image size / 32), so we take the map of the stage before it
# (`target_stage = -2`, image size / 16), which is twice as fine.
#
# The model explained is the classifier notebook [05](05_finetuning.ipynb) fine-tuned from
# MAMIM in the same run, else the one that ships with the package, else a short fine-tuning
# here. The SSMamba abstract ([Chai et al. 2026](https://arxiv.org/abs/2604.15711)) claims
# "enhanced fine-grained sensitivity" from its LPR module; a Grad-CAM map is one way to look at
# which cues a model uses, not a measurement of that claim.
#
# ## Learning objectives
#
# After this notebook you can
#
# - compute a Grad-CAM map and say what each symbol of its formula is;
# - pick the layer to explain and know the resolution its map has;
# - choose tiles worth explaining (confident right and confident wrong ones) and read the
#   maps with the limits of the method in mind.
#
# ## Prerequisites
#
# - [05 · Fine-tuning](05_finetuning.ipynb): a trained classifier and its validation split of
#   held-out patients; [03](03_lpr_and_dms.ipynb): the network's stages and their strides.
# - Gradients in PyTorch (backward, hooks).

# %% tags=["parameters"]
data_dir = "sample:idc-breast"   # labelled tiles: class folders or labels.csv (any classes)
output_dir = "runs/notebooks/07_explainability"
image_size = 64
epochs = 3
batch_size = 32
device = "auto"
seed = 0
model = "ssmamba_lite_cpu"      # the laptop-sized preset; on a GPU: "ssmamba_lite_tiny"
model_args = {}                 # overrides of SSMambaConfig fields, e.g. {"use_lpr": False}
checkpoint_dir = ""       # a fine-tuning output folder; empty: 05's of this run, else shipped
label_fraction = 1.0
lr = 1e-3
max_steps_per_epoch = 0
target_stage = -2         # index into model.stages whose output Grad-CAM explains
n_tiles = 6               # tiles per row (right / wrong)
progress = True
retrain = False           # True: fine-tune here even when a classifier can be loaded

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ssmamba_lite.course.figures import save_figure
from ssmamba_lite.course.runner import require_data
from ssmamba_lite.engine.device import resolve_device

data_dir = require_data(data_dir, dataset="idc-breast")
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
dev = resolve_device(device)
_ = torch.manual_seed(seed)

# %% [markdown]
# ## 1. A trained model
#
# In this order (`ssmamba_lite/course/handoff.py`): `checkpoint_dir` when you give one; else
# the "from MAMIM" model of notebook 05 in the same run; else the classifier that ships with
# the package (`ssmamba_lite_cpu`, 64 px, IDC); else a short fine-tuning here from scratch (its
# mistakes are as instructive as its successes). A model made for other data, classes, model
# or image size is not used, and the next cell says why. `retrain = True` always trains here.

# %%
from ssmamba_lite.course.handoff import find
from ssmamba_lite.engine.inference import load_trained
from ssmamba_lite.engine.train import FinetuneConfig, finetune

if checkpoint_dir:
    print(f"loaded the classifier given as checkpoint_dir: {checkpoint_dir}")
else:
    found = find("classifier", output_dir, data_dir, model, model_args, image_size, retrain)
    print(found.message)
    checkpoint_dir = found.path
if checkpoint_dir is None:
    checkpoint_dir = out / "finetune"
    finetune(FinetuneConfig(data=str(data_dir), out=str(checkpoint_dir), overwrite=True,
                            model=model,
                            model_args=model_args, image_size=image_size, epochs=epochs,
                            batch_size=batch_size, lr=lr, seed=seed, device=device,
                            label_fraction=label_fraction, max_steps_per_epoch=max_steps_per_epoch,
                            progress=progress))
net, record = load_trained(checkpoint_dir, dev)
print(f"{record['model']} {record['model_args']}, classes {record['classes']}")

# %% [markdown]
# ## 2. Right and wrong on held-out patients
#
# For each kind we take the tiles where the model was most *confident*: confident mistakes
# are the most telling.

# %%
from ssmamba_lite.course.analysis import validation_samples
from ssmamba_lite.engine.inference import predict_probabilities

val = validation_samples(checkpoint_dir)
probs = predict_probabilities(net, val, record["image_size"], batch_size=64, device=dev)
labels = np.asarray(val.labels)
pred, conf = probs.argmax(1), probs.max(1)
right = np.flatnonzero(pred == labels)
wrong = np.flatnonzero(pred != labels)
right = right[np.argsort(-conf[right])][:n_tiles]
wrong = wrong[np.argsort(-conf[wrong])][:n_tiles]
print(f"{len(val)} validation tiles: {int((pred == labels).sum())} right, "
      f"{int((pred != labels).sum())} wrong")

# %% [markdown]
# ## 3. Grad-CAM
#
# `pytorch-grad-cam` hooks the chosen stage, runs the tile forward and the class score
# backward, and returns $L^c$ at the tile's size. We explain the *predicted* class.

# %%
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from ssmamba_lite.course.figures import to_image
from ssmamba_lite.engine.data import load_image
from ssmamba_lite.engine.transforms import eval_transform

tf = eval_transform(record["image_size"])
cam = GradCAM(model=net, target_layers=[net.stages[target_stage]])
grid = {}
hook = net.stages[target_stage].register_forward_hook(
    lambda module, inputs, output: grid.update(shape=tuple(output.shape[-2:])))
with torch.no_grad():
    net(torch.zeros(1, 3, record["image_size"], record["image_size"], device=dev))
hook.remove()
print(f"stage {target_stage} gives a {grid['shape'][0]} x {grid['shape'][1]} map for "
      f"{record['image_size']} px tiles: one Grad-CAM cell covers "
      f"{record['image_size'] // grid['shape'][0]} px before upsampling")


def explain(indices):
    if len(indices) == 0:
        return [], []
    x = torch.stack([tf(load_image(val.paths[i])) for i in indices]).to(dev)
    maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(pred[i])) for i in indices])
    rgb = [to_image(t).astype(np.float32) for t in x.cpu()]
    return rgb, [show_cam_on_image(img, m, use_rgb=True) for img, m in zip(rgb, maps)]


rows = [("right", right), ("wrong", wrong)]
fig, axes = plt.subplots(4, max(1, n_tiles), figsize=(1.7 * max(1, n_tiles), 7.4), squeeze=False)
for r, (kind, idx) in enumerate(rows):
    rgb, overlays = explain(idx)
    for j in range(max(1, n_tiles)):
        for k, imgs in enumerate((rgb, overlays)):
            ax = axes[2 * r + k, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(imgs):
                ax.imshow(imgs[j])
                if k == 0:
                    i = idx[j]
                    ax.set_title(f"true {val.classes[labels[i]]}\npred {val.classes[pred[i]]} "
                                 f"({conf[i]:.2f})", fontsize=7)
            else:
                ax.axis("off")
    axes[2 * r, 0].set_ylabel(f"{kind}: tile")
    axes[2 * r + 1, 0].set_ylabel(f"{kind}: Grad-CAM")
fig.tight_layout()
save_figure(fig, out, "gradcam_right_and_wrong")
plt.show()

# %% [markdown]
# **What to look for.** On IDC tiles, tumour calls should rest on dense, dark, irregular
# nuclei, not on white background or a tile edge. A map that lights the same corner for every
# tile, or only the background, points to a shortcut; a wrong tile whose map sits on tumour-like
# cells may be a label at the edge of an annotated region (IDC labels come from region
# outlines, not from cell-by-cell review). Try `target_stage = -1` (coarser) or `-3` (finer).

# %% [markdown]
# ## What you learned
#
# - Grad-CAM weights each channel $A^k$ of a layer by the spatial mean of
#   $\partial y^c / \partial A^k$, sums, keeps the positive part and upsamples it to the tile.
# - The map is as coarse as the layer: the cell of section 3 printed how many pixels one map
#   cell covers at `target_stage`.
# - Confident mistakes are the tiles most worth explaining; the count of right and wrong
#   tiles above is this model's, on held-out patients.
# - The model came from 05 of the same run, the shipped weights, or a short run here: section 1
#   printed which.
# - A heat map shows where the gradient-weighted activations sit, not why the model decided.
#
# Next, [08 · Cross-magnification](08_cross_magnification.ipynb) tests the same kind of model
# on tiles seen zoomed in and out.

# %% [markdown]
# ## Self-check
#
# 07 is not graded: set your answer in the cell under each question (it holds the right one
# so that the notebook runs through; change it and rerun to test yourself).
#
# **Q1.** At `image_size = 64` and `target_stage = -2`, what is the side of the Grad-CAM map
# before it is upsampled (in map cells)?

# %%
from ssmamba_lite.course.quiz import check

q1_map_side = 4     # your answer: a whole number
_ = check("Q1", q1_map_side, "4b227777d4dd1fc6", decimals=0)

# %% [markdown]
# **Q2.** Which is Grad-CAM's channel weight $\alpha_k^c$? (a) the largest gradient of
# $y^c$ over the map $A^k$; (b) the mean over positions of $\partial y^c / \partial A^k_{ij}$;
# (c) the mean activation of $A^k$; (d) the weight of channel $k$ in the linear head.

# %%
q2_alpha = "b"     # your answer: "a", "b", "c" or "d"
_ = check("Q2", q2_alpha, "3e23e8160039594a")

# %% [markdown]
# **Q3.** Why explain the *confidently wrong* tiles rather than random ones?
#
# <details><summary>Answer</summary>
#
# A confident mistake is where a shortcut, if there is one, shows most clearly: the model was
# sure for a wrong reason. Random tiles are mostly easy and right, and their maps say little.
# Confident mistakes also point at label noise (IDC labels come from region outlines).
#
# </details>
#
# **Q4.** The map of a tumour tile lights up the nuclei. Does that prove the model uses nuclear
# shape?
#
# <details><summary>Answer</summary>
#
# No. Grad-CAM shows where gradient-weighted activations are high at one layer, at a coarse
# resolution; nuclei may be where the colour, density or texture the model uses happen to be.
# Tests that change the input (masking the nuclei, changing the stain) and compare the scores
# say more.
#
# </details>

# %% [markdown]
# ## Exercises
#
# 1. **Resolution.** Set `target_stage = -3` (finer) and `-1` (coarser): how do the maps of the
#    same tiles change?
# 2. **Your own model.** Fine-tune here with `retrain = True` and `epochs = 1`, then
#    `epochs = 10`: do the maps of an under-trained model look different?
# 3. **Another class.** Change `explain` to target the *true* class instead of the predicted
#    one (`ClassifierOutputTarget(int(labels[i]))`) on the wrong tiles: where was the evidence
#    for the right answer?
# 4. **Another dataset.** `data_dir = "sample:kather2016"` (8 tissue classes; the shipped IDC
#    classifier does not fit, so a model is trained here): do the maps of the stroma and
#    tumour classes sit on different structures?
