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
# # 08 · Cross-magnification: train at one, test at another
#
# **What.** The first motivation in SSMamba's abstract is *domain shift*, and one shift every
# pathology lab meets is magnification: slides scanned at 20x or 40x, tiles cut at different
# sizes. Here we train classifiers at one magnification and test them on the *same* held-out
# tiles seen zoomed in and zoomed out (`mamim.magnify`: zoom $z>1$ crops the centre and
# enlarges it; $z<1$ shrinks the tile and enlarges it back, losing detail).
#
# **Why MAMIM could help.** MAMIM shows the encoder each tile at a random zoom in
# [`min_zoom`, `max_zoom`] while it learns to fill in hidden patches. If that makes its
# features less tied to one scale, a classifier built on it should lose less accuracy when
# the test magnification moves. We compare three starts, all fine-tuned at zoom 1 with the
# same data, split, seed and schedule:
#
# | arm | start of fine-tuning |
# |---|---|
# | `scratch` | random weights |
# | `mamim_1x` | MAMIM pretrained at one magnification (zoom range [1, 1]) |
# | `mamim_multi` | MAMIM pretrained with multi-magnification views ([`min_zoom`, `max_zoom`]) |
#
# The measure: balanced accuracy and AUROC against the test zoom $z$, and the *drop*
# from $z = 1$.

# %% tags=["parameters"]
data_dir = "sample:idc-breast"   # labelled tiles: class folders or labels.csv (any classes)
extra_data = ""                   # an unlabelled pool MAMIM sees too ("": only data_dir's training tiles)
output_dir = "runs/notebooks/08_cross_magnification"
image_size = 64
epochs = 3
batch_size = 32
device = "auto"
seed = 0
model = "ssmamba_lite_cpu"      # the laptop-sized preset; on a GPU: "ssmamba_lite_tiny"
model_args = {}                 # overrides of SSMambaConfig fields, e.g. {"use_lpr": False}
arms = ["scratch", "mamim_1x", "mamim_multi"]
min_zoom = 0.5            # multi-magnification pretraining range
max_zoom = 2.0
zooms = [0.5, 0.71, 1.0, 1.41, 2.0]   # test magnifications (relative to training)
pretrain_epochs = 1
pretrain_max_steps = 0
label_fraction = 0.25
lr = 1e-3
max_steps_per_epoch = 0
progress = True

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from ssmamba_lite.course.figures import save_figure
from ssmamba_lite.course.runner import require_data
from ssmamba_lite.engine.device import resolve_device

data_dir = require_data(data_dir, dataset="idc-breast")
if extra_data:
    require_data(extra_data, labelled=False)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
dev = resolve_device(device)
_ = torch.manual_seed(seed)
ARMS = {"scratch": None, "mamim_1x": (1.0, 1.0), "mamim_multi": (min_zoom, max_zoom)}
assert set(arms) <= set(ARMS), f"arms must be among {list(ARMS)}"

# %% [markdown]
# ## 1. What the test views look like

# %%
from ssmamba_lite.course.figures import image_row
from ssmamba_lite.engine.data import load_image, scan_labelled
from ssmamba_lite.mamim import magnify

s = scan_labelled(data_dir)
tile = torch.nn.functional.interpolate(load_image(s.paths[-1])[None].float(),
                                       size=(image_size, image_size), mode="bilinear",
                                       antialias=True)[0].round().to(torch.uint8)
fig = image_row([magnify(tile, z) for z in zooms], [f"test zoom {z:g}" for z in zooms])
save_figure(fig, out, "test_views")
plt.show()

# %% [markdown]
# ## 2. Pretrain (two MAMIM runs) and fine-tune (three runs)
#
# The MAMIM runs differ only in `min_zoom` / `max_zoom`. Fine-tuning never zooms: its
# augmentations are flips, 90° rotations and colour jitter, so the only route to robustness
# across magnifications is what pretraining put in the encoder.

# %%
from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig, finetune, pretrain

checkpoints = {}
for arm in arms:
    init = "scratch"
    if ARMS[arm] is not None:
        lo, hi = ARMS[arm]
        print(f"--- MAMIM for {arm}: zoom in [{lo}, {hi}]")
        pretrain(PretrainConfig(data=str(data_dir), extra_data=extra_data,
                                out=str(out / arm / "mamim"), model=model,
                                model_args=model_args, image_size=image_size,
                                epochs=pretrain_epochs, batch_size=batch_size, seed=seed,
                                device=device, min_zoom=lo, max_zoom=hi,
                                max_steps_per_epoch=pretrain_max_steps, progress=progress))
        init = str(out / arm / "mamim" / "encoder.safetensors")
    print(f"--- fine-tuning {arm}")
    checkpoints[arm] = out / arm / "finetune"
    finetune(FinetuneConfig(data=str(data_dir), out=str(checkpoints[arm]), model=model,
                            model_args=model_args, image_size=image_size, epochs=epochs,
                            batch_size=batch_size, lr=lr, seed=seed, device=device, init=init,
                            label_fraction=label_fraction,
                            max_steps_per_epoch=max_steps_per_epoch, progress=progress))

# %% [markdown]
# ## 3. Test at every zoom
#
# `analysis.metrics_under_zoom` evaluates a model on the validation tiles (held-out
# patients), each tile resized to `image_size` and then magnified by $z$.

# %%
from ssmamba_lite.course.analysis import metrics_under_zoom, validation_samples
from ssmamba_lite.engine.inference import load_trained

val = validation_samples(checkpoints[arms[0]])
rows = []
for arm in arms:
    net, record = load_trained(checkpoints[arm], dev)
    for m in metrics_under_zoom(net, val, record["image_size"], zooms, device=dev):
        rows.append({"arm": arm, "zoom": m["zoom"], "accuracy": m["accuracy"],
                     "balanced_accuracy": m["balanced_accuracy"], "auroc": m["auroc"]})
df = pd.DataFrame(rows)
base = df[df["zoom"] == 1.0].set_index("arm")["balanced_accuracy"]
df["drop_from_1x"] = df["balanced_accuracy"] - df["arm"].map(base)
df.to_csv(out / "cross_magnification.csv", index=False)
df.pivot(index="zoom", columns="arm", values="balanced_accuracy").round(3)

# %%
import seaborn as sns

fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
for ax, metric in zip(axes, ("balanced_accuracy", "auroc")):
    sns.lineplot(data=df, x="zoom", y=metric, hue="arm", marker="o", ax=ax)
    ax.set_xscale("log", base=2)
    ax.set_xticks(zooms, [f"{z:g}" for z in zooms])
    ax.axvline(1.0, color="k", ls=":", lw=1)
    ax.set_xlabel("test zoom (training: 1)")
    ax.grid(alpha=0.3)
fig.suptitle("held-out patients, each tile seen at another magnification", y=1.02)
fig.tight_layout()
save_figure(fig, out, "accuracy_vs_zoom")
plt.show()

# %% [markdown]
# **Reading the plot.** Every curve should peak near zoom 1 (where it was trained); the
# question is how fast it falls away. A flatter `mamim_multi` curve than `mamim_1x` supports
# the abstract's claim that multi-magnification pretraining helps with this shift; equal
# curves do not. One seed and short runs are noisy: rerun with other seeds, more
# `pretrain_epochs` and a GPU before concluding (notebook 06 shows how to run seeds as a grid).
