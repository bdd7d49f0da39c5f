"""Figures of the course: tiles, scan orders, training curves, confusion matrices, ROC curves
(binary, or per-class one-vs-rest with their macro average: the AUROC of the metrics tables),
MAMIM reconstructions.

Every function returns a matplotlib Figure (nothing is shown or saved behind your back);
`save_figure` writes it as a PNG, so an executed run can be browsed without Jupyter.
matplotlib is imported inside the functions: the library itself does not need it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ssmamba_lite.dms import scan_order
from ssmamba_lite.engine.data import load_image
from ssmamba_lite.engine.metrics import auroc, one_vs_rest_auroc


def save_figure(fig, output_dir, name: str, dpi: int = 120) -> Path:
    """Write `fig` to <output_dir>/<name>.png (folders created) and return the path."""
    path = Path(output_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def to_image(t: torch.Tensor, mean=0.5, std=0.5) -> np.ndarray:
    """A tile for imshow: uint8 (3, H, W) as is, a normalised float tensor un-normalised."""
    if t.dtype == torch.uint8:
        return t.permute(1, 2, 0).numpy()
    return (t.detach().float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def tiles_by_class_figure(samples, per_class: int = 6, seed: int = 0, size: float = 1.3):
    """One row per class, `per_class` random tiles of it (the class name and count on the left)."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    labels = np.asarray(samples.labels)
    classes = samples.classes
    fig, axes = plt.subplots(len(classes), per_class, squeeze=False,
                             figsize=(size * per_class, size * len(classes)))
    for k, name in enumerate(classes):
        idx = np.flatnonzero(labels == k)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j, ax in enumerate(axes[k]):
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(pick):
                ax.imshow(to_image(load_image(samples.paths[pick[j]])))
            else:
                ax.axis("off")
        axes[k, 0].set_ylabel(f"{name}\n(n={len(idx)})", rotation=0, ha="right", va="center",
                              fontsize=8)
    fig.tight_layout()
    return fig


def image_row(images, titles, size: float = 2.2):
    """Tiles side by side with a title each (uint8 or normalised tensors, or HxWx3 arrays)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size + 0.4),
                             squeeze=False)
    for ax, img, title in zip(axes[0], images, titles):
        ax.imshow(to_image(img) if torch.is_tensor(img) else img)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def draw_scan_order(ax, h: int, w: int, direction: int, window: int = 4, numbers: bool = True):
    """Draw the path of `dms.scan_order(h, w, direction)` on an h x w grid: a line through
    the token centres, coloured from the first step (dark) to the last (yellow)."""
    import matplotlib

    order = scan_order(h, w, direction, window).numpy()
    rows, cols = order // w, order % w
    steps = np.empty(h * w, dtype=int)
    steps[order] = np.arange(h * w)
    ax.imshow(steps.reshape(h, w), cmap="viridis", alpha=0.35)
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 1, max(1, h * w - 1)))
    for i in range(h * w - 1):
        ax.annotate("", xy=(cols[i + 1], rows[i + 1]), xytext=(cols[i], rows[i]),
                    arrowprops=dict(arrowstyle="->", color=colours[i], lw=1.2))
    if numbers and h * w <= 64:
        for r in range(h):
            for c in range(w):
                ax.text(c, r, str(steps[r * w + c]), ha="center", va="center", fontsize=6)
    ax.plot(cols[0], rows[0], "o", color="red", ms=5)                 # where the scan starts
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_xlim(-0.5, w - 0.5), ax.set_ylim(h - 0.5, -0.5)
    return ax


def scan_orders_figure(h: int, w: int, directions=range(8), window: int = 4, size: float = 2.2,
                       ncols: int = 4):
    """All scan orders of DMS on one h x w grid, one panel each, `ncols` panels per row."""
    import matplotlib.pyplot as plt

    directions = list(directions)
    nrows = -(-len(directions) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.3) * nrows),
                             squeeze=False)
    for ax in axes.flat[len(directions):]:
        ax.axis("off")
    for ax, k in zip(axes.flat, directions):
        draw_scan_order(ax, h, w, k, window)
        ax.set_title(f"direction {k}", fontsize=9)
    fig.tight_layout()
    return fig


def maps_figure(maps: dict, size: float = 2.4, cmap: str = "magma"):
    """2D maps (e.g. effective receptive fields) side by side, titled by their keys."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(size * len(maps), size + 0.4), squeeze=False)
    for ax, (title, m) in zip(axes[0], maps.items()):
        ax.imshow(torch.as_tensor(m).detach().cpu().numpy(), cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


def history_figure(histories: dict, metrics=("loss",)):
    """Training curves: one panel per metric ("loss", or a validation metric such as
    "accuracy" read from each epoch's "val" dict), one line per run in `histories`."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, hist in histories.items():
            xs = [r["epoch"] for r in hist]
            ys = [r[metric] if metric in r else r.get("val", {}).get(metric, np.nan) for r in hist]
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric if metric == "loss" else f"validation {metric}")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def smoothed(values, weight: float = 0.6) -> np.ndarray:
    """TensorBoard's smoothing slider: s_t = w·s_(t-1) + (1 - w)·v_t from s_0 = 0, divided by
    1 - w^t so that the first points are not pulled towards 0 (a debiased moving average)."""
    out, s = [], 0.0
    for t, v in enumerate(values, start=1):
        s = weight * s + (1 - weight) * v
        out.append(s / (1 - weight ** t))
    return np.asarray(out)


def tensorboard_figure(runs: dict, tags=("train/loss", "val/auroc"), smoothing: float = 0.6):
    """What TensorBoard's Scalars tab draws for `runs` ({name: run folder}): one panel per tag,
    steps on the x axis; a per-step tag (train/...) as faint raw points under its smoothed
    curve, a per-epoch tag as measured (smoothing a handful of points would draw values no
    epoch had, lagging behind the last one)."""
    import matplotlib.pyplot as plt

    from ssmamba_lite.engine.tracking import read_scalars

    fig, axes = plt.subplots(1, len(tags), figsize=(4.2 * len(tags), 3.2), squeeze=False)
    for (name, folder), colour in zip(runs.items(), plt.rcParams["axes.prop_cycle"].by_key()
                                      ["color"]):
        scalars = read_scalars(folder)
        for ax, tag in zip(axes[0], tags):
            if tag not in scalars:
                continue
            steps, values = zip(*scalars[tag])
            dots = "o" if len(steps) < 30 else None          # few points: show each one
            if not tag.startswith("train/"):                  # once per epoch: as measured
                ax.plot(steps, values, color=colour, label=name, marker=dots, ms=3)
                continue
            ax.plot(steps, values, color=colour, alpha=0.3, lw=1, marker=dots, ms=3)
            ax.plot(steps, smoothed(values, smoothing), color=colour, label=name)
    for ax, tag in zip(axes[0], tags):
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(matrices: dict, classes, size: float = 3.4):
    """Confusion matrices (rows: true class, columns: predicted), one panel per entry."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(matrices), figsize=(size * len(matrices), size),
                             squeeze=False)
    for ax, (title, cm) in zip(axes[0], matrices.items()):
        cm = np.asarray(cm)
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > cm.max() / 2 else "black", fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _tpr_both_sides(fpr, tpr, grid):
    """TPR of a ROC curve (fpr, tpr: roc_curve's points, fpr non-decreasing) just before and
    just after each fpr of `grid` (they differ where the curve rises vertically)."""
    before, after = np.empty(len(grid)), np.empty(len(grid))
    for i, x in enumerate(grid):
        lo, hi = np.searchsorted(fpr, x, "left"), np.searchsorted(fpr, x, "right")
        if lo < hi:                                     # x is a vertex: bottom and top of its rise
            before[i], after[i] = tpr[lo], tpr[hi - 1]
        else:                                           # on a segment: the same value both sides
            before[i] = after[i] = np.interp(x, fpr, tpr)
    return before, after


def macro_roc_curve(y_true, probs):
    """The macro-averaged one-vs-rest ROC curve: at every false positive rate, the mean over the
    classes present of their one-vs-rest true positive rates. Returns (fpr, tpr) whose area
    (trapezoids) equals `engine.metrics.auroc`, the mean of the per-class AUROCs: the grid holds
    every vertex of every class's curve, so the mean of the curves is exact between vertices."""
    from sklearn.metrics import roc_curve

    y_true, probs = np.asarray(y_true), np.asarray(probs)
    curves = [roc_curve(y_true == k, probs[:, k]) for k in np.unique(y_true)]
    grid = np.unique(np.concatenate([fpr for fpr, _, _ in curves]))
    sides = np.mean([_tpr_both_sides(fpr, tpr, grid) for fpr, tpr, _ in curves], axis=0)
    return np.repeat(grid, 2), sides.T.ravel()              # (x, before), (x, after), ...


def roc_figure(y_true, probabilities: dict, classes):
    """ROC curves of models on the same labels; the AUROC in each legend entry is
    `engine.metrics.auroc`, the number of the metrics tables.

    Binary: one panel, one curve per model (class 1 against class 0). More classes: one panel
    per model, with the one-vs-rest curve of every class present (thin) and their macro
    average (thick), the mean of the per-class curves, whose AUROC is the mean of theirs."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    y_true = np.asarray(y_true)
    binary = len(classes) == 2
    panels = 1 if binary else len(probabilities)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4), squeeze=False)
    for i, (name, probs) in enumerate(probabilities.items()):
        probs = np.asarray(probs)
        ax = axes[0, 0 if binary else i]
        if binary:
            fpr, tpr, _ = roc_curve(y_true, probs[:, 1])
            ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc(y_true, probs):.3f})")
            continue
        per_class = one_vs_rest_auroc(y_true, probs)
        for k, area in per_class.items():
            fpr, tpr, _ = roc_curve(y_true == k, probs[:, k])
            ax.plot(fpr, tpr, lw=0.8, alpha=0.6, label=f"{classes[k]} vs rest ({area:.3f})")
        fpr, tpr = macro_roc_curve(y_true, probs)
        ax.plot(fpr, tpr, "k", lw=2.2,
                label=f"macro one-vs-rest (AUROC {auroc(y_true, probs):.3f})")
        absent = len(classes) - len(per_class)
        ax.set_title(f"{name}: macro one-vs-rest ROC" + (f"\n({absent} class(es) absent from "
                                                         f"the labels, left out)" if absent else ""),
                     fontsize=9)
    for ax in axes[0]:
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set_xlabel("false positive rate"), ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7 if not binary else 8, loc="lower right")
    if binary:
        axes[0, 0].set_title(f"ROC: {classes[1]} against {classes[0]}", fontsize=9)
    fig.tight_layout()
    return fig


VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:red", "within noise": "tab:gray"}


def forest_rows(ax, rows, labels, xlabel: str, fontsize: int | None = None):
    """A forest plot on `ax`: one row per paired difference (top to bottom), the dot its
    estimate, the bar its interval, coloured by verdict (VERDICT_COLOURS), small grey marks its
    per-seed differences, a dotted line at 0. `rows`: dicts or Series with difference, low,
    high, verdict and per_seed (course.bootstrap's contrasts)."""
    rows = list(rows)
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows):
        d = row["difference"]
        ax.errorbar(d, yi, xerr=[[d - row["low"]], [row["high"] - d]], fmt="o", capsize=3,
                    color=VERDICT_COLOURS[row["verdict"]])
        ax.scatter(row["per_seed"], [yi - 0.2] * len(row["per_seed"]), s=9, color="0.5")
    ax.axvline(0, color="k", ls=":", lw=1)
    ax.locator_params(axis="x", nbins=5)
    ax.set_yticks(y, labels, fontsize=fontsize)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def reconstruction_figure(masked, result, original, n: int = 8, mean=0.5, std=0.5):
    """Rows: original, masked input, reconstruction (normalised tensors in, figure out)."""
    import matplotlib.pyplot as plt

    n = min(n, original.shape[0])
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5), squeeze=False)
    for row, (title, imgs) in enumerate([("original", original), ("masked", masked),
                                         ("reconstruction", result)]):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(to_image(imgs[i], mean, std))
            ax.set_xticks([]), ax.set_yticks([])
        axes[row, 0].set_ylabel(title)
    fig.tight_layout()
    return fig


def explorer(draw, **controls):
    """Controls (ipywidgets) that redraw `draw(**values)` below them whenever one changes.

    Nothing is drawn when the cell runs, only when a control moves (in a live kernel:
    JupyterLab). Drawing into an Output widget while a headless run (papermill, nbclient)
    executes the cell can stall it, so a headless run never does; make the static figure in
    a separate cell, as the course notebooks do (the website shows that one).
    """
    import ipywidgets as widgets
    from IPython.display import clear_output, display

    out = widgets.Output()

    def redraw(_change=None):
        with out:
            clear_output(wait=True)
            draw(**{name: c.value for name, c in controls.items()})

    for c in controls.values():
        c.observe(redraw, names="value")
    box = widgets.VBox([widgets.HBox(list(controls.values())), out])
    display(box)
    return box
