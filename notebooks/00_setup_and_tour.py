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
# # 00 · Set-up and a tour of `ssmamba_lite`
#
# **What.** This course rebuilds *SSMamba* (Chai, Chen, Zhang, Li and Cui, "SSMamba: A
# Self-Supervised Hybrid State Space Model for Pathological Image Classification", Medical
# Image Analysis 2026, [arXiv:2604.15711](https://arxiv.org/abs/2604.15711)) piece by piece, on
# real H&E tissue tiles that ship with the package. This notebook checks the set-up, tours the
# library and sends one batch of tiles through the network.

# %% [markdown]
# ## What the paper says, and what is ours
#
# Only the abstract of the paper is public. It says:
#
# - Regions of interest (ROIs) are the primary basis of diagnostic evidence, and ROI-level
#   foundation models (Vision Transformers pretrained by large-scale self-supervised learning)
#   are widely used for them. Three limitations remain: **(1) cross-magnification domain
#   shift** ("fixed-scale pretraining hinders adaptation to diverse clinical settings");
#   **(2) inadequate local-global relationship modelling** (the ViT backbone has "high
#   computational overhead and imprecise local characterization"); **(3) insufficient
#   fine-grained sensitivity** (self-attention "tend[s] to overlook subtle diagnostic cues").
# - SSMamba is a hybrid self-supervised framework for fine-grained feature learning "without
#   relying on large external datasets", with three components, one per limitation:
#   **MAMIM** (Mamba Masked Image Modeling) against the domain shift, **DMS** (a Directional
#   Multi-scale module) for balanced local-global modelling, and **LPR** (a Local Perception
#   Residual module) for fine-grained sensitivity.
# - Training has two stages: self-supervised pretraining *on the target ROI dataset itself*,
#   then supervised fine-tuning.
# - Reported result: SSMamba outperforms 11 state-of-the-art pathology foundation models on 10
#   public ROI datasets, and 8 state-of-the-art methods on 6 public WSI datasets.
#
# **This project's own design** (the abstract gives no layers, no recipe, no sizes): the
# selective scan and Mamba block follow Mamba ([arXiv:2312.00752](https://arxiv.org/abs/2312.00752));
# DMS scans along several orders as VMamba ([arXiv:2401.10166](https://arxiv.org/abs/2401.10166))
# and LocalMamba ([arXiv:2403.09338](https://arxiv.org/abs/2403.09338)) do, plus pooled scales,
# fused with learned weights; LPR is $x + \mathrm{DWConv}(x)$, like CMT's local perception unit
# ([arXiv:2107.06263](https://arxiv.org/abs/2107.06263)); MAMIM is a SimMIM-style recipe
# ([arXiv:2111.09886](https://arxiv.org/abs/2111.09886); masked tokens replaced by a learned
# token rather than dropped as in MAE, [arXiv:2111.06377](https://arxiv.org/abs/2111.06377))
# with random zooms; the hierarchical layout (convolutions in the two fine stages, DMS in the
# two coarse ones), the presets and every number are ours. The whole-slide part (notebook 09)
# uses attention MIL (ABMIL, [arXiv:1802.04712](https://arxiv.org/abs/1802.04712)) and
# Mamba-MIL (MambaMIL, [arXiv:2403.06800](https://arxiv.org/abs/2403.06800)). Nothing in this
# course reproduces the paper's numbers: every result you will see is measured here, on small
# sample sets and small models.
#
# | limitation (abstract) | component (abstract) | here | notebook |
# |---|---|---|---|
# | cross-magnification domain shift | **MAMIM**, pretraining on the target data | `mamim.py` | 04, 05, 08 |
# | inadequate local-global modelling | **DMS** | `dms.py` (on `scan.py`, `mamba.py`) | 02, 03 |
# | insufficient fine-grained sensitivity | **LPR** | `lpr.py` | 03 |

# %% [markdown]
# ## The course
#
# | notebook | what you do |
# |---|---|
# | 00 · set-up and tour (this one) | check the installation, read the library's map, push tiles through the network |
# | [01 · the data](01_data.ipynb) | tiles, classes, patients, magnifications, augmentation |
# | [02 · the selective scan](02_selective_scan_from_scratch.ipynb) | derive and write the scan (S6), its parallel form and the Mamba block; graded exercises |
# | [03 · LPR and DMS](03_lpr_and_dms.ipynb) | read a 2D image with 1D scans, and add a local residual; graded exercises |
# | [04 · MAMIM pretraining](04_mamim_pretraining.ipynb) | masked image modelling on the target tiles; graded exercises |
# | [05 · fine-tuning](05_finetuning.ipynb) | from MAMIM against from scratch; graded exercise |
# | [06 · ablations](06_ablations.ipynb) | what each part buys (each variant runs [06a](06a_ablation_cell.ipynb)) |
# | [07 · explainability](07_explainability.ipynb) | Grad-CAM on right and wrong tiles |
# | [08 · cross-magnification](08_cross_magnification.ipynb) | train at one zoom, test at another |
# | [09 · whole slides](09_wsi_mil.ipynb) | tiles, features and slide-level classification (MIL) |
#
# Every notebook starts with a cell of **parameters** (`data_dir`, `output_dir`, `image_size`,
# `epochs`, `batch_size`, `device`, `seed`, ...): change them there, or from the command line
# (`ssmamba-lite tutorial 00 -p image_size 64`). Every figure is also saved as a PNG in
# `output_dir`.

# %% [markdown]
# ## Learning objectives
#
# After this notebook you can
# - say what the SSMamba abstract claims, and which parts of this code are this project's own
#   design;
# - check which implementation of the selective scan runs on your machine;
# - find your way in the package (which module holds which part of the paper);
# - follow a batch of tiles through the network's stages, with their shapes.
#
# ## Prerequisites
#
# Python and a little PyTorch; the package installed (`make test` or `pip install -e .`). No
# pathology background is needed: [01 · the data](01_data.ipynb) introduces the tissue.

# %% tags=["parameters"]
data_dir = "sample:kather2016"   # class folders or labels.csv; "sample:NAME": a set that ships with the package
output_dir = "runs/notebooks/00_setup_and_tour"
image_size = 128        # the tile size the tour feeds the model
batch_size = 4          # tiles pushed through the model in the tour
device = "auto"         # "auto": the GPU if there is one, else the CPU
seed = 0
model = "ssmamba_lite_tiny"
model_args = {}         # overrides of SSMambaConfig fields, e.g. {"use_lpr": False}

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ssmamba_lite.course.figures import save_figure
from ssmamba_lite.course.runner import require_data

data_dir = require_data(data_dir, dataset="kather2016")   # stops here, saying what to run
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
_ = torch.manual_seed(seed)
print("data:", data_dir.resolve(), "\nfigures:", out.resolve())

# %% [markdown]
# ## 1. The environment
#
# The selective scan has three implementations with one signature (notebook 02):
# a readable PyTorch loop, a fused CPU kernel compiled by numba, and mamba-ssm's CUDA kernel.
# `which_backend(tensor)` says which one a tensor on this machine would get. On a machine
# without a GPU, mamba-ssm is installed *without* its CUDA kernels: its pure-PyTorch
# reference is still there and serves as an independent check of our code.

# %%
import importlib.util
import platform

import ssmamba_lite
from ssmamba_lite.engine.device import resolve_device
from ssmamba_lite.scan import cpu_kernel, cuda_kernel, which_backend


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


print(f"python        {platform.python_version()}")
print(f"torch         {torch.__version__}")
print(f"ssmamba_lite  {ssmamba_lite.__version__}")
print(f"CUDA          {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
print(f"numba         {'yes' if cpu_kernel() is not None else 'no'} (fused CPU scan)")
print(f"mamba-ssm     {'installed' if have('mamba_ssm') else 'absent'}, CUDA kernels "
      f"{'built' if cuda_kernel() is not None else 'not built'}")
print(f"causal-conv1d {'installed' if have('causal_conv1d') else 'absent'}, CUDA kernel "
      f"{'built' if have('causal_conv1d_cuda') else 'not built'}")
print(f"scan on CPU tensors  -> {which_backend(torch.zeros(1))}")
if torch.cuda.is_available():
    print(f"scan on CUDA tensors -> {which_backend(torch.zeros(1, device='cuda'))}")
dev = resolve_device(device)
print(f"this notebook runs on: {dev}")

# %% [markdown]
# ## 2. A tour of the library
#
# The paper sits at the top of the package: `scan.py` (the selective scan) → `mamba.py`,
# `lpr.py`, `dms.py` → `model.py` (the network) and `mamim.py` (the pretraining). Everything
# else has a room of its own: `kernels/` (fast scans), `layers/` (token mixers, MLP),
# `engine/` (data, training, inference), `wsi/` (whole slides), `course/` (these notebooks'
# helpers), `cli/` (the `ssmamba-lite` command). Imports point one way only,
#
# kernels ← scan ← mamba, lpr, dms ← layers ← model ← engine ← wsi, course ← cli,
#
# so each module can be read knowing only what lies below it. Each is meant to be read in one
# sitting: a docstring with the paper's name for it, a glossary of symbols and the equations
# beside the code. Here is the first line of each:

# %%
import importlib
import pkgutil


def first_line(module) -> str:
    return (module.__doc__ or "").strip().splitlines()[0]


for name in ["scan", "mamba", "lpr", "dms", "model", "mamim"]:
    print(f"ssmamba_lite/{name + '.py':16s} {first_line(importlib.import_module(f'ssmamba_lite.{name}'))}")
for room in ["kernels", "layers", "engine", "wsi", "course", "cli"]:
    package = importlib.import_module(f"ssmamba_lite.{room}")
    print(f"\nssmamba_lite/{room + '/':15s} {first_line(package)}")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"ssmamba_lite.{room}.{info.name}")
            print(f"    {info.name + '.py':24s} {first_line(module)}")

# %% [markdown]
# ## 3. The network
#
# SSMamba here is hierarchical: a convolutional stem divides the image size by 4, the first
# stage keeps that size, and each of the other three stages halves it (4 x 2 x 2 x 2 = stride
# 32 in total; the table below prints stem and stage 1 at the same size). Every block is
#
# $$x \leftarrow \mathrm{LPR}(x),\qquad x \leftarrow x + \mathrm{Mixer}(\mathrm{Norm}(x)),\qquad
# x \leftarrow x + \mathrm{MLP}(\mathrm{Norm}(x))$$
#
# and the mixer is a depthwise convolution in the two fine stages (many tokens, local cues)
# and DMS in the two coarse ones (few tokens, where long-range scans are cheap).

# %%
import pandas as pd
import timm
from IPython.display import display

net = timm.create_model(model, num_classes=2, **model_args).to(dev).eval()
cfg = net.cfg
rows = []
for i, stage in enumerate(net.stages):
    rows.append({"stage": i + 1, "mixer": cfg.stage_mixers()[i], "channels": cfg.dims[i],
                 "blocks": cfg.depths[i], "stride": 4 * 2**i,
                 "parameters": sum(p.numel() for p in stage.parameters())})
table = pd.DataFrame(rows)
print(f"{model}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters")
display(table)

# %% [markdown]
# ## 4. One batch of real tiles through it
#
# Shapes are written `(batch, C, H, W)`. Watch the spatial size shrink and the channels grow;
# the pictures show the first channel of each stage's output for the first tile.

# %%
from ssmamba_lite.engine.data import find_labelled, load_image
from ssmamba_lite.engine.transforms import eval_transform

samples = find_labelled(data_dir)
idx = torch.randperm(len(samples))[:batch_size].tolist()
tf = eval_transform(image_size)
x = torch.stack([tf(load_image(samples.paths[i])) for i in idx]).to(dev)
maps = {}
with torch.no_grad():
    h = net.stem(x)
    print(f"input  {tuple(x.shape)}\nstem   {tuple(h.shape)}")
    for i, stage in enumerate(net.stages):
        h = stage(h)
        maps[f"stage {i + 1} {tuple(h.shape[-2:])}"] = h[0].norm(dim=0).cpu()
        print(f"stage {i + 1} {tuple(h.shape)}")
    logits = net(x)
print(f"logits {tuple(logits.shape)} (an untrained head: two classes, random weights)")

# %%
from ssmamba_lite.course.figures import maps_figure, to_image

fig = maps_figure({"tile": to_image(x[0]).clip(0, 1), **maps}, cmap="viridis")
fig.suptitle("a tile and the size of its features (channel norm) after each stage", y=1.02)
save_figure(fig, out, "tour_feature_maps")
plt.show()

# %% [markdown]
# ## What you learned
#
# - The SSMamba abstract names three limitations of ViT foundation models on ROIs
#   (cross-magnification domain shift, local-global modelling, fine-grained sensitivity) and
#   one component against each (MAMIM, DMS, LPR), trained in two stages on the target data
#   itself; how the components are built here is this project's design.
# - Which scan implementation runs here (printed in section 1), and where each part of the
#   paper lives in the package (section 2).
# - The network is hierarchical: a stride-4 stem, then four stages, the last three of which
#   halve the spatial size (stride 32 in all) while the channels grow; convolution mixers in
#   the fine stages, DMS in
#   the coarse ones (the table and shapes of sections 3 and 4).

# %% [markdown]
# ## Self-check
#
# Set each answer in its cell and run it; `check` says "correct" or raises an error.
#
# **Q1.** According to the abstract, how many state-of-the-art pathology foundation models does
# SSMamba outperform on ROI datasets?

# %%
from ssmamba_lite.course.quiz import check

q1 = 11     # change this to your answer, then run the cell
check("Q1", q1, "4fc82b26aecb47d2", decimals=0)

# %% [markdown]
# **Q2.** Which component does the abstract set against "insufficient fine-grained
# sensitivity"? Answer `"mamim"`, `"dms"` or `"lpr"`.

# %%
q2 = "lpr"     # change this to your answer
check("Q2", q2, "fbea0f7cc3310d1c")

# %% [markdown]
# **Q3.** A 128 x 128 tile goes through the network of section 3. What is the side (in
# tokens) of the feature map that stage 4 outputs? Run section 4 with `image_size = 128` if in
# doubt.

# %%
q3 = 4     # change this to your answer
check("Q3", q3, "4b227777d4dd1fc6", decimals=0)

# %% [markdown]
# **Q4.** The abstract says MAMIM pretrains "on target ROI datasets". What does that change
# compared with a foundation model, and what does the abstract *not* tell us about MAMIM?
#
# <details><summary>Answer</summary>
#
# A foundation model is pretrained once on a large external collection and then adapted; MAMIM
# pretrains on the unlabelled tiles of the dataset one wants to classify, so no large external
# data is needed and the encoder sees the target's own stain, scanner and magnifications. The
# abstract does not say how images are masked, what is reconstructed, which loss is used, how
# long it trains, or how magnification enters: the recipe in `mamim.py` (SimMIM-style, random
# zooms) is this project's choice.
#
# </details>

# %% [markdown]
# ## Exercises
#
# 1. Set `model = "ssmamba_lite_cpu"` (the preset the other notebooks train on a CPU) and
#    compare its stage table and parameter count with `ssmamba_lite_tiny`'s.
# 2. Set `model_args = {"use_lpr": False}`: how many parameters does LPR cost, per stage? Then
#    `{"directions": 1}`: what does DMS cost per direction?
# 3. Set `image_size = 100`: read the error message. Which sizes does the network accept, and
#    why (the stride printed in section 3)?
# 4. Set `data_dir = "sample:idc-breast"` and rerun: which classes and tile sizes does that
#    sample have? (01 looks closer.)
#
# Next: [01 · the data](01_data.ipynb) looks at the tiles, their classes and patients, and what
# magnification means; then [02](02_selective_scan_from_scratch.ipynb) opens the selective scan.
