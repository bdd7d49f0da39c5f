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
# # 03 · Reading an image with scans (DMS) and a local residual (LPR)
#
# **What.** A selective scan (notebook 02) reads a 1D sequence. To read an image of
# $H \times W$ tokens, we must choose a path through it. SSMamba's **Directional Multi-scale**
# module (DMS) scans the same feature map along several paths and at several scales, each
# with its own scan parameters, and fuses the results. Its **Local Perception Residual** (LPR)
# adds a small depthwise convolution in front of every block.
#
# **Why.** On a row-by-row path the pixel right *above* a token was read $W$ steps earlier
# (seen, through $W$ steps of decay) and the one *below* is never seen (it comes later). More directions fix "never seen"; coarser scales
# (the map pooled by 2, 4) make far-away tokens a few steps away. And a scan, however many
# directions, mixes tokens along lines; the fine texture of nuclei lives in small 2D
# neighbourhoods, which a 3x3 convolution sees at once.
#
# We measure this with the **effective receptive field** (ERF): how much the output at one
# position $p$ depends on each input position $q$,
#
# $$\mathrm{ERF}(q) = \sum_c \left| \frac{\partial \sum_{c'} y_{c'}(p)}{\partial x_c(q)} \right| .$$

# %% tags=["parameters"]
data_dir = "sample:kather2016"
output_dir = "runs/notebooks/03_lpr_and_dms"
image_size = 32           # side of the feature map whose receptive fields we measure
epochs = 1                # not used here
batch_size = 1            # random feature maps averaged per receptive field
device = "auto"           # "auto": the GPU if there is one, else the CPU
seed = 0
grid = 8                  # side of the grid the scan orders are drawn on
window = 4                # tile size of the windowed orders 4..7
channels = 16             # channels C of the modules we measure

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ssmamba_lite.course.figures import save_figure
from ssmamba_lite.course.runner import require_data
from ssmamba_lite.engine.device import resolve_device

data_dir = require_data(data_dir, dataset="kather2016")
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
dev = resolve_device(device)
_ = torch.manual_seed(seed)

# %% [markdown]
# ## 1. Scan orders
#
# `dms.scan_order(h, w, k)` lists the token indices (row-major numbering $r\,w + c$) in the
# order direction $k$ visits them: 0 row by row, 1 column by column, 2 and 3 the same
# backwards, 4 and 5 row/column order inside $4\times 4$ windows (LocalMamba), 6 and 7 those
# backwards. The red dot is the first step; colour goes from dark (early) to yellow (late).

# %%
from ssmamba_lite.course.figures import scan_orders_figure

fig = scan_orders_figure(grid, grid, range(8), window=window)
save_figure(fig, out, "scan_orders")
plt.show()

# %% [markdown]
# Every order is a permutation: DMS gathers the tokens in that order, scans, and puts the
# results back with the inverse permutation.

# %%
from ssmamba_lite.dms import inverse_scan_order, scan_order

tokens = torch.arange(grid * grid)
for k in range(8):
    order, inv = scan_order(grid, grid, k, window), inverse_scan_order(grid, grid, k, window)
    assert torch.equal(tokens[order][inv], tokens)
print("x[order][inverse] == x for all 8 orders")

# %% [markdown]
# ### Exercise 1 (2 points): scan orders
#
# Write `my_scan_order(h, w, direction, window)`: the token indices (row-major numbering
# $r\,w + c$) in the order direction `direction` visits them, as a `LongTensor` of length
# $h w$. Directions 0-3 as above. Direction 4 visits the `window` x `window` tiles row by row
# and, inside each tile, its tokens row by row; direction 5 visits the tiles column by column
# and their tokens column by column; 6 and 7 reverse 4 and 5. Tiles at the right and bottom
# border are cut short when `window` does not divide $h$ or $w$. Loops are fine.

# %% nbgrader={"grade": false, "grade_id": "scan_order", "locked": false, "schema_version": 3, "solution": true, "task": false}
import torch


def my_scan_order(h, w, direction, window=4):
    """LongTensor (h * w,): index r * w + c of the token visited at each step."""
    ### BEGIN SOLUTION
    base = {2: 0, 3: 1, 6: 4, 7: 5}.get(direction, direction)
    if base == 0:
        order = [r * w + c for r in range(h) for c in range(w)]
    elif base == 1:
        order = [r * w + c for c in range(w) for r in range(h)]
    elif base == 4:
        order = [r * w + c for r0 in range(0, h, window) for c0 in range(0, w, window)
                 for r in range(r0, min(r0 + window, h)) for c in range(c0, min(c0 + window, w))]
    else:
        order = [r * w + c for c0 in range(0, w, window) for r0 in range(0, h, window)
                 for c in range(c0, min(c0 + window, w)) for r in range(r0, min(r0 + window, h))]
    order = torch.tensor(order, dtype=torch.long)
    return order.flip(0) if base != direction else order
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "scan_order_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Checks my_scan_order against the library's dms.scan_order.
from ssmamba_lite.course.exercises import assert_equal
from ssmamba_lite.dms import scan_order

for k in range(8):
    assert_equal(my_scan_order(8, 8, k, 4), scan_order(8, 8, k, 4),
                 f"my_scan_order(8, 8, direction={k}, window=4)")
### BEGIN HIDDEN TESTS
for h, w, win in [(3, 5, 2), (5, 7, 3), (6, 4, 4), (1, 9, 4), (7, 1, 2), (10, 6, 5)]:
    for k in range(8):
        assert_equal(my_scan_order(h, w, k, win), scan_order(h, w, k, win),
                     f"my_scan_order({h}, {w}, direction={k}, window={win})")
### END HIDDEN TESTS
print("my_scan_order: checks passed")

# %% [markdown]
# ## 2. Scales
#
# At scale $s$ the map is average-pooled by $s$ first: an $8\times 8$ grid becomes $4\times 4$
# at $s=2$, so the scan takes 4x fewer steps and two tokens 8 pixels apart are only 4 steps
# apart. The output is upsampled back and the scales are summed with learned weights
# $w_{s,k} = \mathrm{softmax}(a)_{s,k}$:
#
# $$y = \sum_{s,k} w_{s,k}\; \mathrm{up}_s\!\left(\mathrm{order}_k^{-1}\, \mathrm{S6}_k\,
# \mathrm{order}_k\, \mathrm{pool}_s(x)\right).$$
#
# Pick a direction and a scale: in JupyterLab, moving a control draws the path below it.

# %%
import ipywidgets as widgets

from ssmamba_lite.course.figures import draw_scan_order, explorer


def show_order(direction=0, scale=1):
    side = max(1, grid // scale)
    fig, ax = plt.subplots(figsize=(3, 3))
    draw_scan_order(ax, side, side, direction, window=min(window, side))
    ax.set_title(f"direction {direction}, scale {scale}: {side}x{side} tokens", fontsize=9)
    plt.show()


_ = explorer(show_order, direction=widgets.IntSlider(value=0, min=0, max=7,
                                                     description="direction"),
             scale=widgets.Dropdown(options=[1, 2, 4], value=1, description="scale"))

# %% [markdown]
# The same choices as a static figure (saved as a PNG):

# %%
scales = [1, 2, 4]
fig, axes = plt.subplots(len(scales), 4, figsize=(8, 2 * len(scales)))
for i, s in enumerate(scales):
    side = max(1, grid // s)
    for j, k in enumerate([0, 1, 2, 4]):
        draw_scan_order(axes[i, j], side, side, k, window=min(window, side))
        axes[i, j].set_title(f"direction {k}, scale {s}", fontsize=8)
fig.tight_layout()
save_figure(fig, out, "scan_orders_by_scale")
plt.show()

# %% [markdown]
# ## 3. Effective receptive fields
#
# We build the modules with random weights (as at the start of training), feed them random
# feature maps of size `image_size` and measure the ERF at the centre token
# (`analysis.effective_receptive_field`). A log colour scale shows weak but non-zero
# dependence.
#
# - **LPR** alone: $x + \mathrm{DWConv}_{3\times 3}(x)$ — a 3x3 patch.
# - **DMS, 1 direction, 1 scale**: row-major only. Everything *before* the centre on the path
#   (the rows above, the left part of its row), widened by one pixel in every direction by the
#   3x3 convolution DMS runs before its scans: so the row just *below* the centre counts too,
#   through that convolution, but nothing two rows below.
# - **DMS, 4 directions**: forwards and backwards along rows and columns. Every token can now
#   reach the centre, but the strongest paths are the centre's own row and column: the state
#   decays a little at every step, and a token one row away is $W$ steps away on a row path.
# - **DMS, 4 directions, scales 1 and 2**: adds a coarse path (2x2 blocks) that reaches
#   further in fewer steps.
# - **LPR then DMS (1 direction)**: LPR's 3x3 patch comes first and widens the reach by one
#   more pixel: two rows below the centre now count.
#
# The table after the figure measures each of these statements, and the cell after it says
# which hold in this run.

# %%
from ssmamba_lite.course.analysis import effective_receptive_field
from ssmamba_lite.dms import DirectionalMultiScale
from ssmamba_lite.lpr import LocalPerceptionResidual


def erf(module):
    torch.manual_seed(seed)
    module = module.to(dev)
    x = torch.randn(max(1, batch_size), channels, image_size, image_size, device=dev)
    return effective_receptive_field(module, x).cpu()


_ = torch.manual_seed(seed)
modules = {
    "LPR (3x3)": LocalPerceptionResidual(channels),
    "DMS 1 dir, 1 scale": DirectionalMultiScale(channels, directions=1, scales=(1,)),
    "DMS 4 dirs, 1 scale": DirectionalMultiScale(channels, directions=4, scales=(1,)),
    "DMS 4 dirs, scales 1+2": DirectionalMultiScale(channels, directions=4, scales=(1, 2)),
    "LPR -> DMS 1 dir": torch.nn.Sequential(LocalPerceptionResidual(channels),
                                            DirectionalMultiScale(channels, directions=1,
                                                                  scales=(1,))),
}
erfs = {name: erf(m) for name, m in modules.items()}

# %%
from ssmamba_lite.course.figures import maps_figure

fig = maps_figure({k: np.log10(v.numpy() + 1e-6) for k, v in erfs.items()}, size=2.6)
fig.suptitle("effective receptive field of the centre token (log10, random weights)", y=1.03)
save_figure(fig, out, "effective_receptive_fields")
plt.show()

# %% [markdown]
# Numbers for the same pictures: the share of the input positions with a visible influence
# (ERF above 0.1% of its maximum), and how much the tokens one and two rows below the centre
# matter (relative to the ERF's maximum).

# %%
import pandas as pd

c = image_size // 2
table = pd.DataFrame([{"module": k, "area above 0.1% of max": float((v > 1e-3).float().mean()),
                       "ERF 1 row below": float(v[c + 1, c]),
                       "ERF 2 rows below": float(v[min(c + 2, image_size - 1), c])}
                      for k, v in erfs.items()])
table.to_csv(out / "erf_table.csv", index=False)
table.round(4)

# %%
# The statements of the list above, checked on these numbers ("visible": above 0.1% of max).
for k in table.itertuples():
    reach = [f"{r} below" for r, v in (("1 row", k[3]), ("2 rows", k[4])) if v > 1e-3]
    print(f"{k.module:24s} sees {', '.join(reach) if reach else 'nothing below'}")

# %% [markdown]
# ## 4. What LPR adds
#
# LPR is $\mathrm{LPR}(x) = x + \mathrm{DWConv}_k(x)$, one $k\times k$ filter per channel:
# $C(k^2+1)$ weights, nearly free. Three things follow:
#
# 1. **Fine cues.** Each block first looks at a full 2D neighbourhood, where nuclear texture
#    lives, before the scans mix along lines (compare the last two ERFs above).
# 2. **Position.** A convolution with zero padding knows where the image border is, so the
#    tokens carry their position into the scans; the network needs no position table and
#    takes any image size.
# 3. **A direct path.** As a residual, the signal always reaches the next stage unchanged
#    through the $x$ term. It does *not* start close to the identity with PyTorch's default
#    initialisation: the cell below measures $\lVert\mathrm{DWConv}(x)\rVert / \lVert x
#    \rVert$ at initialisation (zero-initialising the filter, or a small layer scale, would
#    make it start as the identity).

# %%
lpr = LocalPerceptionResidual(channels).to(dev)
x = torch.randn(max(1, batch_size), channels, image_size, image_size, device=dev)
with torch.no_grad():
    ratio = (lpr.dwconv(x).norm() / x.norm()).item()
print(f"at initialisation, |DWConv(x)| / |x| = {ratio:.2f}: LPR(x) = x + DWConv(x) is "
      + ("close to" if ratio < 0.1 else "far from") + " the identity")

# %% [markdown]
# ### Exercise 2 (2 points): the LPR block
#
# Write the block $\mathrm{LPR}(x) = x + \mathrm{DWConv}_k(x)$ as a module: a depthwise
# $k \times k$ convolution (one filter and one bias per channel, "same" padding so that $H$
# and $W$ are kept) named `self.dwconv`, so that the library's weights load into your block.

# %% nbgrader={"grade": false, "grade_id": "lpr_block", "locked": false, "schema_version": 3, "solution": true, "task": false}
import torch
from torch import nn


class LPRBlock(nn.Module):
    """x + DWConv_k(x) on a (batch, C, H, W) map; the output has the input's shape."""

    def __init__(self, dim, kernel_size=3):
        super().__init__()
        ### BEGIN SOLUTION
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        return x + self.dwconv(x)
        ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "lpr_block_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Checks LPRBlock against the library's LocalPerceptionResidual, with the same weights.
import torch

from ssmamba_lite.course.exercises import assert_close
from ssmamba_lite.lpr import LocalPerceptionResidual


def check_lpr(dim, kernel_size, height, width, seed):
    torch.manual_seed(seed)
    reference, mine = LocalPerceptionResidual(dim, kernel_size), LPRBlock(dim, kernel_size)
    mine.load_state_dict(reference.state_dict())        # same names and shapes, or an error
    x = torch.randn(2, dim, height, width)
    assert_close(mine(x), reference(x), f"LPRBlock({dim}, {kernel_size}) on {tuple(x.shape)}",
                 seed=seed)


check_lpr(4, 3, 8, 8, seed=0)
### BEGIN HIDDEN TESTS
for seed, shape in enumerate([(6, 5, 9, 7), (3, 7, 5, 11), (1, 3, 4, 4), (8, 1, 6, 3)], start=1):
    check_lpr(*shape, seed=seed)
### END HIDDEN TESTS
print("LPRBlock: checks passed")

# %% [markdown]
# Notebook 06 removes LPR (and DMS, and MAMIM) and measures what each costs on real data.
# Next, **04**: teaching the network about tissue before it sees a single label.
