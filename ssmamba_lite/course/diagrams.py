"""Drawn figures of the notebooks: the Mamba block as a diagram (notebook 02) and an attention
heatmap over a slide beside its rank-coloured twin (notebook 09).

As in figures.py, every function returns a matplotlib Figure (nothing is shown or saved
behind your back; `figures.save_figure` writes one) and imports matplotlib inside itself.
The heatmap's inputs are plain arrays: the overlays are drawn by `wsi.heatmap` in the
notebook, since course/ and wsi/ are rooms of one layer and do not import each other.
"""

from __future__ import annotations

import numpy as np

BOX_W, BOX_H = 2.7, 0.56                       # a box of the block diagram: width, height


def _box(ax, xy, text, color):
    """A rounded box of BOX_W x BOX_H centred on `xy`, its text inside."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((xy[0] - BOX_W / 2, xy[1] - BOX_H / 2), BOX_W, BOX_H,
                                boxstyle="round,pad=0.02", fc=color, ec="k", lw=0.8))
    ax.text(*xy, text, ha="center", va="center", fontsize=8)


def _arrow(ax, *points, text=""):
    """A polyline through `points`, with an arrow head on its last segment."""
    xs, ys = zip(*points)
    if len(points) > 2:                           # the segments before the arrow's own
        ax.plot(xs[:-1], ys[:-1], "k", lw=1)
    ax.annotate("", points[-1], points[-2], arrowprops=dict(arrowstyle="->", lw=1))
    if text:
        (x0, y0), (x1, y1) = points[-2], points[-1]
        ax.text((x0 + x1) / 2 + 0.08, (y0 + y1) / 2, text, fontsize=7, color="dimgray",
                va="center")


def mamba_block_figure():
    """One Mamba block (Mamba's Figure 3, as in mamba.py) as boxes and arrows: in_proj splits
    the tokens into x' and the gate z; x' runs through the causal depthwise conv, SiLU and
    x_proj (δ, B, C), Δ = softplus(dt_proj(δ)), the selective scan, the skip D x'; the
    gate SiLU(z) multiplies, out_proj maps back to d_model."""
    import matplotlib.pyplot as plt

    col, right, left = 1.2, 4.6, -1.9              # x of the main column, gate branch, Δ branch
    P = {"x": (2.9, 9.0), "in": (2.9, 8.0), "conv": (col, 7.0), "silu": (col, 6.0),
         "xproj": (col, 5.0), "dt": (left, 4.0), "scan": (col, 3.0), "skip": (col, 2.0),
         "z": (right, 6.0), "gate": (2.9, 1.0), "out": (2.9, 0.0)}
    labels = {"x": ("tokens x  (b, L, d_model)", "white"), "in": ("in_proj (linear)", "#cfe2f3"),
              "conv": ("causal depthwise conv1d", "#d9ead3"), "silu": ("SiLU", "#d9ead3"),
              "xproj": ("x_proj (linear)", "#fff2cc"),
              "dt": ("dt_proj + softplus → Δ", "#fff2cc"),
              "scan": ("selective scan S6\nh ← Ā h + ΔB x',  y = ⟨C, h⟩", "#f4cccc"),
              "skip": ("y + D · x'  (skip)", "#f4cccc"), "z": ("SiLU(z)", "#ead1dc"),
              "gate": ("× gate", "#ead1dc"),
              "out": ("out_proj (linear) → (b, L, d_model)", "#cfe2f3")}
    fig, ax = plt.subplots(figsize=(7.5, 7.5))
    for key, (text, color) in labels.items():
        _box(ax, P[key], text, color)
    top, bottom = BOX_H / 2, -BOX_H / 2
    _arrow(ax, (2.9, 9.0 + bottom), (2.9, 8.0 + top))
    _arrow(ax, (2.4, 8.0 + bottom), (col, 7.0 + top), text="x'")
    _arrow(ax, (3.4, 8.0 + bottom), (right, 6.0 + top), text="z")
    _arrow(ax, (col, 7.0 + bottom), (col, 6.0 + top))
    _arrow(ax, (col, 6.0 + bottom), (col, 5.0 + top))
    _arrow(ax, (col - 0.6, 5.0 + bottom), (left, 4.0 + top), text="δ (rank R)")
    _arrow(ax, (col, 5.0 + bottom), (col, 3.0 + top), text="B, C")
    _arrow(ax, (left, 4.0 + bottom), (col - BOX_W / 2, 3.0), text="Δ")
    edge = col + BOX_W / 2
    _arrow(ax, (edge, 6.0), (edge + 0.35, 6.0), (edge + 0.35, 3.0), (edge, 3.0))
    ax.text(edge + 0.43, 4.5, "x'", fontsize=7, color="dimgray", va="center")
    _arrow(ax, (edge + 0.35, 3.0), (edge + 0.35, 2.0), (edge, 2.0))
    _arrow(ax, (col, 3.0 + bottom), (col, 2.0 + top), text="y")
    _arrow(ax, (col + 0.6, 2.0 + bottom), (2.4, 1.0 + top))
    _arrow(ax, (right, 6.0 + bottom), (3.4, 1.0 + top))
    _arrow(ax, (2.9, 1.0 + bottom), (2.9, 0.0 + top))
    ax.text(left - BOX_W / 2, 2.6, "A = −exp(A_log): learned,\nper channel and state",
            fontsize=7, va="center")
    ax.set_xlim(left - BOX_W / 2 - 0.2, right + BOX_W / 2 + 0.2)
    ax.set_ylim(-0.5, 9.5)
    ax.axis("off")
    ax.set_title("one Mamba block (as in mamba.py)")
    return fig


def attention_heatmap_figure(by_value, by_rank, weights, ramp, p_positive: float):
    """A slide's attention heatmap twice, side by side: coloured by value (0 to the largest
    weight, the uniform level 1/n marked on its colour bar) and by rank (0 lowest, 1 highest),
    which exaggerates small differences.

    by_value, by_rank   the two overlays, (h, w, 3) images (`wsi.heatmap.heatmap_overlay`
                        with colour_by="value" and "rank")
    weights             the n attention weights of the slide's tiles, (n,)
    ramp                the overlays' colour ramp, (k, 3) RGB in [0, 1], low to high
    p_positive          the aggregator's probability of the positive class, for the title
    """
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    weights = np.asarray(weights, dtype=float).ravel()
    cmap, n = ListedColormap(np.asarray(ramp)), len(weights)
    fig, axes = plt.subplots(1, 2, figsize=(10, 6.5))
    for ax, image, colour_by in zip(axes, (by_value, by_rank), ("value", "rank")):
        ax.imshow(image)
        ax.axis("off")
        if colour_by == "value":
            bar = fig.colorbar(ScalarMappable(Normalize(0, weights.max()), cmap), ax=ax,
                               fraction=0.046, label="attention weight")
            bar.ax.axhline(1 / n, color="black", lw=2)
            bar.ax.text(1.6, 1 / n, " 1/n", transform=bar.ax.get_yaxis_transform(),
                        va="center", fontsize=8)
            ax.set_title(f"by value (0 to max); p(positive) = {p_positive:.2f}, not a "
                         f"diagnosis", fontsize=9)
        else:
            fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=ax, fraction=0.046,
                         label="rank of the weight (0 lowest, 1 highest)")
            ax.set_title("by rank: exaggerates small differences", fontsize=9)
    return fig
