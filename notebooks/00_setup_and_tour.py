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
# **What.** This course rebuilds *SSMamba* (Chai et al. 2026, "SSMamba: A Self-Supervised
# Hybrid State Space Model for Pathological Image Classification") piece by piece, on real
# H&E tissue tiles. Only the paper's abstract is public, so the design details are ours.
#
# **Why.** The abstract names three problems of applying vision models to pathology, and one
# answer to each:
#
# | problem (abstract) | answer | code | notebook |
# |---|---|---|---|
# | domain shift from natural images; few labels | **MAMIM**: masked image modelling on the target data itself | `mamim.py` | 04, 05 |
# | inadequate local-global modelling | **DMS**: selective scans in several directions and scales | `dms.py` | 02, 03 |
# | insufficient fine-grained sensitivity | **LPR**: a depthwise-convolution residual | `lpr.py` | 03 |
#
# All three stand on the *selective scan* (S6) of Mamba, which notebook 02 builds from scratch.
#
# **The course.** 00 set-up (this one) → 01 data → 02 selective scan → 03 LPR and DMS →
# 04 MAMIM pretraining → 05 fine-tuning → 06 ablations → 07 explainability →
# 08 cross-magnification. Every notebook starts with a cell of **parameters**
# (`data_dir`, `output_dir`, `image_size`, `epochs`, `batch_size`, `device`, `seed`, ...):
# change them there, or from the command line with papermill.
# Every figure is also saved as a PNG in `output_dir`.

# %% tags=["parameters"]
data_dir = "sample:kather2016"   # class folders or labels.csv; "sample:NAME": a set that ships with the package
output_dir = "runs/notebooks/00_setup_and_tour"
image_size = 128        # the tile size the tour feeds the model
epochs = 1              # not used here (every notebook has the same parameter names)
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
# SSMamba here is hierarchical: a convolutional stem divides the image size by 4, then four
# stages each halve it again (stride 32 in total). Every block is
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
from ssmamba_lite.engine.data import load_image, scan_labelled
from ssmamba_lite.engine.transforms import eval_transform

samples = scan_labelled(data_dir)
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
# Next: **01_data** looks at the tiles, their classes and patients, and what magnification
# means. Then **02** opens the selective scan.
