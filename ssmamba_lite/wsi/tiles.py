"""Where the tissue is on a slide, and the grid of tiles cut from it.

    thumbnail --Otsu on saturation--> tissue mask --grid--> tile coordinates (level-0 pixels)

Glossary
    level 0         the full-resolution image of the slide, (W0, H0) pixels
    tile_size0      a tile's side measured in level-0 pixels
    coords          (n, 2) int64, level-0 (x, y) of each tile's top-left corner
    min_tissue      a tile is kept when at least this fraction of it lies on the tissue mask
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif",
                  ".svslide")


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu (1979): the t maximising the between-class variance of a uint8 histogram,
        σ_b²(t) = (μ_T ω0(t) − μ(t))² / (ω0(t) (1 − ω0(t))),
    ω0(t) = P(v ≤ t), μ(t) = Σ_{v ≤ t} v P(v), μ_T = mean of all values."""
    p = np.bincount(values.ravel(), minlength=256)[:256].astype(float)
    p /= max(p.sum(), 1.0)
    omega0, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_b = (mu[-1] * omega0 - mu) ** 2 / (omega0 * (1 - omega0))
    return int(np.nanargmax(sigma_b)) if np.isfinite(sigma_b).any() else 255


def tissue_mask(thumbnail: np.ndarray, min_saturation: int = 20) -> np.ndarray:
    """(h, w, 3) uint8 -> (h, w) bool. Stained tissue is coloured, glass is white or grey: keep
    pixels whose HSV saturation (median-filtered) exceeds max(Otsu threshold, min_saturation)."""
    sat = Image.fromarray(thumbnail).convert("HSV").getchannel("S").filter(ImageFilter.MedianFilter(5))
    sat = np.asarray(sat)
    return sat > max(otsu_threshold(sat), min_saturation)


def tile_coords(size0: tuple, tile_size0: int, mask: np.ndarray,
                min_tissue: float = 0.5) -> np.ndarray:
    """Level-0 (x, y) of the non-overlapping tiles of side `tile_size0` that lie wholly inside
    the slide `size0` = (W0, H0) and have >= `min_tissue` of their area on `mask` (a mask of
    the whole slide at any scale). Returns (n, 2) int64, row-major order."""
    W0, H0 = size0
    sy, sx = mask.shape[0] / H0, mask.shape[1] / W0          # mask pixels per level-0 pixel
    coords = []
    for y in range(0, H0 - tile_size0 + 1, tile_size0):
        for x in range(0, W0 - tile_size0 + 1, tile_size0):
            window = mask[int(y * sy):max(int(y * sy) + 1, round((y + tile_size0) * sy)),
                          int(x * sx):max(int(x * sx) + 1, round((x + tile_size0) * sx))]
            if window.mean() >= min_tissue:
                coords.append((x, y))
    return np.asarray(coords, dtype=np.int64).reshape(-1, 2)


def list_slides(slides) -> list[Path]:
    """Files and folders (searched for slide suffixes, not recursively) -> sorted slide paths."""
    out = []
    for s in [slides] if isinstance(slides, (str, os.PathLike)) else slides:
        p = Path(s)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in SLIDE_SUFFIXES)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"slide or folder {p} does not exist")
    stems = [p.stem for p in out]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise ValueError(f"two slides share the name {dup[0]}: their cache files would collide")
    return out
