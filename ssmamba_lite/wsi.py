"""Whole-slide images: open a slide, find the tissue, cut it into tiles, encode every tile.

A whole-slide image (WSI) is a pyramid of huge RGB images (level 0: up to 100k x 100k pixels).
Slide-level models never see it whole: they see a *bag* of tile features (mil.py).

    slide --thumbnail--> tissue mask (Otsu on saturation)
          --grid-------> tile coordinates (level-0 pixels) of the tiles that lie on tissue
          --encoder----> features (n_tiles, C), cached in <out>/<slide name>.h5

Glossary
    level 0         the full-resolution image of the slide, (W0, H0) pixels
    mpp             microns per pixel at level 0 (openslide.mpp-x); 20x scans are ~0.5 µm/px
    magnification   objective power of level 0 (20 for a 20x scan); by convention
                    mpp ≈ 10 / magnification
    downsample d    target mpp / level-0 mpp: one tile pixel covers d x d level-0 pixels
    tile_size       tile side in pixels at the target resolution; `tile_size0 = d * tile_size`
                    is the same tile measured in level-0 pixels
    coords          (n, 2) int64, level-0 (x, y) of each tile's top-left corner
    thumbnail       small RGB picture of the whole slide (longest side `thumbnail_size`)
    min_tissue      a tile is kept when at least this fraction of it lies on the tissue mask

Cache file `<slide stem>.h5`: datasets `features` (n, C) float32, `coords` (n, 2) int64,
`thumbnail` (h, w, 3) uint8; attributes slide, tile_size, tile_size0, level0_size (W0, H0),
mpp, downsample, encoder. It is written to a temporary name and renamed when complete, so an
existing cache file is always whole: a second run skips it (resumable across slides).

Slides are read by `slide.Slide` (OpenSlide, with tifffile as the fallback). The heatmap of
per-tile scores over the thumbnail is `heatmap.py`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageFilter
from tqdm.auto import tqdm

from ssmamba_lite.checkpoint import _atomic, remove_stale_temps
from ssmamba_lite.data import MEAN, STD
from ssmamba_lite.distributed import resolve_device
from ssmamba_lite.slide import Slide, SlideError, target_downsample

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif",
                  ".svslide")


# ---------------------------------------------------------------------------------------------
# Tissue and tiles.
# ---------------------------------------------------------------------------------------------
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


def tile_grid(size0: tuple, tile_size0: int, mask: np.ndarray, min_tissue: float = 0.5) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# The encoder.
# ---------------------------------------------------------------------------------------------
def load_encoder(checkpoint=None, model: str = "ssmamba_lite_tiny",
                 model_config: dict | None = None, seed: int = 0) -> nn.Module:
    """A tile encoder without head (num_classes=0), in eval mode.

    checkpoint: a folder with encoder.safetensors + config.json (as `ssmamba-lite pretrain`
    writes them), a .safetensors file (architecture from a config.json beside it, else
    `model_config` / `model`), or None / "none": random weights drawn with `seed` (a baseline
    for demos and tests: random features are not a result). config.json's "model_config"
    (SSMambaConfig fields) wins, else "model" (+ "model_args") is built by name (SSMamba
    preset or any timm model). The module carries `input_mean`, `input_std`: the pixel
    normalisation it was trained with (config.json's mean/std, else the engine's data.MEAN/STD).
    """
    from ssmamba_lite.model import SSMamba, SSMambaConfig
    from ssmamba_lite.models import build_model

    weights, saved = None, {}
    if checkpoint not in (None, "none"):
        path = Path(checkpoint)
        weights = path / "encoder.safetensors" if path.is_dir() else path
        if not weights.is_file():
            raise FileNotFoundError(f"encoder checkpoint {weights} does not exist")
        if (weights.parent / "config.json").is_file():
            saved = json.loads((weights.parent / "config.json").read_text())
    model_config = saved.get("model_config", model_config)
    with torch.random.fork_rng(devices=[]):                    # leaves the caller's RNG alone
        torch.manual_seed(seed)
        if model_config:
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in model_config.items()}
            net = SSMamba(SSMambaConfig(**{**fields, "num_classes": 0}))
        else:
            net = build_model(saved.get("model", model), 0, saved.get("image_size", 224),
                              saved.get("model_args"))
    if weights is not None:
        _load_weights(net, weights)
    net.input_mean, net.input_std = tuple(saved.get("mean", MEAN)), tuple(saved.get("std", STD))
    return net.eval()


def _load_weights(net: nn.Module, weights: Path) -> None:
    from safetensors.torch import load_file

    state = {k.removeprefix("module.").removeprefix("encoder."): v
             for k, v in load_file(str(weights)).items()}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:                                  # shapes differ
        raise ValueError(f"encoder checkpoint {weights} does not fit the model: "
                         f"{str(err).splitlines()[1].strip()}") from None
    if missing or unexpected:
        raise ValueError(f"encoder checkpoint {weights} does not fit the model: missing "
                         f"{missing[:3]}..., unexpected {unexpected[:3]}...")


@torch.inference_mode()
def encode_tiles(encoder: nn.Module, tiles: np.ndarray, device, image_size: int | None = None):
    """(batch, h, w, 3) uint8 RGB -> (batch, C) float32 pooled encoder features. Pixels are
    normalised with the encoder's `input_mean` / `input_std` (see load_encoder)."""
    x = torch.from_numpy(tiles).to(device).permute(0, 3, 1, 2).float() / 255  # (batch, 3, h, w)
    if image_size and x.shape[-1] != image_size:
        x = nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                      align_corners=False)
    mean = torch.tensor(getattr(encoder, "input_mean", MEAN), device=device).view(1, 3, 1, 1)
    std = torch.tensor(getattr(encoder, "input_std", STD), device=device).view(1, 3, 1, 1)
    feats = encoder.forward_head(encoder.forward_features((x - mean) / std), pre_logits=True)
    return feats.float().cpu()


# ---------------------------------------------------------------------------------------------
# Feature extraction and the cache.
# ---------------------------------------------------------------------------------------------
def write_features(path, features, coords, thumbnail=None, **attrs) -> None:
    """One cache file, written under a temporary name and renamed when whole."""
    import h5py

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f["features"] = np.asarray(features, dtype=np.float32)
            f["coords"] = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
            if thumbnail is not None:
                f["thumbnail"] = np.asarray(thumbnail, dtype=np.uint8)
            for k, v in attrs.items():
                f.attrs[k] = "" if v is None else v
    _atomic(Path(path), write)


def read_features(path) -> dict:
    """A cache file -> {"features", "coords", "thumbnail" (or None), attributes...}."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            out = {k: f[k][()] for k in ("features", "coords")}
            out["thumbnail"] = f["thumbnail"][()] if "thumbnail" in f else None
            for k, v in f.attrs.items():                      # numpy scalars -> Python
                v = v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v
                out[k] = None if v == "" else v
    except (OSError, KeyError) as err:
        raise ValueError(f"feature file {path} cannot be read: {err}") from None
    return out


def extract_slide(slide_path, out_path, encoder: nn.Module, tile_size: int = 224,
                  magnification=None, mpp=None, min_tissue: float = 0.5, batch_size: int = 32,
                  image_size: int | None = None, device="auto", thumbnail_size: int = 1024,
                  encoder_name: str = "") -> int:
    """Tile one slide, encode its tissue tiles, write `out_path`. Returns the number of tiles."""
    device = resolve_device(device) if isinstance(device, str) else device
    encoder = encoder.to(device)
    with Slide(slide_path) as slide:
        d = target_downsample(slide, magnification, mpp)
        tile_size0 = round(tile_size * d)
        thumb = slide.thumbnail(thumbnail_size)
        coords = tile_grid(slide.size, tile_size0, tissue_mask(thumb), min_tissue)
        feats = []
        for i in tqdm(range(0, len(coords), batch_size), desc=slide.path.name, leave=False,
                      unit="batch"):
            tiles = np.stack([slide.read(x, y, tile_size0, tile_size)
                              for x, y in coords[i:i + batch_size]])
            feats.append(encode_tiles(encoder, tiles, device, image_size))
        dim = getattr(encoder, "num_features", 0)
        features = torch.cat(feats).numpy() if feats else np.zeros((0, dim), np.float32)
        write_features(out_path, features, coords, thumb, slide=str(slide.path),
                       tile_size=tile_size, tile_size0=tile_size0, level0_size=slide.size,
                       mpp=slide.mpp, downsample=d, encoder=encoder_name)
    return len(coords)


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


def extract_slides(slides, out_dir, encoder: nn.Module, overwrite: bool = False,
                   **kwargs) -> dict:
    """`extract_slide` for every slide into `<out_dir>/<stem>.h5`; existing files are skipped
    (resume), an unreadable slide is reported and the others still run. Returns and writes
    `<out_dir>/extract_report.json` = {"done": {name: n_tiles}, "skipped": [...],
    "failed": {name: message}}."""
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir)                             # a killed earlier run's half files
    report = {"done": {}, "skipped": [], "failed": {}}
    for path in tqdm(list_slides(slides), desc="slides", unit="slide"):
        target = out_dir / f"{path.stem}.h5"
        if target.exists() and not overwrite:
            report["skipped"].append(path.name)
            continue
        try:
            report["done"][path.name] = extract_slide(path, target, encoder, **kwargs)
        except (SlideError, ValueError, OSError) as err:
            msg = str(err) if str(path) in str(err) else f"slide {path}: {err}"
            report["failed"][path.name] = msg
            tqdm.write(f"error: {msg}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "extract_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
