"""MAMIM on the target slides themselves: the paper's self-supervised-on-target idea for WSI.

    slides --tissue tiles at a physical scale--> <out>/tiles/<slide>/<x>_<y>.png + images.csv
           --MAMIM (engine.train.pretrain)----> <out>/encoder.safetensors, config.json
    then `ssmamba-lite wsi extract --checkpoint <out>` encodes the slides with that encoder.

    ssmamba-lite wsi pretrain --slides TRAIN_SLIDES --out runs/wsi_mamim --epochs 10

Tiles are cut exactly as `wsi extract` cuts them (the same `features.tile_grid`: tissue
mask, grid, physical scale; the same Slide.read resize), so the encoder sees at pretraining what it encodes later. Each
slide is its own group (images.csv `patient_id` = slide name), recorded in
pretrain_patients.json. Pass only the slides MAMIM may see: no labels are used, but a slide
meant as an untouched test set should stay out.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ssmamba_lite.engine.checkpoint import atomic_write
from ssmamba_lite.wsi.features import tile_grid
from ssmamba_lite.wsi.slide import DEFAULT_MPP, Slide
from ssmamba_lite.wsi.tiles import list_slides


def export_tiles(slides, out_dir, tile_size: int = 224, mpp=DEFAULT_MPP, slide_mpp=None,
                 magnification=None, min_tissue: float = 0.5, max_tiles_per_slide: int = 0,
                 thumbnail_size: int = 1024, seed: int = 0) -> Path:
    """Tissue tiles of `slides` as PNG under `out_dir`/<slide stem>/, and `out_dir`/images.csv
    (path, patient_id = slide stem). `max_tiles_per_slide` > 0 keeps that many, drawn with
    `seed`. Returns the images.csv path (written last, so a complete folder has one)."""
    out_dir = Path(out_dir)
    mpp = None if magnification is not None else mpp
    rows = []
    for path in tqdm(list_slides(slides), desc="slides", unit="slide"):
        with Slide(path) as slide:
            _, size0, _, coords = tile_grid(slide, tile_size, magnification, mpp, slide_mpp,
                                            min_tissue, thumbnail_size)
            if 0 < max_tiles_per_slide < len(coords):
                pick = np.random.default_rng(seed).choice(len(coords), max_tiles_per_slide,
                                                          replace=False)
                coords = coords[np.sort(pick)]
            folder = out_dir / path.stem
            folder.mkdir(parents=True, exist_ok=True)
            for x, y in tqdm(coords, desc=path.name, unit="tile", leave=False):
                name = f"{path.stem}/{x}_{y}.png"
                tile = slide.read(int(x), int(y), size0, tile_size)
                atomic_write(out_dir / name, lambda tmp, t=tile: Image.fromarray(t).save(
                    tmp, format="PNG"))
                rows.append({"path": name, "patient_id": path.stem})
    if not rows:
        raise ValueError(f"no tissue tile found on {len(list_slides(slides))} slide(s)")

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["path", "patient_id"])
            w.writeheader()
            w.writerows(rows)
    atomic_write(out_dir / "images.csv", write)
    return out_dir / "images.csv"


def pretrain_on_slides(slides, out, tile_size: int = 224, mpp=DEFAULT_MPP, slide_mpp=None,
                       magnification=None, min_tissue: float = 0.5, max_tiles_per_slide: int = 0,
                       **pretrain_args) -> list[dict]:
    """export_tiles into `out`/tiles, then MAMIM on them (engine.train.pretrain with
    `pretrain_args`: model, image_size, epochs, batch_size, ...). Returns its history."""
    from ssmamba_lite.engine.checkpoint import check_run_folder
    from ssmamba_lite.engine.train import PretrainConfig, pretrain

    if not pretrain_args.get("resume"):            # refuse before the tiles are rewritten
        check_run_folder(out, {}, False, pretrain_args.get("overwrite", False), delete=False)
    tiles = Path(out) / "tiles"
    export_tiles(slides, tiles, tile_size, mpp, slide_mpp, magnification, min_tissue,
                 max_tiles_per_slide, seed=pretrain_args.get("seed", 0))
    pretrain_args.setdefault("image_size", tile_size)
    return pretrain(PretrainConfig(data=str(tiles), out=str(out), **pretrain_args))
