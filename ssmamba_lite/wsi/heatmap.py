"""A heatmap of per-tile scores (e.g. MIL attention) drawn over the slide thumbnail.

    score s_k of tile k  ->  colour value v_k in [0, 1]
        colour_by="value"    v_k = s_k / max_j s_j        (the default: 0 blue ... max red)
        colour_by="rank"     v_k = rank(s_k) / (n - 1)    (percentile rank, as CLAM draws)
    colour(v_k)          ->  filled over the tile's footprint on the thumbnail
    pixel                =   (1 - alpha) * thumbnail + alpha * colour     on tiles only

Attention weights a_k sum to one over the bag, so the uniform weight is 1/n. Colouring by
value keeps that scale: a nearly uniform attention (every a_k close to 1/n) looks nearly
uniform. Ranks spread any set of weights, however close together, from blue to red, and so
exaggerate small differences; use them only to see an order. `attention_spread` says in
numbers how far the weights are from uniform:

    n · max_k a_k         1 when uniform, n when one tile takes everything
    H(a) / log n          H(a) = -Σ_k a_k log a_k: 1 when uniform, 0 for a single tile

`save_heatmap` writes the overlay with a colour bar beside it (0, the uniform level 1/n and the
largest score marked), drawn with Pillow so that `mil evaluate` needs no plotting library.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# A blue -> cyan -> yellow -> red ramp (low -> high): readable on pink H&E.
RAMP = np.array([[49, 54, 149], [69, 117, 180], [116, 173, 209], [254, 224, 144],
                 [244, 109, 67], [165, 0, 38]], dtype=float)
COLOUR_BY = ("value", "rank")


def colormap(r: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> RGB float (..., 3) by linear interpolation along RAMP."""
    pos = np.clip(r, 0, 1) * (len(RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(RAMP) - 2)
    frac = (pos - lo)[..., None]
    return RAMP[lo] * (1 - frac) + RAMP[lo + 1] * frac


def percentile_ranks(scores: np.ndarray) -> np.ndarray:
    """(n,) -> (n,) ranks scaled to [0, 1]; a single tile gets 1."""
    scores = np.asarray(scores, dtype=float).ravel()
    if len(scores) < 2:
        return np.ones_like(scores)
    return np.argsort(np.argsort(scores, kind="stable"), kind="stable") / (len(scores) - 1)


def colour_values(scores, colour_by: str = "value") -> np.ndarray:
    """(n,) scores -> (n,) values in [0, 1] for `colormap` (see the module docstring)."""
    scores = np.asarray(scores, dtype=float).ravel()
    if colour_by == "rank":
        return percentile_ranks(scores)
    if colour_by != "value":
        raise ValueError(f"heatmap: colour_by must be one of {COLOUR_BY}, got {colour_by!r}")
    if len(scores) and scores.min() < 0:
        raise ValueError("heatmap: colour_by='value' needs scores >= 0 (attention weights); "
                         "use colour_by='rank' for signed scores")
    top = scores.max() if len(scores) else 0.0
    return scores / top if top > 0 else np.zeros_like(scores)


def attention_spread(weights) -> dict:
    """How far attention weights (n,) are from uniform: n, uniform = 1/n, max_times_n =
    n · max a_k and entropy_ratio = H(a) / log n (both 1 when uniform). The weights are
    divided by their sum first."""
    a = np.asarray(weights, dtype=float).ravel()
    if len(a) == 0 or a.min() < 0 or a.sum() <= 0:
        raise ValueError("attention_spread: needs n >= 1 non-negative weights with a positive sum")
    a, n = a / a.sum(), len(a)
    entropy = -np.sum(a[a > 0] * np.log(a[a > 0]))
    return {"n": n, "uniform": 1 / n, "max_times_n": float(n * a.max()),
            "entropy_ratio": float(entropy / np.log(n)) if n > 1 else 1.0}


def heatmap_overlay(thumbnail: np.ndarray, coords: np.ndarray, scores: np.ndarray,
                    tile_size0: int, level0_size: tuple, alpha: float = 0.5,
                    colour_by: str = "value") -> Image.Image:
    """thumbnail (h, w, 3) uint8, coords (n, 2) level-0 (x, y), scores (n,) -> RGB image (w, h)."""
    coords = np.asarray(coords).reshape(-1, 2)
    if len(coords) != len(np.ravel(scores)):
        raise ValueError(f"heatmap: {len(coords)} tiles but {len(np.ravel(scores))} scores")
    h, w = thumbnail.shape[:2]
    sx, sy = w / level0_size[0], h / level0_size[1]        # thumbnail pixels per level-0 pixel
    value = np.full((h, w), np.nan)                        # colour value of the tile under each pixel
    for (x, y), v in zip(coords, colour_values(scores, colour_by)):
        value[int(y * sy):max(int(y * sy) + 1, round((y + tile_size0) * sy)),
              int(x * sx):max(int(x * sx) + 1, round((x + tile_size0) * sx))] = v
    on_tile = ~np.isnan(value)
    out = thumbnail.astype(float)
    out[on_tile] = (1 - alpha) * out[on_tile] + alpha * colormap(value[on_tile])
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def colour_bar(height: int, top: float, marks: dict, width: int = 120) -> Image.Image:
    """A vertical colour bar for values 0 (bottom) .. `top`, with a line at each value of
    `marks` ({label: value}) and its label (labels nudged apart where lines are close)."""
    bar_w, y0, y1 = 16, 8, max(height - 8, 40)
    img = Image.new("RGB", (width, max(height, 48)), "white")
    ramp = colormap(np.linspace(1, 0, y1 - y0))            # top row = highest value
    img.paste(Image.fromarray(np.repeat(ramp[:, None], bar_w, 1).round().astype(np.uint8)),
              (4, y0))
    draw = ImageDraw.Draw(img)
    fraction = {label: float(np.clip(v / top, 0, 1)) if top > 0 else 0.0
                for label, v in marks.items()}
    lines = sorted((y1 - 1 - round((y1 - y0 - 1) * f), label) for label, f in fraction.items())
    text_y = -100
    for y, label in lines:                                 # top to bottom
        draw.line([(2, y), (bar_w + 6, y)], fill="black", width=1)
        text_y = max(y - 5, text_y + 11)
        draw.text((bar_w + 9, text_y), label, fill="black")
    return img


def save_heatmap(path, thumbnail, coords, scores, tile_size0, level0_size,
                 alpha: float = 0.5, colour_by: str = "value") -> Path:
    """`heatmap_overlay` written as a PNG with its colour bar on the right (colour_by="value":
    0, the uniform level 1/n and the largest score marked; "rank": lowest, median, highest
    rank); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay = heatmap_overlay(thumbnail, coords, scores, tile_size0, level0_size, alpha, colour_by)
    n = len(np.ravel(scores))
    if colour_by == "value":
        top = float(np.max(scores)) if n else 0.0
        bar = colour_bar(overlay.height, top, {"0": 0.0, f"max {top:.3g}": top,
                                               f"1/n = {1 / max(n, 1):.3g}": 1 / max(n, 1)})
    else:
        bar = colour_bar(overlay.height, 1.0, {"lowest rank": 0.0, "median": 0.5,
                                               "highest rank": 1.0})
    out = Image.new("RGB", (overlay.width + bar.width, max(overlay.height, bar.height)), "white")
    out.paste(overlay, (0, 0))
    out.paste(bar, (overlay.width, 0))
    out.save(path)
    return path
