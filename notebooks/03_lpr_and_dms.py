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
# **What the paper says, and what is ours.** The SSMamba abstract
# ([Chai et al. 2026](https://arxiv.org/abs/2604.15711)) names the two modules and what they
# are for: DMS for local-global modelling at a modest cost, LPR for fine-grained sensitivity.
# It gives no details of either. Everything built here (which scan orders, which scales, the
# 3x3 convolution inside DMS, LPR as $x + \mathrm{DWConv}(x)$ and its initialisation) is this
# project's own design, taken from VMamba's cross-scan
# ([Liu et al. 2024](https://arxiv.org/abs/2401.10166)), LocalMamba's windowed scans
# ([Huang et al. 2024](https://arxiv.org/abs/2403.09338)) and CMT's local perception unit
# ([Guo et al. 2022](https://arxiv.org/abs/2107.06263)), on top of Mamba's selective scan
# ([Gu & Dao 2023](https://arxiv.org/abs/2312.00752)).
#
# **Why.** A scan is causal: on a row-by-row path, the output at a token depends on the tokens
# visited before it (the rows above, the left part of its row) and on none after it. More
# directions remove that blind side; coarser scales (the map pooled by 2, 4) bring far tokens a
# few steps closer; and a small 2D convolution sees a whole neighbourhood at once, where the
# fine texture of nuclei lives.

# %% [markdown]
# ## Learning objectives
#
# After this notebook you can
#
# 1. turn a 2D feature map into the 1D sequences DMS scans (`scan_order`, and you write it
#    yourself in Exercise 1), and put the results back in image order;
# 2. predict from causality which input positions reach an output of a scan, and check the
#    prediction with the effective receptive field (ERF) of the modules, built with the real
#    settings of the `ssmamba_lite_cpu` preset;
# 3. say what DMS's own 3x3 convolution, more directions and a coarser scale each add;
# 4. explain LPR, why it starts as the identity here, and measure what it does to the
#    residual stream of a network, at the start and after a short training.

# %% [markdown]
# ## Prerequisites
#
# - [02 · the selective scan](02_selective_scan_from_scratch.ipynb): the recurrence
#   $h_t = \bar A_t h_{t-1} + \bar B_t u_t$, $y_t = C_t h_t + D u_t$, and that $y_t$ depends on
#   $u_1 \dots u_t$ only;
# - 2D convolutions, in particular depthwise ones (one $k \times k$ filter per channel,
#   `groups=C`), and residual connections $x + f(x)$;
# - automatic differentiation: the ERF below is a gradient.

# %% [markdown]
# **The measuring tool.** The effective receptive field (Luo et al. 2016) says how much the
# output at one position $p$ depends on each input position $q$,
#
# $$\mathrm{ERF}(q) = \sum_c \left| \frac{\partial \sum_{c'} y_{c'}(p)}{\partial x_c(q)} \right| ,$$
#
# normalised to a maximum of 1 (`analysis.effective_receptive_field`). $\mathrm{ERF}(q) = 0$
# exactly when no path of the computation leads from $q$ to $p$.

# %% tags=["parameters"]
data_dir = "sample:kather2016"
output_dir = "runs/notebooks/03_lpr_and_dms"
image_size = 32           # side of the feature maps whose receptive fields we measure
epochs = 3                # epochs of the short training of section 5
batch_size = 16           # tiles per batch (training, section 4) and random maps per ERF
device = "auto"           # "auto": the GPU if there is one, else the CPU
seed = 0
model = "ssmamba_lite_cpu"  # the preset whose DMS and LPR settings every measurement uses
tile_size = 64            # tiles are resized to this side (a multiple of 32) for the model
lr = 2e-3                 # learning rate of the short training
max_steps_per_epoch = 0   # > 0: cut the short training's epochs short
grid = 8                  # side of the grid the scan orders are drawn on
window = 4                # tile size of the windowed orders 4..7

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ssmamba_lite.course.figures import save_figure
from ssmamba_lite.course.runner import require_data
from ssmamba_lite.engine.device import resolve_device
from ssmamba_lite.presets import PRESETS

data_dir = require_data(data_dir, dataset="kather2016")
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
dev = resolve_device(device)
_ = torch.manual_seed(seed)
if model not in PRESETS:
    raise ValueError(f"model must be an SSMamba preset {sorted(PRESETS)}, got {model!r}")
cfg = PRESETS[model]                                   # the preset's SSMambaConfig
dms_stage = cfg.stage_mixers().index("dms")            # first stage whose mixer is DMS
channels = cfg.dims[dms_stage]                         # its width C
print(f"{model}: DMS in stages {[i for i, m in enumerate(cfg.stage_mixers()) if m == 'dms']}, "
      f"first one {channels} channels wide; directions {cfg.directions}, scales {cfg.scales}, "
      f"d_state {cfg.d_state}, split channels {cfg.split_channels}, expand {cfg.ssm_expand}; "
      f"LPR kernel {cfg.lpr_kernel}, zero init {cfg.lpr_zero_init}")

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
# Checks my_scan_order against the library's dms.scan_order. While my_scan_order runs, the
# library's scan_order and inverse_scan_order raise an error: calling them scores 0.
from ssmamba_lite.course.exercises import assert_equal, forbidden
from ssmamba_lite.dms import inverse_scan_order, scan_order


def check_order(h, w, k, window):
    reference = scan_order(h, w, k, window)
    with forbidden(scan_order, inverse_scan_order, exercise="scan_order"):
        mine = my_scan_order(h, w, k, window)
    assert_equal(mine, reference, f"my_scan_order({h}, {w}, direction={k}, window={window})")


for k in range(8):
    check_order(8, 8, k, 4)
### BEGIN HIDDEN TESTS
for h, w, win in [(3, 5, 2), (5, 7, 3), (6, 4, 4), (1, 9, 4), (7, 1, 2), (10, 6, 5)]:
    for k in range(8):
        check_order(h, w, k, win)
### END HIDDEN TESTS
print("my_scan_order: checks passed")

# %% [markdown]
# ## 2. Scales
#
# At scale $s$ the map is average-pooled by $s$ first: an $8\times 8$ grid becomes $4\times 4$
# at $s=2$, so the scan takes 4x fewer steps and two tokens 8 pixels apart are only 4 steps
# apart. The output is upsampled back and the scales are summed with learned weights
# $w_{s,k} = \mathrm{softmax}(a)_{s,k}$. How the directions combine depends on `split_channels`. With
# split channels (`split_channels=True`, the presets' choice, printed above) direction $k$ scans only
# its own slice $x^{(k)}$ of $D/K$ channels, and the directions' outputs are concatenated
# along the channels:
#
# $$y = \sum_{s} \mathrm{up}_s\!\left(\big\Vert_{k}\; w_{s,k}\,
# \mathrm{order}_k^{-1}\, \mathrm{S6}_k\, \mathrm{order}_k\, \mathrm{pool}_s(x^{(k)})\right)
# \qquad (\Vert = \text{concatenation of the } K \text{ slices back to } D \text{ channels}).$$
#
# Without split channels (`split_channels=False`, VMamba's SS2D) every direction scans all $D$ channels
# and the directions' full maps are summed:
# $y = \sum_{s,k} w_{s,k}\, \mathrm{up}_s(\mathrm{order}_k^{-1}\, \mathrm{S6}_k\,
# \mathrm{order}_k\, \mathrm{pool}_s(x))$, $K$ times the scanning work.
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
# ## 3. What a scan order sees: predictions
#
# Derivation first, measurement after. Take the output token $p = (r, c)$ in the middle of an
# $S \times S$ map (`image_size`), and direction 0 (row-major).
#
# - **The bare scan.** The scan is causal: $y_t$ depends on $u_1 \dots u_t$ (notebook 02). The
#   tokens visited before $p$ are the rows above $r$ and the tokens left of $c$ in row $r$. So
#   the token above and the token to the left reach $p$ (the one above through $S$ steps of
#   decay $\bar A$, the one to the left through one), and the token below and the one to the
#   right do not reach it at all. Area: $(rS + c + 1) / S^2$, about half the map.
# - **DMS, one direction.** DMS does not scan its input as it is: `in_proj`, then a 3x3
#   depthwise convolution (`DirectionalMultiScale.conv`, `d_conv=3`), then the scans. Every
#   scanned token already carries its 3x3 neighbourhood, so the reach widens by one pixel in
#   every direction: the token below $p$ and the one to its right now reach $p$ (through $p$'s
#   own convolution); two rows below cannot (the lowest scanned tokens are in row $r$, whose
#   convolution reaches row $r + 1$ only). Setting `d_conv=1` gives back the bare scan.
# - **Direction 1** (column-major) is the same picture turned: the token to the right is
#   reached only through the convolution, two columns to the right not at all.
# - **The preset's directions** (forward and backward along rows and columns): every token is
#   before $p$ on some path, so the whole map reaches $p$.
# - **Two rows below, at scale 1 already.** On the preset's order 3 (column-major, backward)
#   the token two rows below $p$ comes 2 steps before $p$; yet its ERF is tiny. Each scan's
#   output is $y_t = C_t h_t + D\,u_t$, and at initialisation $\Delta$ is small (0.001 to 0.1),
#   so $\bar B = \Delta B$ is small and the skip $D\,u_t$ (with $D = 1$) dominates: the map is
#   normalised by a maximum that the skip sets, and what the scans carry is small beside it.
# - **Adding scale 2**: the pooled map is scanned too, and its output, skip included, is
#   upsampled back. $p$'s output then reads the mean of its $2 \times 2$ pooled block, which
#   through the 3x3 convolution reaches two rows below $p$ (for $p$ in an even row): we expect
#   "2 below" to count more, through pooling and the skip, not through shorter scan paths.
# - **What the coarse scans themselves add**: a pooled map is half as long a side, so a token
#   8 positions away is about half as many steps away. To see the scans without the skip we
#   set $D = 0$ in every scan: then we expect the share of the ERF that lies 8 or more
#   positions from $p$ to grow when scale 2 is added.
# - **LPR at initialisation**: its filters start at zero, so $\mathrm{LPR}(x) = x$: its ERF is
#   the single pixel $p$, and LPR in front of DMS changes nothing (yet).

# %% [markdown]
# Below, the modules are built with the preset's settings (directions, scales, $d_\text{state}$,
# split channels, expand; printed above) and random weights, fed `batch_size` random feature
# maps with the width of the preset's first DMS stage, and their ERFs at the centre measured.
# (In the model, that stage's maps are small, `tile_size`/16 a side; the ERF is measured on
# larger maps so that the shapes show.)

# %%
from ssmamba_lite.course.analysis import effective_receptive_field, erf_reach
from ssmamba_lite.dms import DirectionalMultiScale, resolve_directions, scan_order
from ssmamba_lite.lpr import LocalPerceptionResidual


def make_dms(directions, scales, d_conv=3, skip=True):
    """A DMS with the preset's settings (and the notebook's `window` for orders 4..7), except
    for directions, scales and d_conv; skip=False sets D = 0 in every scan (the scans alone)."""
    module = DirectionalMultiScale(channels, directions=directions, scales=scales,
                                   d_state=cfg.d_state, expand=cfg.ssm_expand,
                                   split_channels=cfg.split_channels, d_conv=d_conv, window=window)
    if not skip:
        with torch.no_grad():
            for scan in module.scans:
                scan.D.zero_()
    return module


def erf(module):
    torch.manual_seed(seed)                            # the same random maps for every module
    x = torch.randn(max(1, batch_size), channels, image_size, image_size)
    return effective_receptive_field(module.to(dev), x.to(dev)).cpu()


dirs = resolve_directions(cfg.directions)
_ = torch.manual_seed(seed)
one_direction = make_dms((0,), (1,))                   # reused in section 5
modules = {
    "bare scan, dir 0 (d_conv=1)": make_dms((0,), (1,), d_conv=1),
    "DMS, dir 0": one_direction,
    "DMS, dir 1": make_dms((1,), (1,)),
    f"DMS, dirs {dirs}, scale 1": make_dms(dirs, (1,)),
    f"DMS, dirs {dirs}, scales {cfg.scales}": make_dms(dirs, cfg.scales),
    f"D = 0, dirs {dirs}, scale 1": make_dms(dirs, (1,), skip=False),
    f"D = 0, dirs {dirs}, scales {cfg.scales}": make_dms(dirs, cfg.scales, skip=False),
    "LPR at init": LocalPerceptionResidual(channels, cfg.lpr_kernel),
    "LPR at init -> DMS, dir 0": torch.nn.Sequential(
        LocalPerceptionResidual(channels, cfg.lpr_kernel), one_direction),
}
erfs = {name: erf(m) for name, m in modules.items()}

# %% [markdown]
# The maps, on a log scale so that weak but non-zero dependence shows (white: exactly zero,
# no path from that position to the centre):

# %%
from ssmamba_lite.course.figures import maps_figure


def log_maps(maps):
    """log10 of each map; exact zeros (no path) become NaN, drawn blank."""
    return {k: np.where(v.numpy() > 0, np.log10(np.maximum(v.numpy(), 1e-30)), np.nan)
            for k, v in maps.items()}


fig = maps_figure(log_maps(erfs), size=2.3)
fig.suptitle(f"effective receptive field of the centre token (log10; {model} settings, "
             "random weights)", y=1.03)
save_figure(fig, out, "effective_receptive_fields")
plt.show()

# %% [markdown]
# The same maps as numbers: the ERF at the centre's neighbours (0 means: not reached at all)
# and the area, the share of input positions that reach the centre.

# %%
table = pd.DataFrame([{"module": name, **erf_reach(v)} for name, v in erfs.items()])
table.to_csv(out / "erf_table.csv", index=False)
table.set_index("module").round(4)

# %% [markdown]
# Each prediction of the list above, checked on these numbers:

# %%
reach = table.set_index("module").to_dict("index")
c0 = image_size // 2
bare, d0, d1 = (reach[k] for k in ("bare scan, dir 0 (d_conv=1)", "DMS, dir 0", "DMS, dir 1"))
full1, full = reach[f"DMS, dirs {dirs}, scale 1"], reach[f"DMS, dirs {dirs}, scales {cfg.scales}"]
same = (erfs["LPR at init -> DMS, dir 0"] - erfs["DMS, dir 0"]).abs().max().item()
half = (c0 * image_size + c0 + 1) / image_size**2     # (r S + c + 1) / S^2
rows, cols = np.mgrid[0:image_size, 0:image_size]
far = np.maximum(abs(rows - c0), abs(cols - c0)) >= 8   # 8 or more positions from p


def far_share(name):
    """The share of a module's ERF (its sum) at positions 8 or more away from p."""
    e = erfs[name].numpy()
    return float(e[far].sum() / e.sum())


far1, far2 = (far_share(f"D = 0, dirs {dirs}, {k}") for k in ("scale 1", f"scales {cfg.scales}"))
steps = {k: int(scan_order(image_size, image_size, k).tolist().index(c0 * image_size + c0)
                - scan_order(image_size, image_size, k).tolist().index((c0 + 2) * image_size + c0))
         for k in dirs}                               # > 0: two rows below comes that many before p
closest = min((k for k in steps if steps[k] > 0), key=steps.get)   # the order where it is nearest
checks = {
    "bare scan, dir 0: above and left reach p, below and right do not":
        bare["above"] > 0 and bare["left"] > 0 and bare["below"] == 0 == bare["right"],
    f"bare scan, dir 0: area (r S + c + 1) / S^2 = {half:.4f}": abs(bare["area"] - half) < 1e-6,
    "DMS, dir 0 (3x3 conv): below and right reach p, two rows below does not":
        d0["below"] > 0 and d0["right"] > 0 and d0["2 below"] == 0,
    "DMS, dir 1 (3x3 conv): right reaches p, two columns right does not":
        d1["right"] > 0 and d1["2 right"] == 0,
    f"DMS, dirs {dirs}: the whole map reaches p": full1["area"] == 1.0,
    f"two rows below comes {steps[closest]} steps before p on order {closest}, yet its ERF "
    f"is {full1['2 below']:.2g} beside the skip's local maximum":
        steps[closest] <= 2 and full1["2 below"] < 0.01,
    f"adding scale 2: two rows below counts more through the pooled skip "
    f"({full1['2 below']:.2g} -> {full['2 below']:.2g})": full["2 below"] > full1["2 below"],
    f"D = 0, adding scale 2: a larger share of the ERF 8 or more positions away "
    f"({far1:.3f} -> {far2:.3f})": far2 > far1,
    "LPR at init: a single pixel": abs(reach["LPR at init"]["area"] - 1 / image_size**2) < 1e-9,
    f"LPR at init -> DMS, dir 0 has DMS's ERF (max difference {same:.1g})": same == 0,
}
for claim, holds in checks.items():
    print(f"{'holds   ' if holds else 'DOES NOT'}  {claim}")

# %% [markdown]
# ## 4. What LPR adds, and why it starts as the identity
#
# LPR is $\mathrm{LPR}(x) = x + \mathrm{DWConv}_k(x)$, one $k\times k$ filter and one bias per
# channel: $C(k^2+1)$ weights, next to nothing. In the model it sits in front of every block
# (`Block.forward`: `x = self.lpr(x)`, then the token mixer and the MLP, each with its own
# residual). What it is meant to bring, by design:
#
# 1. **Fine cues.** A full 2D neighbourhood, where nuclear texture lives, before the scans mix
#    along lines. Once its filters are non-zero, LPR in front of a one-direction DMS widens the
#    reach by one more pixel (section 5 measures it).
# 2. **Position.** A convolution with zero padding sees the image border, which lets the
#    tokens carry their position into the scans, as a conditional position encoding does
#    ([CPVT, Chu et al. 2023](https://arxiv.org/abs/2102.10882)); the network has no
#    position table and takes any image size.
# 3. **A direct path.** The $x$ term carries the signal through unchanged.
#
# **Initialisation.** Here the filters and biases start at zero (`lpr_zero_init=True`, the
# default of `SSMambaConfig`), so at the start $\mathrm{LPR}(x) = x$ exactly: every block
# begins as [mixer + MLP] on a clean residual stream, and LPR's ERF is one pixel (section 3).
# It still learns: the gradient of a loss $\mathcal{L}$ with respect to a filter tap,
#
# $$\frac{\partial \mathcal{L}}{\partial w_{c,i,j}} = \sum_{q} x_c(q + (i, j))\,
# g_c(q), \qquad g_c(q) = \frac{\partial \mathcal{L}}{\partial \mathrm{LPR}(x)_c(q)},$$
#
# is the correlation of the input with the incoming gradient, which is not zero even when
# $w = 0$. With PyTorch's default initialisation (`lpr_zero_init=False`) the filters start
# random and LPR adds a sizeable random term to every block's input from the first step.
#
# The cell below builds the model twice with the same seed, once per initialisation, feeds
# both the same `batch_size` real tiles (eval mode: no stochastic depth, BatchNorm with its
# initial statistics) and measures per block (`analysis.block_residuals`):
# $\max |\mathrm{LPR}(x) - x|$, $\lVert\mathrm{DWConv}(x)\rVert / \lVert x\rVert$ and the growth
# of the residual stream $\lVert x_\text{out}\rVert / \lVert x_\text{in}\rVert$ of the whole
# block (norms over the batch).

# %%
import timm

from ssmamba_lite.course.analysis import block_residuals
from ssmamba_lite.engine.data import TileDataset, find_labelled
from ssmamba_lite.engine.transforms import eval_transform

samples = find_labelled(data_dir)
pick = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))
tiles_ds = TileDataset(samples.subset(pick[:max(1, batch_size)].tolist()),
                       eval_transform(tile_size))
tiles = torch.stack([tiles_ds[i][0] for i in range(len(tiles_ds))]).to(dev)


def residuals(net):
    return pd.DataFrame(block_residuals(net.to(dev).eval(), tiles)).set_index("block")


at_init = {}
for zero_init in (True, False):
    torch.manual_seed(seed)
    net = timm.create_model(model, num_classes=len(samples.classes), img_size=tile_size,
                            lpr_zero_init=zero_init)
    at_init[zero_init] = residuals(net)
lprs = at_init[True]["lpr_change"]
print(f"{len(tiles)} tiles of {data_dir.name}, {tile_size} px; fresh {model}, zero init: "
      f"max |LPR(x) - x| = {lprs.max():.3g} over its {len(lprs)} LPRs")
pd.concat({"zero init (default)": at_init[True], "PyTorch default init": at_init[False]},
          axis=1).round(3)

# %% [markdown]
# The same per-block ratios as a figure (grey line: a block that leaves the stream's norm
# unchanged):

# %%
blocks = list(at_init[True].index)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
pos = np.arange(len(blocks))
for shift, (zero_init, label) in zip((-0.2, 0.2), ((True, "zero init (default)"),
                                                   (False, "PyTorch default init"))):
    axes[0].bar(pos + shift, at_init[zero_init]["dwconv_ratio"], 0.4, label=label)
    axes[1].bar(pos + shift, at_init[zero_init]["growth"], 0.4, label=label)
axes[0].set_title(r"LPR: $\|\mathrm{DWConv}(x)\| / \|x\|$ at initialisation", fontsize=9)
axes[1].set_title(r"block: $\|x_\mathrm{out}\| / \|x_\mathrm{in}\|$ at initialisation",
                  fontsize=9)
axes[1].axhline(1.0, color="grey", lw=0.8)
for ax in axes:
    ax.set_xticks(pos, [b.replace("stages.", "s").replace(".blocks.", "b") for b in blocks])
    ax.set_xlabel("block (stage, index)")
axes[0].legend(fontsize=8)
fig.tight_layout()
save_figure(fig, out, "lpr_ratios_at_init")
plt.show()

# %% [markdown]
# What these numbers say about the two initialisations, computed from the table:

# %%
ratio = at_init[False]["dwconv_ratio"]
grow = {k: v["growth"] for k, v in at_init.items()}
print(f"zero init: |DWConv(x)|/|x| = {at_init[True]['dwconv_ratio'].max():.3g} in every block, "
      f"so LPR(x) = x exactly (max |LPR(x) - x| = {lprs.max():.3g})")
print(f"PyTorch default init: |DWConv(x)|/|x| from {ratio.min():.2f} to {ratio.max():.2f} "
      f"across the {len(ratio)} blocks")
print(f"block growth |x_out|/|x_in|: zero init {grow[True].min():.2f}-{grow[True].max():.2f}, "
      f"default init {grow[False].min():.2f}-{grow[False].max():.2f}; the default init grows "
      f"the stream more in {int((grow[False] > grow[True]).sum())} of {len(grow[True])} blocks")

# %% [markdown]
# ## 5. LPR after a short training
#
# At initialisation LPR reaches nothing beyond its own pixel, so its reach can only be seen
# once its filters have moved. The cell below trains the preset from scratch (zero-init LPR;
# the engine's `finetune`, `epochs` epochs on `data_dir` at `tile_size`; it prints how long
# that took) and measures the residual stream again on the same tiles.

# %%
import time

from ssmamba_lite.engine.inference import load_trained
from ssmamba_lite.engine.train import FinetuneConfig, finetune

trained_dir = out / "short_training"
t0 = time.perf_counter()
history = finetune(FinetuneConfig(data=str(data_dir), out=str(trained_dir), overwrite=True,
                                  model=model,
                                  image_size=tile_size, epochs=epochs, batch_size=batch_size,
                                  lr=lr, max_steps_per_epoch=max_steps_per_epoch,
                                  device=device, seed=seed, progress=False))
trained, _ = load_trained(trained_dir, device=dev)
after = residuals(trained)
print(f"{history[-1]['step']} training steps in {time.perf_counter() - t0:.1f} s")
print(f"after {history[-1]['step']} training steps: |DWConv(x)|/|x| from "
      f"{after['dwconv_ratio'].min():.3g} to {after['dwconv_ratio'].max():.3g} "
      f"(0 at the start), max |LPR(x) - x| up to {after['lpr_change'].max():.3g}")
pd.DataFrame({"|DWConv(x)|/|x| at init": at_init[True]["dwconv_ratio"],
              "|DWConv(x)|/|x| trained": after["dwconv_ratio"],
              "|x_out|/|x_in| at init": at_init[True]["growth"],
              "|x_out|/|x_in| trained": after["growth"]}).round(4)

# %% [markdown]
# Now the reach. Two ERFs on the random maps of section 3: the trained LPR of the first block
# of the first DMS stage alone, and that trained LPR followed by the one-direction DMS of
# section 3. Prediction: the trained LPR covers its $k \times k$ patch, and in front of the
# one-direction DMS it widens the reach by one more pixel, so two rows below the centre now
# count (the lowest scanned tokens, in the centre's row, now carry rows $r+1$ and $r+2$).

# %%
lpr_name = f"stages.{dms_stage}.blocks.0.lpr"
trained_lpr = trained.get_submodule(lpr_name).cpu()
after_erfs = {"LPR trained": erf(trained_lpr),
              "DMS, dir 0 (from section 3)": erfs["DMS, dir 0"],
              "LPR trained -> DMS, dir 0": erf(torch.nn.Sequential(trained_lpr, one_direction))}
fig = maps_figure(log_maps(after_erfs), size=2.6)
fig.suptitle(f"ERF after {history[-1]['step']} training steps ({lpr_name}; log10)", y=1.03)
save_figure(fig, out, "lpr_erf_after_training")
plt.show()
k = cfg.lpr_kernel
lpr_reach, chain = erf_reach(after_erfs["LPR trained"]), erf_reach(after_erfs[
    "LPR trained -> DMS, dir 0"])
patch = abs(lpr_reach["area"] - k * k / image_size**2) < 1e-9
print(f"{'holds   ' if patch else 'DOES NOT'}  trained LPR covers its {k}x{k} patch "
      f"(area {lpr_reach['area'] * image_size**2:.0f} positions)")
print(f"{'holds   ' if chain['2 below'] > 0 else 'DOES NOT'}  trained LPR -> DMS, dir 0 "
      f"reaches two rows below (ERF {chain['2 below']:.2g}; {d0['2 below']:.2g} without LPR)")

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
# Checks LPRBlock against the library's LocalPerceptionResidual, with the same weights: random
# ones (zero_init=False), since zero filters would make any block that returns x pass. While
# your block is built and run, LocalPerceptionResidual raises an error: using it scores 0.
import torch

from ssmamba_lite.course.exercises import assert_close, forbidden  # noqa: F811
from ssmamba_lite.lpr import LocalPerceptionResidual


def check_lpr(dim, kernel_size, height, width, seed):
    torch.manual_seed(seed)
    reference = LocalPerceptionResidual(dim, kernel_size, zero_init=False)
    x = torch.randn(2, dim, height, width)
    expected = reference(x)
    with forbidden(LocalPerceptionResidual, exercise="lpr_block"):
        mine = LPRBlock(dim, kernel_size)
        mine.load_state_dict(reference.state_dict())    # same names and shapes, or an error
        got = mine(x)
    assert_close(got, expected, f"LPRBlock({dim}, {kernel_size}) on {tuple(x.shape)}",
                 seed=seed)


check_lpr(4, 3, 8, 8, seed=0)
### BEGIN HIDDEN TESTS
for seed, shape in enumerate([(6, 5, 9, 7), (3, 7, 5, 11), (1, 3, 4, 4), (8, 1, 6, 3)], start=1):
    check_lpr(*shape, seed=seed)
### END HIDDEN TESTS
print("LPRBlock: checks passed")

# %% [markdown]
# ## What you learned
#
# - DMS reads a 2D map as 1D sequences along scan orders (permutations of the tokens) and puts
#   each result back with the inverse permutation; coarser scales scan pooled copies of the map
#   and are upsampled back, and learned weights fuse every (scale, direction) pair.
# - A scan is causal, so one direction leaves a blind side. Which positions reach an output
#   follows from the order and from what runs before the scan: DMS's own 3x3 depthwise
#   convolution widens the reach by one pixel (so one row below counts in row-major order, two
#   rows do not), more directions cover the whole map. At initialisation the skip $D\,u$
#   dominates what a scan's output depends on; a coarse scale adds a pooled, upsampled copy
#   (skip included) that reaches a little further at once, and its scans, being half as long,
#   give far tokens a larger share of the ERF once the skip is set aside ($D = 0$). Section 3
#   checked each of these predictions on the ERFs of modules built with the preset's
#   settings.
# - LPR is $x + \mathrm{DWConv}_k(x)$, $C(k^2+1)$ weights per block. Here it starts as the
#   identity (zero filters): its ERF is one pixel and it leaves the residual stream unchanged
#   (section 4 printed $\max|\mathrm{LPR}(x) - x|$ on real tiles), yet its filters get a
#   gradient and grow in training; section 5 measured how far after a few steps, and what the
#   trained LPR adds in front of a one-direction scan. PyTorch's default initialisation would
#   instead add a random local term to every block from the start (section 4's figure).
#
# Notebook 06 removes LPR, DMS's directions and scales, and MAMIM one at a time and measures
# what each costs on real data. Next, [04 · MAMIM pretraining](04_mamim_pretraining.ipynb):
# teaching the network about tissue before it sees a single label. Back to
# [02 · the selective scan](02_selective_scan_from_scratch.ipynb).

# %% [markdown]
# ## Self-check
#
# Questions 1-4 check themselves: set the variable, run the cell and the test cell after it
# (1 point each in the graded version of this notebook). Question 5 has a model answer to
# unfold.

# %% [markdown]
# **Q1** (1 point). A DMS with one direction (row-major), one scale and its 3x3 convolution
# (`d_conv=3`): how many rows below the output token can influence that output? (A whole
# number; 0 if none.)

# %% nbgrader={"grade": false, "grade_id": "q1_rows_below", "locked": false, "schema_version": 3, "solution": true, "task": false}
q1_rows_below = None     # your answer: a whole number
### BEGIN SOLUTION
q1_rows_below = 1
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q1_rows_below_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q1", q1_rows_below, "6b86b273ff34fce1", decimals=0)

# %% [markdown]
# **Q2** (1 point). How many weights (filters and biases) does one LPR with $k = 3$ have in a
# block of width $C = 96$ (the first DMS stage of `ssmamba_lite_cpu`)? Set `q2_lpr_weights`.

# %% nbgrader={"grade": false, "grade_id": "q2_lpr_weights", "locked": false, "schema_version": 3, "solution": true, "task": false}
q2_lpr_weights = None    # your answer: a whole number
### BEGIN SOLUTION
q2_lpr_weights = 960
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q2_lpr_weights_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q2", q2_lpr_weights, "7f5642cd0c851c48", decimals=0)

# %% [markdown]
# **Q3** (1 point). Right after `timm.create_model("ssmamba_lite_cpu")`, what does every LPR of
# the model compute? Set `q3_lpr_at_init` to `"a"`, `"b"`, `"c"` or `"d"`.
#
# - (a) $0$
# - (b) $x$
# - (c) $\mathrm{DWConv}(x)$ with random filters
# - (d) $x + \mathrm{DWConv}(x)$ with random filters

# %% nbgrader={"grade": false, "grade_id": "q3_lpr_at_init", "locked": false, "schema_version": 3, "solution": true, "task": false}
q3_lpr_at_init = None    # your answer: "a", "b", "c" or "d"
### BEGIN SOLUTION
q3_lpr_at_init = "b"
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q3_lpr_at_init_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q3", q3_lpr_at_init, "3e23e8160039594a")

# %% [markdown]
# **Q4** (1 point). A DMS of width $D = 96$ with split channels and 4 directions: how many
# channels does each direction scan? Set `q4_channels_per_direction`.

# %% nbgrader={"grade": false, "grade_id": "q4_channels_per_direction", "locked": false, "schema_version": 3, "solution": true, "task": false}
q4_channels_per_direction = None     # your answer: a whole number
### BEGIN SOLUTION
q4_channels_per_direction = 24
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q4_channels_per_direction_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q4", q4_channels_per_direction, "c2356069e9d1e79c", decimals=0)

# %% [markdown]
# **Q5** (not graded). Section 3 found that a one-direction (row-major) DMS is reached by the
# token just below its output, although a causal row-major scan never looks ahead. Where does
# that influence come from, and how do you build a DMS whose row-major scan sees nothing below?
#
# <details><summary>Answer</summary>
#
# From DMS's own 3x3 depthwise convolution, which runs before the scans: the output token
# itself and the tokens left of it in its row are scanned *after* the convolution mixed in
# their 3x3 neighbourhoods, which include the row below. The scan adds nothing below. With
# `DirectionalMultiScale(..., d_conv=1)` the convolution is 1x1 (no spatial mixing), and the
# ERF table's row "bare scan, dir 0 (d_conv=1)" shows no reach below or to the right. (A
# trained LPR in front adds one more row, section 5.)
#
# </details>

# %% [markdown]
# ## Exercises
#
# Open exercises to try; change a parameter in the parameters cell (or the cell named) and
# run the notebook again.
#
# 1. **Longer paths.** Set `image_size = 64`. How does the bare scan's ERF at the token above
#    (now 64 steps back) compare with `image_size = 32`? Explain with the decay
#    $\bar A = e^{\Delta A}$ of notebook 02.
# 2. **Windowed orders.** In section 3, add `make_dms((4,), (1,))` (windowed row-major) to
#    `modules`, and try `window = 2` and `window = 8`. Which neighbours reach the centre now,
#    and why does the answer depend on where the centre sits in its window?
# 3. **Longer training.** Set `epochs = 10` (and `max_steps_per_epoch = 0`). How large does
#    $\lVert\mathrm{DWConv}(x)\rVert / \lVert x\rVert$ grow, and is it the same in every
#    block?
# 4. **The other initialisation.** Pass `lpr_zero_init=False` to the training of section 5
#    (`FinetuneConfig(..., model_args={"lpr_zero_init": False})`) and compare the trained
#    ratios with those of the zero-initialised run.
# 5. **Another tissue.** Set `data_dir = "sample:nct-crc-he"` and compare section 4's numbers
#    on those tiles.
