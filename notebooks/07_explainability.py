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
# **What.** Grad-CAM (Selvaraju et al. 2017) draws, over a tile, which regions pushed the
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
checkpoint_dir = ""       # a fine-tuning output folder (05 writes them); empty: train one here
label_fraction = 1.0
lr = 1e-3
max_steps_per_epoch = 0
target_stage = -2         # index into model.stages whose output Grad-CAM explains
n_tiles = 6               # tiles per row (right / wrong)
progress = True

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
# Loaded from `checkpoint_dir`, or fine-tuned here from scratch (a short run: its mistakes are
# as instructive as its successes).

# %%
from ssmamba_lite.engine.inference import load_trained
from ssmamba_lite.engine.train import FinetuneConfig, finetune

if not checkpoint_dir:
    checkpoint_dir = out / "finetune"
    finetune(FinetuneConfig(data=str(data_dir), out=str(checkpoint_dir), model=model,
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
