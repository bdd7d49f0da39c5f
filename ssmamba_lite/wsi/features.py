"""Slides -> tile features: the tile encoder, feature extraction and the feature cache.

A whole-slide image (WSI) is a pyramid of huge RGB images (level 0: up to 100k x 100k pixels).
Slide-level models never see it whole: they see a *bag* of tile features (mil.py).

    slide --thumbnail--> tissue mask            (tiles.py)
          --grid-------> tile coordinates of the tiles that lie on tissue
          --encoder----> features (n_tiles, C), cached in <out>/<slide name>.h5

Glossary (slide.py and tiles.py have the rest)
    mpp             microns per pixel at level 0 (openslide.mpp-x); 20x scans are ~0.5 µm/px
    magnification   objective power of level 0 (20 for a 20x scan); by convention
                    mpp ≈ 10 / magnification
    downsample d    target mpp / level-0 mpp: one tile pixel covers d x d level-0 pixels
    tile_size       tile side in pixels at the target resolution; `tile_size0 = d * tile_size`
                    is the same tile measured in level-0 pixels
    thumbnail       small RGB picture of the whole slide (longest side `thumbnail_size`)

Cache file `<slide stem>.h5`: datasets `features` (n, C) float32, `coords` (n, 2) int64,
`thumbnail` (h, w, 3) uint8; attributes slide, tile_size, tile_size0, level0_size (W0, H0),
mpp (the slide's level 0), target_mpp (the tiles'), downsample, image_size (what the encoder
saw), encoder (its name), encoder_fingerprint (sha256 of its weights), n_tiles, fingerprint
(encoder and settings), mpp_source (slide, --slide-mpp or none) and run. It is written to a
temporary name and renamed when complete, so an existing cache file is always whole: a rerun
skips it (cohort.py runs whole cohorts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ssmamba_lite.engine.checkpoint import (
    atomic_write,
    load_state,
    load_torch,
    load_weights,
    read_json,
)
from ssmamba_lite.engine.device import resolve_device
from ssmamba_lite.engine.factory import model_from_config
from ssmamba_lite.engine.transforms import MEAN, STD
from ssmamba_lite.wsi.slide import DEFAULT_MPP, Slide, target_downsample
from ssmamba_lite.wsi.tiles import tile_coords, tissue_mask

TORCH_WEIGHTS = (".bin", ".pth", ".pt")     # torch files (timm/Hugging Face releases such as UNI)


def load_tile_encoder(checkpoint=None, model: str = "ssmamba_lite_tiny",
                      model_config: dict | None = None, seed: int = 0, image_size=None,
                      mean=None, std=None) -> nn.Module:
    """A tile encoder without head (num_classes=0), in eval mode. Nothing is downloaded.

    checkpoint: a folder with encoder.safetensors + config.json (as `ssmamba-lite pretrain`
    writes them), a .safetensors file (architecture from a config.json beside it, else
    `model_config` (SSMambaConfig fields) / `model` (an SSMamba preset or any timm model)), a
    torch weights file (.bin, .pth, .pt: read with weights_only, e.g. `--model
    vit_large_patch16_224 --checkpoint pytorch_model.bin` for UNI-style weights), or None /
    "none": random weights drawn with `seed` (a baseline for demos and tests: random features
    are not a result). The module carries `input_mean`, `input_std` (the pixel normalisation:
    `mean`/`std` when given, else config.json's, else a timm model's own pretrained config,
    else transforms.MEAN/STD), `input_size` (the side tiles are resized to: `image_size`, else
    a timm model's pretrained input size, else None: the tile's own size), `fingerprint`
    (sha256 of its weights) and `encoder_name` ("<model built>:<checkpoint>"), which every
    feature file records.
    """
    from ssmamba_lite.engine.factory import is_ssmamba

    weights, saved = None, {}
    if checkpoint not in (None, "none"):
        path = Path(checkpoint)
        weights = path / "encoder.safetensors" if path.is_dir() else path
        if not weights.is_file():
            raise FileNotFoundError(f"encoder checkpoint {weights} does not exist")
        if (weights.parent / "config.json").is_file():
            saved = read_json(weights.parent / "config.json")
    own = {"model_config": model_config} if model_config else {"model": model}
    record = saved or {**own, "image_size": image_size or 224}
    with torch.random.fork_rng(devices=[]):                    # leaves the caller's RNG alone
        torch.manual_seed(seed)
        net = model_from_config(record, num_classes=0)
    if weights is not None and weights.suffix in TORCH_WEIGHTS:
        load_torch_weights(net, weights)
    elif weights is not None:
        load_weights(net, weights, ignore=("head.",))
    timm_cfg = {} if saved or model_config or is_ssmamba(model) else \
        dict(getattr(net, "pretrained_cfg", None) or {})
    net.input_mean = tuple(mean or saved.get("mean") or timm_cfg.get("mean") or MEAN)
    net.input_std = tuple(std or saved.get("std") or timm_cfg.get("std") or STD)
    net.input_size = image_size or (timm_cfg.get("input_size") or (None,))[-1]
    net.fingerprint = weights_fingerprint(net)
    built = record.get("model") or "ssmamba (model_config)"           # what was really built
    net.encoder_name = f"{built}:{checkpoint if checkpoint not in (None, 'none') else 'none'}"
    return net.eval()


def load_torch_weights(net: nn.Module, path) -> None:
    """A torch weights file into `net`: the state dict itself, or under "state_dict" /
    "model"; a classifier in the file (timm's `classifier` name) is ignored, and every other
    key must fit (checkpoint.load_state: one line naming the file otherwise)."""
    state = load_torch(path)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    head = (getattr(net, "pretrained_cfg", None) or {}).get("classifier") or "head"
    heads = tuple(f"{h}." for h in ([head] if isinstance(head, str) else head))
    load_state(net, state, path, ignore=heads,
               hint=" (are --model and --image-size those these weights were trained with?)")


def weights_fingerprint(net: nn.Module) -> str:
    """sha256 (16 hex digits) of every tensor of `net`'s state dict, names included."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@torch.inference_mode()
def encode_tiles(encoder: nn.Module, tiles: np.ndarray, device, image_size: int | None = None):
    """(batch, h, w, 3) uint8 RGB -> (batch, C) float32 pooled encoder features. Pixels are
    normalised with the encoder's `input_mean` / `input_std` (see load_tile_encoder)."""
    device = torch.device(device)
    x = torch.as_tensor(tiles).to(device).permute(0, 3, 1, 2).float() / 255  # (batch, 3, h, w)
    if image_size and x.shape[-1] != image_size:      # antialiased, like training's Resize
        x = nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                      align_corners=False, antialias=True)
    mean = torch.tensor(getattr(encoder, "input_mean", MEAN), device=device).view(1, 3, 1, 1)
    std = torch.tensor(getattr(encoder, "input_std", STD), device=device).view(1, 3, 1, 1)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        feats = encoder.forward_head(encoder.forward_features((x - mean) / std), pre_logits=True)
    return feats.float().cpu()


class SlideTiles(torch.utils.data.Dataset):
    """The tiles at `coords` of one slide, read by DataLoader workers: each worker process
    opens the slide once for itself (slide handles cannot be shared between processes)."""

    def __init__(self, path, coords: np.ndarray, tile_size0: int, tile_size: int):
        self.path, self.coords, self.size0, self.size = path, coords, tile_size0, tile_size
        self._slide = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._slide is None:
            self._slide = Slide(self.path)
        x, y = self.coords[i]
        return self._slide.read(int(x), int(y), self.size0, self.size)

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
            self._slide = None


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
    atomic_write(path, write)


def read_features(path, arrays: bool = True) -> dict:
    """A cache file -> {"features", "coords", "thumbnail" (or None), attributes...}; with
    arrays=False the attributes alone (nothing large is read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            out = {k: f[k][()] for k in ("features", "coords")} if arrays else {}
            if arrays:
                out["thumbnail"] = f["thumbnail"][()] if "thumbnail" in f else None
            for k, v in f.attrs.items():                      # numpy scalars -> Python
                v = v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v
                out[k] = None if v == "" else v
    except (OSError, KeyError) as err:
        raise ValueError(f"feature file {path} cannot be read: {err}") from None
    return out


def tile_grid(slide: Slide, tile_size: int, magnification=None, mpp=DEFAULT_MPP,
              slide_mpp=None, min_tissue: float = 0.5, thumbnail_size: int = 1024):
    """The tiles of `slide` that extraction encodes (and `wsi pretrain` exports): downsample
    d, tile side in level-0 pixels, thumbnail, and level-0 (x, y) of the tissue tiles."""
    if tile_size < 1:
        raise ValueError(f"--tile-size must be at least 1 pixel, got {tile_size}")
    d = target_downsample(slide, magnification, mpp, slide_mpp)
    tile_size0 = round(tile_size * d)
    thumb = slide.thumbnail(thumbnail_size)
    return d, tile_size0, thumb, tile_coords(slide.size, tile_size0, tissue_mask(thumb),
                                             min_tissue)


def extract_slide(slide_path, out_path, encoder: nn.Module, tile_size: int = 224,
                  magnification=None, mpp=DEFAULT_MPP, slide_mpp=None, min_tissue: float = 0.5,
                  batch_size: int = 32, image_size: int | None = None, device="auto",
                  thumbnail_size: int = 1024, encoder_name: str = "", workers: int = 0,
                  progress: bool = True, run: str = "", fingerprint: str = "") -> int:
    """Tile one slide, encode its tissue tiles, write `out_path`. Returns the number of tiles.

    Tiles are cut at `mpp` µm/px (default 0.5, about 20x) from the slide's own resolution
    (`slide_mpp` for files that do not record it); `magnification` instead asks for an
    objective power, and mpp=None with no magnification tiles level 0. `workers` processes
    read tiles while the encoder runs (0: read in this process). `run` and `fingerprint` (of
    the encoder and settings, cohort.py) are recorded in the file."""
    device = resolve_device(device) if isinstance(device, str) else device
    encoder = encoder.to(device)
    image_size = image_size or getattr(encoder, "input_size", None)
    mpp = None if magnification is not None else mpp
    with Slide(slide_path) as slide:
        d, tile_size0, thumb, coords = tile_grid(slide, tile_size, magnification, mpp,
                                                 slide_mpp, min_tissue, thumbnail_size)
        level0_mpp, size0 = slide.mpp or slide_mpp, slide.size
        mpp_source = "slide" if slide.mpp else ("--slide-mpp" if slide_mpp else "none")
    if not len(coords):                                     # nothing written: a rerun redoes it
        raise ValueError(f"slide {slide_path}: no tile with tissue ({tile_size} px at "
                         f"downsample {d:.3g} is {tile_size0} level-0 px; the slide is "
                         f"{size0[0]} x {size0[1]}): try a smaller --tile-size or --mpp")
    tiles_of_slide = SlideTiles(slide_path, coords, tile_size0, tile_size)
    loader = torch.utils.data.DataLoader(tiles_of_slide, batch_size=batch_size,
                                         num_workers=workers, collate_fn=np.stack)
    try:
        feats = [encode_tiles(encoder, tiles, device, image_size)
                 for tiles in tqdm(loader, desc=Path(slide_path).name, leave=False, unit="batch",
                                   disable=not progress)]
    finally:
        tiles_of_slide.close()                            # opened here when workers == 0
    dim = getattr(encoder, "num_features", 0)
    features = torch.cat(feats).numpy() if feats else np.zeros((0, dim), np.float32)
    write_features(out_path, features, coords, thumb, slide=str(slide_path),
                   tile_size=tile_size, tile_size0=tile_size0, level0_size=size0,
                   mpp=level0_mpp, target_mpp=mpp, downsample=d, encoder=encoder_name,
                   encoder_fingerprint=getattr(encoder, "fingerprint", ""), n_tiles=len(coords),
                   fingerprint=fingerprint, run=run, image_size=image_size or tile_size,
                   mpp_source=mpp_source)
    return len(coords)
