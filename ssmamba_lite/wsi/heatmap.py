"""A heatmap of per-tile scores (e.g. MIL attention) drawn over the slide thumbnail.

    score s_k of tile k  ->  percentile rank r_k = rank(s_k) / (n - 1) in [0, 1]
    colour(r_k)          ->  filled over the tile's footprint on the thumbnail
    pixel                =   (1 - alpha) * thumbnail + alpha * colour     on tiles only

Percentile ranks (as CLAM draws its attention maps) rather than raw scores: attention weights
sum to one over the bag, so their raw values shrink with the number of tiles and a few large
ones would wash out the rest of the map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# A blue -> cyan -> yellow -> red ramp (low -> high): readable on pink H&E.
RAMP = np.array([[49, 54, 149], [69, 117, 180], [116, 173, 209], [254, 224, 144],
                 [244, 109, 67], [165, 0, 38]], dtype=float)


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


def heatmap_overlay(thumbnail: np.ndarray, coords: np.ndarray, scores: np.ndarray,
                    tile_size0: int, level0_size: tuple, alpha: float = 0.5) -> Image.Image:
    """thumbnail (h, w, 3) uint8, coords (n, 2) level-0 (x, y), scores (n,) -> RGB image (w, h)."""
    coords = np.asarray(coords).reshape(-1, 2)
    if len(coords) != len(np.ravel(scores)):
        raise ValueError(f"heatmap: {len(coords)} tiles but {len(np.ravel(scores))} scores")
    h, w = thumbnail.shape[:2]
    sx, sy = w / level0_size[0], h / level0_size[1]        # thumbnail pixels per level-0 pixel
    value = np.full((h, w), np.nan)                        # rank of the tile under each pixel
    for (x, y), r in zip(coords, percentile_ranks(scores)):
        value[int(y * sy):max(int(y * sy) + 1, round((y + tile_size0) * sy)),
              int(x * sx):max(int(x * sx) + 1, round((x + tile_size0) * sx))] = r
    on_tile = ~np.isnan(value)
    out = thumbnail.astype(float)
    out[on_tile] = (1 - alpha) * out[on_tile] + alpha * colormap(value[on_tile])
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def save_heatmap(path, thumbnail, coords, scores, tile_size0, level0_size,
                 alpha: float = 0.5) -> Path:
    """`heatmap_overlay` written as a PNG file; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    heatmap_overlay(thumbnail, coords, scores, tile_size0, level0_size, alpha).save(path)
    return path
