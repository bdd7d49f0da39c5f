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
# **What.** An *ablation* removes one part of a model and measures the change. SSMamba has
# three named parts; we remove each in turn and compare with the full model and with a
# familiar alternative (self-attention as the token mixer, as in a vision transformer):
#
# | variant | change |
# |---|---|
# | `full` | SSMamba as built: MAMIM → fine-tune; LPR; DMS with 4 directions, 2 scales |
# | `no_mamim` | fine-tune from random weights |
# | `no_dms` | DMS with 1 direction and 1 scale (a plain row-major Mamba-style scan) |
# | `no_lpr` | no Local Perception Residual |
# | `attention` | multi-head self-attention instead of DMS |
#
# **Why seeds.** Training is random (initial weights, batches, masks, augmentation). One run
# per variant cannot tell an effect from luck; several seeds give a mean and a spread, and a
# difference smaller than the spread is not a finding. Each cell of the grid (variant × seed)
# is a papermill execution of the parameterised notebook `06a_ablation_cell`, so any single
# cell can be rerun on its own (the command is printed below).

# %% tags=["parameters"]
data_dir = "sample:idc-breast"   # labelled tiles: class folders or labels.csv (any classes)
extra_data = ""                   # an unlabelled pool MAMIM sees too ("": only data_dir's training tiles)
output_dir = "runs/notebooks/06_ablations"
image_size = 64
epochs = 3
batch_size = 32
device = "auto"
seed = 0                  # the first seed of the grid
n_seeds = 2               # seeds seed, seed+1, ... per variant (3 or more on a GPU)
model = "ssmamba_lite_cpu"      # the laptop-sized preset; on a GPU: "ssmamba_lite_tiny"
model_args = {}                 # overrides of SSMambaConfig fields, e.g. {"use_lpr": False}
variants = ["full", "no_mamim", "no_dms", "no_lpr", "attention"]
pretrain_epochs = 1
pretrain_max_steps = 30     # a short MAMIM per cell (more than 0 cuts the epoch short)
label_fraction = 0.25
lr = 1e-3
max_steps_per_epoch = 0
progress = False          # the cells' progress bars (their notebooks keep the output)
cell_notebook_path = ""   # the notebook run for each cell; "": 06a_ablation_cell of this course

# %%
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
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
seeds = list(range(seed, seed + n_seeds))
print(f"{len(variants)} variants x {len(seeds)} seeds = {len(variants) * len(seeds)} cells")

# %% [markdown]
# ## 1. Run the grid
#
# Every cell gets the same data, schedule and base model; only the variant and the seed
# change. Each executed cell notebook is kept in `cells/` beside its outputs.

# %%
from ssmamba_lite.course.runner import NOTEBOOKS, execute_notebook

cell_notebook = Path(cell_notebook_path).resolve() if cell_notebook_path else \
    NOTEBOOKS / "06a_ablation_cell.ipynb"
shared = dict(data_dir=str(data_dir), extra_data=extra_data,
              image_size=image_size, epochs=epochs, batch_size=batch_size, device=device,
              model=model, model_args=model_args, pretrain_epochs=pretrain_epochs,
              pretrain_max_steps=pretrain_max_steps, label_fraction=label_fraction, lr=lr,
              max_steps_per_epoch=max_steps_per_epoch, progress=progress)
results = []
for variant in variants:
    for s in seeds:
        cell_dir = (out / "cells" / f"{variant}_seed{s}").resolve()
        params = {**shared, "variant": variant, "seed": s, "output_dir": str(cell_dir)}
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "parameters.yaml").write_text(json.dumps(params, indent=2) + "\n")  # JSON is YAML
        t0 = time.perf_counter()
        execute_notebook(cell_notebook, cell_dir.with_suffix(".ipynb"), params,
                         cwd=cell_notebook.parent, cell_timeout=3600)
        results.append(json.loads((cell_dir / "result.json").read_text()))
        print(f"{cell_dir.name:22s} acc {results[-1]['accuracy']:.3f}  "
              f"auroc {results[-1]['auroc']:.3f}  ({time.perf_counter() - t0:.0f} s)")

print(f"\nrerun one cell, e.g. the last one:\n  cd {cell_notebook.parent} && papermill "
      f"{cell_notebook.name} {cell_dir.with_suffix('.ipynb')} -f {cell_dir / 'parameters.yaml'}")

# %% [markdown]
# ## 2. Results
#
# Mean ± standard deviation over seeds of the last epoch's validation metrics (held-out
# patients).

# %%
df = pd.DataFrame(results)
df.to_csv(out / "ablation_results.csv", index=False)
summary = df.groupby("variant", sort=False)[["accuracy", "balanced_accuracy", "macro_f1", "auroc"]]
table = summary.mean().round(3).astype(str) + " ± " + summary.std(ddof=1).fillna(0).round(3).astype(str)
table.to_csv(out / "ablation_table.csv")
display(table)

# %%
import seaborn as sns

long = df.melt(id_vars=["variant", "seed"], value_vars=["balanced_accuracy", "auroc"],
               var_name="metric", value_name="value")
fig, ax = plt.subplots(figsize=(7, 3.6))
sns.barplot(data=long, x="variant", y="value", hue="metric", errorbar="sd", capsize=0.1,
            order=variants, ax=ax, alpha=0.8)
sns.stripplot(data=long, x="variant", y="value", hue="metric", dodge=True, order=variants,
              ax=ax, palette="dark:k", size=3, legend=False)
ax.set_ylim(max(0.0, long["value"].min() - 0.1), 1.0)
ax.set_title(f"ablations: mean and s.d. over {len(seeds)} seed(s)")
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
save_figure(fig, out, "ablations")
plt.show()

# %% [markdown]
# **Reading the grid.** Compare each variant with `full`, and the gap with the error bars.
# On a CPU-sized model, a few epochs and a quarter of the labels, effects are small and the
# spread is large: that *is* a result (it tells how much compute an honest answer needs).
# For the paper-scale question, run on a GPU with `model = "ssmamba_lite_tiny"`, more epochs and
# `n_seeds = 3` or more.
