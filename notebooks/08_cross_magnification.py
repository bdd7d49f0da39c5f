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
# # 08 · Cross-magnification: train at one view, test at others
#
# **What.** The first problem SSMamba's abstract ([Chai et al. 2026](https://arxiv.org/abs/2604.15711))
# sets out to solve is *domain shift* across magnifications: slides are scanned at 20x or 40x
# and tiles are cut at many sizes. It states that MAMIM, masked image modelling on the target
# dataset itself, makes the model robust to it. How MAMIM achieves that is not in the abstract;
# here it is this project's reading: MAMIM shows the encoder each tile at a random zoom while it
# learns to fill in hidden patches (`mamim.RandomMagnification`).
#
# We fine-tune classifiers on tiles as they are and test them on the *same* held-out tiles seen
# at other zooms $z$. Since the views are made from the tile alone, the two sides of $z = 1$ are
# different operations:
#
# | test zoom | name here | what it does | what it is not |
# |---|---|---|---|
# | $z > 1$ | **crop** ×z (`mamim.crop_enlarge`) | the centre $1/z$ of the tile, enlarged: a narrower field of view | a sharper image: enlarging adds no detail a real higher-magnification scan would resolve |
# | $z < 1$ | **blur** ×(1/z) (`mamim.down_up_blur`) | the tile shrunk by $z$ and enlarged back: the same field of view with less detail | a wider field of view: the tissue a lower magnification would add lies outside the tile |
#
# So this notebook measures robustness to crops and blurs of a tile, a proxy for the
# magnification shift, not the shift itself ([01 · Data](01_data.ipynb) shows real lower
# magnifications cut from a slide).
#
# **The arms.** Three starts, all fine-tuned at zoom 1 with the same data, split, seeds and
# schedule:
#
# | arm | start of fine-tuning |
# |---|---|
# | `scratch` | random weights |
# | `mamim_1x` | MAMIM with no zoom (range [1, 1]) |
# | `mamim_multi` | MAMIM with random crops and blurs (zoom range [`min_zoom`, `max_zoom`]) |
#
# Fine-tuning itself never zooms (its augmentations are flips, 90° rotations and colour
# jitter), so what differs between `mamim_1x` and `mamim_multi` is only what pretraining put
# in the encoder.

# %% [markdown]
# ## Learning objectives
#
# - Tell a crop from a blur, and say why down- then up-sampling a tile is a blur and not a
#   wider field of view.
# - Measure the drop of a classifier's balanced accuracy and AUROC under a change of view,
#   paired per seed, with a cluster-bootstrap interval over held-out patients.
# - Compare two drops (a difference of differences) and read the verdict off its interval.
#
# ## Prerequisites
#
# - [07 · Explainability](07_explainability.ipynb) (the notebook before this one) and
#   [05 · Fine-tuning](05_finetuning.ipynb): fine-tuning runs and their metrics.
# - [04 · MAMIM](04_mamim_pretraining.ipynb): the pretraining and its zoom views.
# - [06 · Ablations](06_ablations.ipynb): paired differences and bootstrap intervals over
#   patients (`course/bootstrap.py`).

# %% tags=["parameters"]
data_dir = "sample:idc-breast"   # labelled tiles: class folders or labels.csv (any classes)
extra_data = ""                   # an unlabelled pool MAMIM sees too ("": only data_dir's training tiles)
output_dir = "runs/notebooks/08_cross_magnification"
image_size = 64
epochs = 3
batch_size = 32
device = "auto"
seed = 0                  # the first training seed (the patient split stays fixed)
n_seeds = 2               # seeds seed, seed+1, ... per arm
model = "ssmamba_lite_cpu"      # the laptop-sized preset; on a GPU: "ssmamba_lite_tiny"
model_args = {"conv_stages": 1}   # as in 06: DMS from stage 2 on (8x8 maps at 64 px)
arms = ["scratch", "mamim_1x", "mamim_multi"]
min_zoom = 0.5            # mamim_multi's pretraining views: blur x2 ... crop x2
max_zoom = 2.0
zooms = [0.5, 0.71, 1.0, 1.41, 2.0]   # test views (1: as trained)
pretrain_epochs = 1
pretrain_max_steps = 0    # 0: whole MAMIM epochs
label_fraction = 0.25
lr = 1e-3
max_steps_per_epoch = 0
n_resamples = 1000        # bootstrap resamples of the held-out patients
level = 0.95              # the intervals' coverage
progress = False

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

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
assert 1.0 in zooms, "zooms must hold 1.0 (the view the models are trained on)"
seeds = list(range(seed, seed + n_seeds))

# %% [markdown]
# ## 1. What the test views look like
#
# A blur ×2 keeps the whole tile but loses what is finer than about 2 pixels; a crop ×2 shows
# only the centre quarter of the tile's area, enlarged: nothing is lost from that region and
# nothing is added, each original pixel now spans about 2 × 2. The row below is one tile at
# every test zoom, named by `analysis.zoom_view_name`; below it, the mean absolute difference
# between horizontal neighbours, a rough measure of fine detail per pixel, which both views
# lower: the blur by removing detail, the crop by spreading it over more pixels.
#
# **Relative to what?** Every view is made from the tile *as the model sees it*, resized to
# `image_size`. IDC's patches are 50 × 50 px, enlarged to 64 first, so "blur ×2" keeps 32 px of
# linear resolution, which is 32/50 of the patch's own: a blur of only ×1.56 of the real
# resolution (the cell prints the factor for the data at hand). The names below speak of the
# resized tile.

# %%
from ssmamba_lite.course.analysis import zoom_view_name
from ssmamba_lite.course.figures import image_row
from ssmamba_lite.engine.data import find_labelled, load_image
from ssmamba_lite.mamim import magnify

s = find_labelled(data_dir)
tile = torch.nn.functional.interpolate(load_image(s.paths[-1])[None].float(),
                                       size=(image_size, image_size), mode="bilinear",
                                       antialias=True)[0].round().to(torch.uint8)
views = [magnify(tile, z) for z in zooms]
fig = image_row(views, [f"{zoom_view_name(z)}\n(zoom {z:g})" for z in zooms])
save_figure(fig, out, "test_views")
plt.show()
native = min(load_image(s.paths[-1]).shape[1:])          # the tile's own side, in pixels
for z, v in zip(zooms, views):
    step = (v.float()[:, :, 1:] - v.float()[:, :, :-1]).abs().mean()
    print(f"zoom {z:<5g} {zoom_view_name(z):12s} mean |neighbour difference| {step:5.1f}")
for z in (z for z in zooms if z < 1):
    kept = z * image_size                             # linear resolution the blur keeps
    print(f"{zoom_view_name(z)} of the {image_size} px tile keeps {kept:.0f} px across: a blur "
          f"of x{max(1.0, native / kept):.2f} of this {native} px tile's own resolution")

# %% [markdown]
# ## 2. Pretrain and fine-tune, per seed
#
# For every arm and training seed $s$ (`course.grid.run_grid`, the grid runner of notebook 06
# too): the arm's MAMIM run (the two MAMIM arms differ only in `min_zoom` / `max_zoom`;
# `scratch` has none), then its fine-tuning run. The patient split and the labelled patients are the same for
# every run (they depend on `split_seed`, which stays 0); the seed changes initialisation, batch
# order, masks and augmentations. Each MAMIM run prints its steps and its warm-up steps (the
# first 10% of the steps, at least one, during which the learning rate rises).

# %%
from ssmamba_lite.course.grid import run_grid
from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig, finetune, pretrain


def run_cell(arm, s):
    """One cell: MAMIM at the arm's zooms (none for `scratch`), then fine-tuning; returns the
    fine-tuned run's folder and the MAMIM steps taken (0 without MAMIM)."""
    init, run, steps, warmup = "scratch", out / arm / f"seed{s}", 0, 0
    if ARMS[arm] is not None:
        lo, hi = ARMS[arm]
        pcfg = PretrainConfig(data=str(data_dir), extra_data=extra_data,
                              out=str(run / "mamim"), overwrite=True, model=model,
                              model_args=model_args,
                              image_size=image_size, epochs=pretrain_epochs,
                              batch_size=batch_size, seed=s, device=device, min_zoom=lo,
                              max_zoom=hi, max_steps_per_epoch=pretrain_max_steps,
                              progress=progress)
        steps = pretrain(pcfg)[-1]["step"]
        warmup = max(1, round(pcfg.warmup_fraction * steps))
        init = str(run / "mamim" / "encoder.safetensors")
    finetune(FinetuneConfig(data=str(data_dir), out=str(run / "finetune"), overwrite=True,
                            model=model, model_args=model_args, image_size=image_size,
                            epochs=epochs, batch_size=batch_size, lr=lr, seed=s,
                            device=device, init=init, label_fraction=label_fraction,
                            max_steps_per_epoch=max_steps_per_epoch, progress=progress))
    return {"folder": run / "finetune", "zooms": ARMS[arm], "steps": steps, "warmup": warmup}


def describe(r):
    """A cell's line: the MAMIM zooms and steps, then "fine-tuned"."""
    if r["zooms"] is None:
        return "no MAMIM; fine-tuned"
    lo, hi = r["zooms"]
    return f"MAMIM with zoom in [{lo}, {hi}], {r['steps']} steps ({r['warmup']} warm-up); fine-tuned"


cells = run_grid(arms, seeds, run_cell, describe)
checkpoints = {key: r["folder"] for key, r in cells.items()}

# %% [markdown]
# ## 3. Test at every zoom
#
# `analysis.probabilities_under_zoom` predicts the validation tiles (held-out patients), each
# resized to `image_size` and then seen at zoom $z$; the table holds balanced accuracy and
# AUROC per arm, seed and view.

# %%
from ssmamba_lite.course.analysis import probabilities_under_zoom, validation_samples
from ssmamba_lite.engine.inference import load_trained
from ssmamba_lite.engine.metrics import classification_metrics

val = validation_samples(checkpoints[(arms[0], seeds[0])])
probs, rows = {}, []
for (arm, s), folder in checkpoints.items():
    net, record = load_trained(folder, dev)
    for z, p in probabilities_under_zoom(net, val, record["image_size"], zooms,
                                         device=dev).items():
        probs[(arm, s, z)] = p
        m = classification_metrics(val.labels, p, val.classes)
        rows.append({"arm": arm, "seed": s, "zoom": z, "view": zoom_view_name(z),
                     "balanced_accuracy": m["balanced_accuracy"], "auroc": m["auroc"]})
df = pd.DataFrame(rows)
df.to_csv(out / "cross_magnification.csv", index=False)
print(f"{len(val)} held-out tiles of {len(set(val.patients))} patient groups")
display(df.groupby(["zoom", "view", "arm"])[["balanced_accuracy", "auroc"]].mean()
        .unstack("arm").round(3))

# %% [markdown]
# ## 4. Drops, paired, with intervals over patients
#
# The drop of arm $a$ at zoom $z$, for seed $s$ and metric $M$, compares the same model on the
# same tiles seen two ways:
#
# $$ D_a(z) = \frac{1}{S}\sum_s \bigl[ M(a, s, z) - M(a, s, 1) \bigr] . $$
#
# Whether multi-magnification pretraining helps is a difference of drops (how much less
# `mamim_multi` loses than `mamim_1x`):
#
# $$ D_\text{multi}(z) - D_\text{1x}(z) = \frac{1}{S}\sum_s \bigl[ M(\text{multi}, s, z) -
#    M(\text{multi}, s, 1) - M(\text{1x}, s, z) + M(\text{1x}, s, 1) \bigr] . $$
#
# Both get a paired cluster-bootstrap interval over the held-out patients, as in
# [06](06_ablations.ipynb): every resample of patients is applied to every term and every seed
# at once, and the seeds are resampled too, so that seeds which disagree widen the interval;
# each interval is widened for the number of differences reported together (Bonferroni,
# `bootstrap.family_level`). The verdict is read off the interval: above 0 "better"
# (`mamim_multi`'s metric falls less at that view, or rises more); below 0 "worse"; covering
# 0 "within noise". A drop can be a gain: a view can score higher than the trained one.

# %%
from ssmamba_lite.course.bootstrap import METRIC_NAMES, bootstrap_contrast, family_level

labels, patients = np.asarray(val.labels), np.asarray(val.patients)
stacked = {f"{arm}@{z}": np.stack([probs[(arm, s, z)] for s in seeds])
           for arm in arms for z in zooms}
shifted = [z for z in zooms if z != 1.0]
pairs = [(a, b) for a, b in (("mamim_multi", "mamim_1x"), ("mamim_multi", "scratch"))
         if a in arms and b in arms]
n_contrasts = 2 * len(shifted) * (len(arms) + len(pairs))   # drops and differences of drops
each_level = family_level(level, n_contrasts)
print(f"{n_contrasts} intervals, each at {each_level:.2%} so that all hold together at "
      f"{level:.0%}")
drops = []
for arm in arms:
    for z in shifted:
        for metric in ("balanced_accuracy", "auroc"):
            c = bootstrap_contrast(labels, patients, stacked, {f"{arm}@{z}": 1, f"{arm}@1.0": -1},
                                   metric, n_resamples, each_level)
            drops.append({"arm": arm, "view": zoom_view_name(z), "zoom": z, "metric": metric,
                          "drop": c.estimate, "low": c.low, "high": c.high,
                          "verdict": c.verdict})
drop_table = pd.DataFrame(drops)
drop_table.to_csv(out / "drops.csv", index=False)
display(drop_table.pivot_table(index=["metric", "view"], columns="arm", values="drop",
                               sort=False).round(3))
means = df.groupby(["arm", "zoom"])[["balanced_accuracy", "auroc"]].mean()
for arm in arms:
    for metric in ("balanced_accuracy", "auroc"):
        best = means.loc[arm][metric].idxmax()
        print(f"{arm}, {METRIC_NAMES[metric]}: best at {zoom_view_name(best)} "
              f"({'the trained view' if best == 1.0 else 'not the trained view'})")
for (arm, view), g in drop_table.groupby(["arm", "view"], sort=False):
    v = g.set_index("metric")["verdict"]
    if v["balanced_accuracy"] != "within noise" and v["auroc"] == "within noise":
        print(f"{arm} at {view}: balanced accuracy moves ({v['balanced_accuracy']}) while AUROC "
              f"does not: the ranking holds and the 0.5 threshold no longer fits (a calibration "
              f"shift, not lost recognition)")

# %% [markdown]
# The comparison the abstract's claim is about, `mamim_multi` against `mamim_1x` (and against
# `scratch`), one sentence per view and metric, each computed from its interval:

# %%
diffs, sentences = [], []
for a, b in pairs:
    for z in shifted:
        for metric in ("balanced_accuracy", "auroc"):
            c = bootstrap_contrast(labels, patients, stacked,
                                   {f"{a}@{z}": 1, f"{a}@1.0": -1, f"{b}@{z}": -1, f"{b}@1.0": 1},
                                   metric, n_resamples, each_level)
            diffs.append({"pair": f"{a} vs {b}", "view": zoom_view_name(z), "zoom": z,
                          "metric": metric, "difference": c.estimate, "low": c.low,
                          "high": c.high, "verdict": c.verdict, "per_seed": c.per_seed})
            meaning = {"better": f"{a} fares better than {b} at this view (falls less or "
                                 f"rises more)",
                       "worse": f"{a} fares worse than {b} at this view (falls more or rises "
                                f"less)",
                       "within noise": "within noise (the interval covers 0)"}[c.verdict]
            sentences.append(f"{zoom_view_name(z)}: "
                             f"{c.numbers(f'drop({a})', f'drop({b})')}: {meaning}")
diff_table = pd.DataFrame(diffs)
diff_table.to_csv(out / "drop_differences.csv", index=False)
print(f"{len(set(patients))} patient groups, {len(seeds)} seed(s), {n_resamples} resamples, "
      f"{level:.0%} for all intervals together; a drop is the metric at the view minus the "
      f"metric as trained (negative: a loss)\n")
print("\n".join(sentences) if sentences else "(needs mamim_multi and another arm)")

# %% [markdown]
# ## 5. Figures: metric against zoom, and the differences of drops
#
# Left: each arm's metric at every view (mean over seeds). Right: the differences of drops with
# their intervals (a forest plot; grey marks: single seeds). A bar that crosses the dotted line
# is a difference this run cannot tell from noise.

# %%
import seaborn as sns

from ssmamba_lite.course.figures import forest_rows

fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1, 1.2]})
for ax, metric in zip(axes[:2], ("balanced_accuracy", "auroc")):
    sns.lineplot(data=df, x="zoom", y=metric, hue="arm", marker="o", errorbar=None, ax=ax)
    ax.set_xscale("log", base=2)
    ax.set_xticks(zooms, [f"{zoom_view_name(z)}" for z in zooms], rotation=30, fontsize=7)
    ax.axvline(1.0, color="k", ls=":", lw=1)
    ax.set_xlabel("test view (blur < as trained < crop)")
    ax.set_ylabel(METRIC_NAMES[metric])
    ax.grid(alpha=0.3)
ax = axes[2]
part = diff_table[diff_table["metric"] == "balanced_accuracy"].reset_index(drop=True)
forest_rows(ax, [row for _, row in part.iterrows()],
            [f"{r['pair']}, {r['view']}" for _, r in part.iterrows()],
            "difference of drops, balanced accuracy", fontsize=7)
fig.suptitle(f"held-out patients, each tile seen as a blur or a crop; intervals at {level:.0%} "
             f"for all together (green better, red worse, grey within noise)", y=1.02,
             fontsize=9)
fig.tight_layout()
save_figure(fig, out, "accuracy_vs_zoom")
plt.show()

# %% [markdown]
# **Reading the result.** The printed sentences of section 4 are what this run can say; nothing
# else here is a conclusion. One might expect every arm to do best at the view it was trained
# on; section 4 printed, per arm and metric, whether it does here (at small zooms the blur can
# even help, by removing what a short training never learnt to use). The question is whether
# `mamim_multi` fares better than the others away from the trained view, by more than the
# intervals allow, and in AUROC as well as in balanced accuracy: a change of balanced accuracy
# alone is a threshold that moved. Two cautions: the test views are of the same kinds as `mamim_multi`'s
# pretraining views (blurs and crops), so a gain here is a gain on these synthetic views; and
# at the default CPU size (a small model, short runs, two seeds) wide intervals are likely.
# Scale up with more seeds, longer MAMIM and a GPU, e.g.
#
# ```bash
# ssmamba-lite tutorial 08 -p device cuda -p model ssmamba_lite_tiny -p image_size 128 \
#     -p model_args '{}' -p epochs 30 -p pretrain_epochs 50 -p n_seeds 5 -p batch_size 128
# ```

# %% [markdown]
# ## What you learned
#
# - A view made from a tile alone is a crop (zoom > 1: narrower field, enlarged) or a blur
#   (zoom < 1: down- then up-sampled, the same field with less detail); neither adds what a real
#   scan at another magnification would (more tissue, or finer detail).
# - The drop of a model under a view is a paired difference (same model, same tiles); the
#   effect of multi-magnification pretraining is a difference of two drops.
# - Each comes with a cluster-bootstrap interval over patients, and the verdict is computed from
#   it: "better", "worse" or "within noise".

# %% [markdown]
# ## Self-check
#
# Set each answer in its cell and run it; `check` says "correct" or raises an error. The cells
# hold the right answers so that the notebook runs headless: change them to yours.
#
# **Q1.** In this notebook, what does the test view at zoom 0.5 show, relative to the tile
# resized to `image_size`? (a) twice the field of view at half the detail, (b) the same field
# of view at half the linear resolution, enlarged back (a blur), (c) the centre quarter of the
# tile.

# %%
from ssmamba_lite.course.quiz import check

q1 = "b"     # change this to your answer, then run the cell
check("Q1", q1, "3e23e8160039594a")

# %% [markdown]
# **Q2.** A 64 × 64 tile is seen at zoom 2 (a crop ×2). How many pixels wide is the window of
# the original tile that ends up filling the 64 × 64 view?

# %%
q2 = 32     # change this to your answer
check("Q2", q2, "e29c9c180c6279b0", decimals=0)

# %% [markdown]
# **Q3.** The difference of drops (balanced accuracy, blur ×2) of `mamim_multi` vs `mamim_1x`
# is +0.04 with the 95% interval [−0.01, +0.09]. Which verdict? (a) `mamim_multi` loses less
# (better), (b) it loses more (worse), (c) within noise.

# %%
q3 = "c"     # change this to your answer
check("Q3", q3, "2e7d2c03a9507ae2")

# %% [markdown]
# **Q4.** Why is a drop computed as a paired difference (the same model, the same tiles at
# zoom $z$ and at zoom 1) rather than by comparing the metric at zoom $z$ with a number from
# another run?
#
# <details><summary>Answer</summary>
#
# Most of what makes a metric high or low (which patients are hard, how well this seed's model
# learned) is the same at both zooms. Subtracting on the same model and tiles cancels it, and
# what is left is the effect of the view; resampling the patients for both terms at once keeps
# that cancellation inside the interval, which is therefore much narrower than the spread of
# the metrics themselves.
#
# </details>
#
# **Q5.** Why would a real lower-magnification test need a slide (or a larger tile) and not just
# the 50 × 50 IDC patch?
#
# <details><summary>Answer</summary>
#
# At a lower magnification the same number of pixels covers more tissue: the context around
# the patch. That tissue is not in the patch, so no resampling of the patch can produce it;
# shrinking and enlarging back only removes detail. A slide (or a tile cut larger than the
# patch) holds the surrounding tissue, as notebook 01 shows.
#
# </details>

# %% [markdown]
# ## Exercises
#
# 1. Set `n_seeds = 4`: do the intervals of section 4 narrow, and does a verdict change?
# 2. Set `pretrain_epochs = 5`: does a longer MAMIM change the difference of drops?
# 3. Set `min_zoom = 1.0` (only crops in pretraining): does `mamim_multi` still lose less under
#    the blurs? And `max_zoom = 1.0` (only blurs) for the crops?
# 4. Set `zooms = [0.25, 0.5, 1.0, 2.0, 4.0]`: how far can a view move before every arm falls
#    to chance?
# 5. Set `label_fraction = 1.0`: does the pretraining's effect shrink when labels are plenty?
#
# Next: [09 · Whole-slide images and MIL](09_wsi_mil.ipynb), from tiles to slide labels.
# Related reading: [SimMIM](https://arxiv.org/abs/2111.09886) and
# [MAE](https://arxiv.org/abs/2111.06377) (masked image modelling),
# [Mamba](https://arxiv.org/abs/2312.00752) (the selective scan inside the encoder).
