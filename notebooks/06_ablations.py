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
# # 06 · Ablations: what does each part buy?
#
# **What.** An *ablation* removes one part of a model and measures the change. SSMamba
# ([Chai et al. 2026](https://arxiv.org/abs/2604.15711)) names three parts; we remove each in
# turn and compare with the full model, and with a familiar alternative (self-attention as the
# token mixer, as in a vision transformer):
#
# | variant | change |
# |---|---|
# | `full` | SSMamba as built here: MAMIM → fine-tune; LPR; DMS with 4 directions, 2 scales |
# | `no_mamim` | fine-tune from random weights |
# | `no_dms` | DMS with 1 direction and 1 scale (a plain row-major scan, as in [Mamba](https://arxiv.org/abs/2312.00752)) |
# | `no_lpr` | no Local Perception Residual |
# | `attention` | multi-head self-attention instead of DMS |
#
# **What the paper says, what is ours.** The abstract says that MAMIM (masked image modelling
# on the target dataset itself), DMS and LPR together outperform 11 pathology foundation models
# on 10 ROI datasets; the public abstract gives no ablation numbers. The layers, the MAMIM
# recipe and this grid are this project's own design, so what the grid measures is what *these*
# parts buy at *this* size, not a check of the paper's tables.
#
# **How we decide.** Training is random (initial weights, batch order, masks, augmentation),
# and the held-out patients are few. A variant "is worse" only if the difference to `full` is
# larger than both kinds of noise allow. We therefore (1) train every variant with the same
# seeds, so that seed *s* of a variant is compared with seed *s* of `full` (paired), (2) keep
# the patient split fixed across seeds (seeds change training only), (3) resample the held-out
# *patients* and the *seeds* to get an interval for each difference, (4) widen every interval
# for the number of differences reported together, and (5) let the interval write the
# verdict.

# %% [markdown]
# ## Learning objectives
#
# - Say why DMS must see token maps of some size before an ablation of DMS can show anything,
#   and compute those sizes from the image size and the network's strides.
# - Run an ablation grid (variants × seeds), each cell a notebook of its own.
# - Compute a paired difference per seed and a bootstrap interval over patients and seeds
#   (widened for the number of differences reported), and
#   read a verdict ("better", "worse", "within noise") off the interval.
# - Read a forest plot of differences and tell a finding from noise.
#
# ## Prerequisites
#
# - [05 · Fine-tuning](05_finetuning.ipynb): the fine-tuning run, its patient split and its
#   metrics (balanced accuracy, AUROC).
# - [03 · LPR and DMS](03_lpr_and_dms.ipynb) and [04 · MAMIM](04_mamim_pretraining.ipynb): the
#   parts that are removed here.
# - Percentiles, and the idea of resampling with replacement.

# %% tags=["parameters"]
data_dir = "sample:idc-breast"   # labelled tiles: class folders or labels.csv (any classes)
extra_data = ""                   # an unlabelled pool MAMIM sees too ("": only data_dir's training tiles)
output_dir = "runs/notebooks/06_ablations"
image_size = 64
model_args = {"conv_stages": 1}   # the base every variant changes: DMS from stage 2 on (8x8 maps at 64 px)
epochs = 3
batch_size = 32
device = "auto"
seed = 0                  # the first training seed of the grid (the patient split stays fixed)
n_seeds = 2               # seeds seed, seed+1, ... per variant
model = "ssmamba_lite_cpu"      # the laptop-sized preset; on a GPU: "ssmamba_lite_tiny"
variants = ["full", "no_mamim", "no_dms", "no_lpr", "attention"]
pretrain_epochs = 1
pretrain_max_steps = 0    # 0: whole MAMIM epochs; more than 0 cuts each epoch short
label_fraction = 0.25     # the share of training patients whose labels fine-tuning uses
lr = 1e-3
max_steps_per_epoch = 0
n_resamples = 1000        # bootstrap resamples of the held-out patients
level = 0.95              # the intervals' coverage
progress = False          # the cells' progress bars (their notebooks keep the output)
cell_notebook_path = ""   # the notebook run for each cell; "": 06a_ablation_cell of this course

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from ssmamba_lite.course.analysis import ABLATIONS
from ssmamba_lite.course.figures import save_figure
from ssmamba_lite.course.runner import require_data

data_dir = require_data(data_dir, dataset="idc-breast")
if extra_data:
    require_data(extra_data, labelled=False)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
unknown = sorted(set(variants) - set(ABLATIONS))
assert not unknown, f"unknown variants {unknown}; known: {list(ABLATIONS)}"
assert "full" in variants, "the grid compares every variant with 'full': keep it in variants"
seeds = list(range(seed, seed + n_seeds))
print(f"{len(variants)} variants x {len(seeds)} seeds = {len(variants) * len(seeds)} cells")

# %% [markdown]
# ## 1. Where DMS acts: the size of its token maps
#
# The stem divides the image side by 4 and every later stage by 2 more, so stage $i$
# ($i = 1 \dots 4$) works on a map of side
#
# $$ s_i = \frac{\text{image\_size}}{4 \cdot 2^{\,i-1}} . $$
#
# The preset puts convolutions in the first `conv_stages = 2` stages and DMS in stages 3 and 4.
# At 64 px that is $s_3 = 4$ and $s_4 = 2$: DMS scans 16 and 4 tokens, and its second scale
# (pooling by 2) leaves 4 and 1. A scan over 4 tokens hardly differs from a convolution, so
# removing DMS there can show nothing. Two ways to give it room: a larger image (128 px puts
# 8 × 8 maps in stage 3) or DMS one stage earlier (`conv_stages = 1` puts 8 × 8 maps in stage 2
# at 64 px). Both cost compute; the cell below measures how much, side by side (a training
# step, forward and backward, of one batch), and `model_args` picks the option the grid uses.
# The preset itself stays as it is.

# %%
from ssmamba_lite.engine.device import resolve_device
from ssmamba_lite.engine.factory import build_model

dev = resolve_device(device)
options = {f"preset, {image_size} px": (image_size, {}),
           f"model_args, {image_size} px": (image_size, dict(model_args)),
           f"preset, {2 * image_size} px": (2 * image_size, {})}
nets, rows = {}, []
for name, (size, args) in options.items():
    net = build_model(model, 2, size, args).to(dev)
    x = torch.randn(16, 3, size, size, device=dev)       # a batch of 16
    sides = [f.shape[-1] for f in net.forward_intermediates(x[:1], intermediates_only=True)]
    mixers = net.cfg.stage_mixers()
    nets[name] = (net, x)
    rows.append({"option": name, "parameters": sum(p.numel() for p in net.parameters()),
                 **{f"stage {i + 1}": f"{m} {s}x{s}"
                                    for i, (m, s) in enumerate(zip(mixers, sides))},
                 "largest DMS map": max([s for m, s in zip(mixers, sides) if m == "dms"],
                                          default=0)})
seconds = {name: [] for name in nets}
for round_ in range(4):                            # round 0 warms up (kernels compile, caches)
    for name, (net, x) in nets.items():
        t0 = time.perf_counter()
        net(x).sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if round_:
            seconds[name].append(time.perf_counter() - t0)
cost = pd.DataFrame(rows).set_index("option")
cost["step s (median)"] = [np.median(seconds[n]) for n in cost.index]
cost["x preset"] = (cost["step s (median)"] / cost["step s (median)"].iloc[0]).round(2)
display(cost)
chosen = cost.loc[f"model_args, {image_size} px"]
side = chosen["largest DMS map"]
print(f"the grid runs model_args {model_args} at {image_size} px: {chosen['parameters']:,} "
      f"parameters, DMS's largest map {side}x{side}, a training step costs {chosen['x preset']:.2f}x the preset's at this size "
      f"({cost['x preset'].iloc[2]:.2f}x at {2 * image_size} px)")

# %% [markdown]
# ## 2. Run the grid
#
# Every cell gets the same data, patient split, schedule and base model (`model_args`); only
# the variant and the training seed change. A cell pretrains with MAMIM (except `no_mamim`),
# fine-tunes on `label_fraction` of the training patients, and writes its metrics and its
# per-tile validation probabilities (`predictions.csv`). Each executed cell notebook is kept in
# `cells/` beside its outputs, and any cell can be rerun alone (the command is printed).
#
# MAMIM's learning rate rises linearly over its first `warmup_fraction` = 10% of all steps
# (`engine/loop.py`), at least one step:
#
# $$ \text{steps} = \text{epochs} \cdot \left\lfloor \frac{n_\text{train}}{\text{batch}} \right\rfloor, \qquad
#    \text{warm-up} = \max\bigl(1, \operatorname{round}(0.1 \cdot \text{steps})\bigr) $$
#
# (`pretrain_max_steps` caps the steps per epoch). Each cell prints both numbers, so one sees
# that MAMIM trains past its warm-up, at full learning rate, and then decays.

# %%
from ssmamba_lite.course.grid import cell_name, run_grid
from ssmamba_lite.course.runner import NOTEBOOKS, execute_notebook

cell_notebook = Path(cell_notebook_path).resolve() if cell_notebook_path else \
    NOTEBOOKS / "06a_ablation_cell.ipynb"
shared = dict(data_dir=str(data_dir), extra_data=extra_data,
              image_size=image_size, epochs=epochs, batch_size=batch_size, device=device,
              model=model, model_args=model_args, pretrain_epochs=pretrain_epochs,
              pretrain_max_steps=pretrain_max_steps, label_fraction=label_fraction, lr=lr,
              max_steps_per_epoch=max_steps_per_epoch, progress=progress)


def run_cell(variant, s):
    """One cell: 06a executed into cells/<variant>_seed<s>/ with its parameters.yaml."""
    cell_dir = (out / "cells" / cell_name(variant, s)).resolve()
    params = {**shared, "variant": variant, "seed": s, "output_dir": str(cell_dir)}
    cell_dir.mkdir(parents=True, exist_ok=True)
    (cell_dir / "parameters.yaml").write_text(json.dumps(params, indent=2) + "\n")  # JSON is YAML
    execute_notebook(cell_notebook, cell_dir.with_suffix(".ipynb"), params,
                     cwd=cell_notebook.parent, cell_timeout=3600)
    return json.loads((cell_dir / "result.json").read_text())


def describe(r):
    """A cell's line: its held-out metrics and the MAMIM steps it took."""
    mamim_note = f"MAMIM {r['mamim_steps']} steps ({r['mamim_warmup_steps']} warm-up)" \
        if r["mamim"] else "no MAMIM"
    return f"bal_acc {r['balanced_accuracy']:.3f}  auroc {r['auroc']:.3f}  {mamim_note}"


results = list(run_grid(variants, seeds, run_cell, describe).values())
last = (out / "cells" / cell_name(variants[-1], seeds[-1])).resolve()
print(f"\nrerun one cell, e.g. the last one:\n  cd {cell_notebook.parent} && papermill "
      f"{cell_notebook.name} {last.with_suffix('.ipynb')} -f {last / 'parameters.yaml'}")

# %% [markdown]
# ## 3. The grid, cell by cell
#
# The last epoch's validation metrics of every cell (held-out patients; nothing selected), and
# the mean ± standard deviation over seeds. The spread between seeds is training noise alone:
# every seed saw the same patients.

# %%
df = pd.DataFrame(results)
df.to_csv(out / "ablation_results.csv", index=False)
display(df[["variant", "seed", "balanced_accuracy", "auroc", "mamim_steps", "mamim_warmup_steps",
            "seconds"]].round(3))
summary = df.groupby("variant", sort=False)[["balanced_accuracy", "auroc"]]
table = summary.mean().round(3).astype(str) + " ± " + \
    summary.std(ddof=1).fillna(0).round(3).astype(str)
table.to_csv(out / "ablation_table.csv")
display(table)

# %% [markdown]
# ## 4. Paired differences with intervals over patients
#
# For a variant $v$, seed $s$ and metric $M$ (balanced accuracy or AUROC), the paired
# difference on the held-out tiles is
#
# $$ \Delta_s = M(v, s) - M(\text{full}, s), \qquad \hat\Delta = \frac{1}{S}\sum_s \Delta_s . $$
#
# Its interval comes from a *bootstrap over patients and seeds*: draw the $P$ held-out
# patients $P$ times with replacement (a patient drawn twice counts its tiles twice) and the
# $S$ seeds $S$ times with replacement, recompute every $\Delta_s$ on the resampled patients
# (the same patients for both arms: paired) and average them over the drawn seeds; repeat
# `n_resamples` times. Patients, not tiles, are resampled because tiles of one patient are
# alike: resampling tiles would pretend there are far more independent cases than there are.
# Seeds are resampled because training noise is noise too: when the seeds disagree, the
# interval widens. With $S = 2$ a resample can only draw seeds $\{1,1\}$, $\{1,2\}$ or
# $\{2,2\}$, so the seeds' part of the interval is crude: 2 seeds can show that seeds disagree,
# not how much; more seeds are the remedy.
#
# **Many differences at once.** The grid reports $m$ differences (variants × metrics). At
# level 95 % each, about one in twenty differences with no true effect would still read
# "better" or "worse"; with $m = 8$ the chance that at least one does is up to
# $1 - 0.95^8 \approx 34\%$. Each interval is therefore computed at level $1 - (1 -
# \text{level})/m$ (Bonferroni, `bootstrap.family_level`), so that all $m$ together hold at
# `level`.
#
# The verdict: the interval above 0 → the variant is *better* than `full`; below 0 → *worse*;
# covering 0 → *within noise*. `course/bootstrap.py` computes all of it (tests in
# `tests/test_analysis.py`).

# %%
from ssmamba_lite.course.bootstrap import METRIC_NAMES, bootstrap_contrast, family_level

preds = {(v, s): pd.read_csv(out / "cells" / f"{v}_seed{s}" / "predictions.csv")
         for v in variants for s in seeds}
ref = preds[("full", seeds[0])]
for key, p in preds.items():
    assert p["path"].tolist() == ref["path"].tolist(), f"{key}: other validation tiles than full"
prob_cols = [c for c in ref.columns if c.startswith("prob_")]
arms = {v: np.stack([preds[(v, s)][prob_cols].to_numpy() for s in seeds]) for v in variants}
labels, patients = ref["label"].to_numpy(), ref["patient_id"].to_numpy()
n_contrasts = 2 * (len(variants) - 1)                 # variants other than full × 2 metrics
each_level = family_level(level, n_contrasts)
print(f"{len(ref)} held-out tiles of {len(set(patients))} patients, {len(seeds)} seed(s), "
      f"{n_resamples} resamples; {n_contrasts} differences, each interval at "
      f"{each_level:.2%} so that all hold together at {level:.0%}")
if len(seeds) < 3:
    print(f"only {len(seeds)} seed(s): the intervals cannot say how much the seeds disagree, "
          f"and a verdict here may not survive more seeds")
print()

contrasts, verdicts = [], []
for v in variants:
    if v == "full":
        continue
    for metric in ("balanced_accuracy", "auroc"):
        c = bootstrap_contrast(labels, patients, arms, {v: 1, "full": -1}, metric,
                               n_resamples, each_level)
        contrasts.append({"variant": v, "metric": metric, "difference": c.estimate,
                          "low": c.low, "high": c.high, "verdict": c.verdict,
                          "per_seed": c.per_seed})
        verdicts.append(c.sentence(v, "full"))
contrast_table = pd.DataFrame(contrasts)
contrast_table.to_csv(out / "paired_differences.csv", index=False)
print("\n".join(verdicts))

# %% [markdown]
# ## 5. The forest plot
#
# One row per variant: the dot is $\hat\Delta$, the bar its interval, the small grey marks the
# per-seed differences $\Delta_s$; the dotted line is "no difference". A bar that crosses it is
# a difference this grid cannot tell from noise.

# %%
from ssmamba_lite.course.figures import forest_rows

others = [v for v in variants if v != "full"]
fig, axes = plt.subplots(1, 2, figsize=(9, 0.6 * len(others) + 1.6), sharey=True)
for ax, metric in zip(axes, ("balanced_accuracy", "auroc")):
    part = contrast_table[contrast_table["metric"] == metric].set_index("variant").loc[others]
    forest_rows(ax, [row for _, row in part.iterrows()], [f"{v} − full" for v in others],
                f"difference in {METRIC_NAMES[metric]}")
fig.suptitle(f"paired differences, bootstrap intervals over {len(set(patients))} patients "
             f"and {len(seeds)} seed(s), {level:.0%} for all {n_contrasts} together "
             f"(green better, red worse, grey within noise; small marks: single seeds)",
             fontsize=9)
fig.tight_layout()
save_figure(fig, out, "ablation_forest")
plt.show()

# %% [markdown]
# **Against the paper.** The abstract claims that MAMIM, DMS and LPR each help. The next cell
# reads this run's verdicts for the three parts the paper names and says, for each, whether
# this run agrees, contradicts or cannot tell, and what the course's scale cannot show about
# that part (with the exercise below that would test it at a larger size). The sentences are
# chosen by the verdicts computed above; none is written in advance.

# %%
dms_side = image_size // (4 * 2 ** model_args.get("conv_stages", 2))   # DMS's largest map
LIMITS = {   # what this scale cannot show about each part, and the exercise that tests it larger
    "no_mamim": (f"MAMIM pretrains for {pretrain_epochs} epoch(s) per cell here; the budget "
                 f"curve of docs/mamim.md measures what longer pretraining buys", "exercise 3"),
    "no_dms": (f"at {image_size} px DMS scans maps of {dms_side} x {dms_side} tokens and "
               f"smaller, where directions and scales differ little", "exercise 2"),
    "no_lpr": (f"at {image_size} px and {epochs} fine-tuning epoch(s) there is little fine "
               f"detail for LPR's depthwise convolutions (IDC's 50 px tiles are enlarged) and "
               f"little training for its residual", "exercise 2"),
}
PART = {"no_mamim": "MAMIM", "no_dms": "DMS", "no_lpr": "LPR"}
for v in [v for v in variants if v in LIMITS]:
    rows = contrast_table[contrast_table["variant"] == v].set_index("metric")["verdict"]
    worse = [METRIC_NAMES[m] for m, verdict in rows.items() if verdict == "worse"]
    better = [METRIC_NAMES[m] for m, verdict in rows.items() if verdict == "better"]
    limit, exercise = LIMITS[v]
    if better:
        print(f"{v}: removing {PART[v]} is better in {' and '.join(better)} here, which "
              f"contradicts the paper's claim that it helps. What this scale cannot show: "
              f"{limit}; {exercise} tests it at a larger size.")
    elif worse:
        print(f"{v}: removing {PART[v]} is worse in {' and '.join(worse)}: this run agrees "
              f"with the paper that {PART[v]} helps.")
    else:
        print(f"{v}: within noise in both metrics: this run cannot tell whether {PART[v]} "
              f"helps ({limit}; {exercise} tests it at a larger size).")

# %% [markdown]
# **Reading the result.** The sentences printed in section 4 are what this run can say,
# computed from the intervals (over patients and seeds, widened for the number of differences
# reported); nothing else in this notebook is a conclusion. They speak of these patients, these
# seeds and this size only. At the default CPU size (the laptop preset, a few epochs, a quarter
# of the labels, one short MAMIM epoch, 2 seeds) the intervals are wide, and "within noise" is
# a result too: it says how much compute and how many patients an answer needs. Three things
# widen or narrow the intervals: the number of held-out patients (fixed by the data), the
# training noise (more seeds average it out and measure it), and the number of differences
# reported at once.
#
# **On a GPU.** The same grid with the wider and deeper preset `ssmamba_lite_tiny` (at 128 px
# its DMS stages see 8 × 8 and 4 × 4 maps with the preset's own `conv_stages = 2`), all labels,
# longer MAMIM and five seeds (this command has not been timed in this project):
#
# ```bash
# ssmamba-lite tutorial 06 -p device cuda -p model ssmamba_lite_tiny -p image_size 128 \
#     -p model_args '{}' -p epochs 30 -p pretrain_epochs 50 -p label_fraction 1.0 \
#     -p n_seeds 5 -p batch_size 128
# ```

# %% [markdown]
# ## What you learned
#
# - An ablation of DMS needs DMS to scan maps of some size: $s_i = \text{image\_size} /
#   (4 \cdot 2^{i-1})$ at stage $i$; moving DMS one stage earlier (`conv_stages = 1`) or
#   doubling the image gives it 8 × 8 maps, at the costs measured in section 1.
# - A grid of variants × training seeds, with the patient split fixed, separates training
#   noise (seed to seed) from the effect of a part.
# - A paired difference (variant − full, seed by seed) with a bootstrap over held-out patients
#   and seeds gives an interval; reporting $m$ differences at once, each interval is taken at
#   level $1 - \alpha/m$ (Bonferroni). The verdict is read off it, and an interval that covers
#   0 reads "within noise".
# - A forest plot shows every difference, its interval and its seeds at a glance.

# %% [markdown]
# ## Self-check
#
# Set each answer in its cell and run it; `check` says "correct" or raises an error. The cells
# hold the right answers so that the notebook runs headless: change them to yours.
#
# **Q1.** With `image_size = 64` and `model_args = {"conv_stages": 1}`, what is the side (in
# tokens) of the largest map that DMS scans? (Section 1 prints it.)

# %%
from ssmamba_lite.course.quiz import check

q1 = 8     # change this to your answer, then run the cell
check("Q1", q1, "2c624232cdd22177", decimals=0)

# %% [markdown]
# **Q2.** The AUROC difference `no_lpr − full` has the 95% interval [−0.021, +0.034]. What is
# the verdict? (a) `no_lpr` is better, (b) `no_lpr` is worse, (c) within noise.

# %%
q2 = "c"     # change this to your answer
check("Q2", q2, "2e7d2c03a9507ae2")

# %% [markdown]
# **Q3.** A MAMIM run takes 22 steps in all with `warmup_fraction = 0.1`. For how many steps
# does its learning rate rise (the warm-up)?

# %%
q3 = 2     # change this to your answer
check("Q3", q3, "d4735e3a265e16ee", decimals=0)

# %% [markdown]
# **Q4.** Why does the bootstrap resample patients and not tiles?
#
# <details><summary>Answer</summary>
#
# Tiles of one patient share the patient's tissue, stain and scan, so they are not independent
# cases: a model right on one tile of a patient tends to be right on the others. Resampling
# tiles would treat every tile as an independent case (258 of them in the IDC sample's
# validation split) and give intervals that are too narrow; the independent units are the
# held-out patients (40 in that split), so those are what is resampled (a cluster bootstrap).
#
# </details>
#
# **Q5.** Why compare seed *s* of a variant with seed *s* of `full`, and use the same resampled
# patients for both, rather than compare the two means with separate intervals?
#
# <details><summary>Answer</summary>
#
# Much of the variation is shared: some patients are hard for every model, and a resample that
# draws many of them lowers both arms. Pairing cancels what the arms share, so the interval of
# the *difference* is narrower than what two separate intervals suggest, and overlapping
# separate intervals say little about the difference. Pairing seeds makes the comparison use
# the same seed-to-seed conditions on both sides (the seed sets initialisation, batch order,
# masks and augmentation for both).
#
# </details>

# %% [markdown]
# ## Exercises
#
# 1. Set `n_seeds = 4` (and, if you have time, 8): do the intervals narrow, and does any
#    verdict change? The per-seed marks in the forest plot show how much seeds disagree.
# 2. Set `image_size = 128`: DMS then scans 16 × 16 maps in stage 2 (with the default
#    `model_args`; with `model_args = {}`, the preset's layout, 8 × 8 maps in stage 3), and
#    the tiles (50 px, enlarged) keep more of their detail relative to LPR's kernels. Compare
#    the step cost of section 1 and the verdicts of `no_dms` and `no_lpr`.
# 3. Set `pretrain_epochs = 20` (the budget at which the budget curve of `docs/mamim.md` measures
#    MAMIM): does `no_mamim − full` move once MAMIM trains longer?
# 4. Set `label_fraction = 1.0`: MAMIM is expected to matter most when labels are few; does the
#    `no_mamim` difference shrink with all labels?
# 5. Set `level = 0.8`: which verdicts change, and why is that not a way to find effects?
#
# Next: [07 · Explainability](07_explainability.ipynb), where a trained model shows which
# pixels its decision rests on (Grad-CAM). Related reading: [VMamba](https://arxiv.org/abs/2401.10166)
# and [LocalMamba](https://arxiv.org/abs/2403.09338) (directional and windowed scans, which DMS
# builds on), [CMT](https://arxiv.org/abs/2107.06263) (the local perception unit behind LPR),
# [SimMIM](https://arxiv.org/abs/2111.09886) and [MAE](https://arxiv.org/abs/2111.06377)
# (masked image modelling, behind MAMIM).
