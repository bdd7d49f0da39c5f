"""MAMIM on the target slides themselves: the paper's self-supervised-on-target idea for WSI.

    slides --tissue tiles at a physical scale--> <out>/tiles/<slide>/<x>_<y>.png + images.csv
           --MAMIM (engine.train.pretrain)----> <out>/encoder.safetensors, config.json
    then `ssmamba-lite wsi extract --checkpoint <out>` encodes the slides with that encoder.

    ssmamba-lite wsi pretrain --slides TRAIN_SLIDES --out runs/wsi_mamim --epochs 10

Tiles are cut exactly as `wsi extract` cuts them (the same `features.tile_grid`: tissue
mask, grid, physical scale; the same Slide.read resize), so the encoder sees at pretraining
what it encodes later. Under torchrun the ranks share the slides, then train data-parallel;
the tiles are PNG files on disk (cut once: a rerun with the same settings reuses them). Each
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

from ssmamba_lite.engine.checkpoint import atomic_write, read_json, save_json
from ssmamba_lite.engine.distributed import Env, setup
from ssmamba_lite.wsi.cohort import by_size, cohort_slides
from ssmamba_lite.wsi.features import tile_grid
from ssmamba_lite.wsi.slide import DEFAULT_MPP, Slide


def export_tiles(slides, out_dir, tile_size: int = 224, mpp=DEFAULT_MPP, slide_mpp=None,
                 magnification=None, min_tissue: float = 0.5, max_tiles_per_slide: int = 0,
                 thumbnail_size: int = 1024, seed: int = 0, env: Env | None = None) -> Path:
    """Tissue tiles of `slides` (files, folders, cohort CSVs) as PNG under
    `out_dir`/<slide stem>/, and `out_dir`/images.csv (path, patient_id = slide stem).
    `max_tiles_per_slide` > 0 keeps that many, drawn with `seed`. Under torchrun (`env`) the
    ranks share the slides (largest first, dealt in turn); a slide whose folder holds its
    `tiles.json` (written last) is not cut again, so a killed export resumes. Returns the
    images.csv path (written last by rank 0, so a complete folder has one)."""
    env = env or Env(None)
    out_dir = Path(out_dir)
    mpp = None if magnification is not None else mpp
    paths = by_size(cohort_slides(slides))
    settings = {"tile_size": tile_size, "mpp": mpp, "slide_mpp": slide_mpp,
                "magnification": magnification, "min_tissue": min_tissue,
                "max_tiles_per_slide": max_tiles_per_slide, "thumbnail_size": thumbnail_size,
                "seed": seed}
    for path in tqdm(paths[env.rank::env.world], desc=f"rank {env.rank} slides", unit="slide"):
        record = out_dir / path.stem / TILES_RECORD
        if not record.is_file() or read_json(record).get("settings") != settings:
            export_slide(path, out_dir, settings)
    env.barrier()
    rows = [{"path": name, "patient_id": path.stem} for path in paths
            for name in read_json(out_dir / path.stem / TILES_RECORD)["tiles"]]
    if not rows:
        raise ValueError(f"no tissue tile found on {len(paths)} slide(s)")

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["path", "patient_id"])
            w.writeheader()
            w.writerows(rows)
    if env.is_main:
        atomic_write(out_dir / "images.csv", write)
    env.barrier()
    return out_dir / "images.csv"


TILES_RECORD = "tiles.json"        # a slide's exported tiles, written when all are on disk


def export_slide(path, out_dir: Path, settings: dict) -> list[str]:
    """One slide's tissue tiles as PNG files, then its tiles.json: the tiles' names and the
    settings they were cut with (a rerun with other settings cuts them again)."""
    tile_size, max_tiles_per_slide = settings["tile_size"], settings["max_tiles_per_slide"]
    with Slide(path) as slide:
        _, size0, _, coords = tile_grid(slide, tile_size, settings["magnification"],
                                        settings["mpp"], settings["slide_mpp"],
                                        settings["min_tissue"], settings["thumbnail_size"])
        if 0 < max_tiles_per_slide < len(coords):
            pick = np.random.default_rng(settings["seed"]).choice(
                len(coords), max_tiles_per_slide, replace=False)
            coords = coords[np.sort(pick)]
        folder = out_dir / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for x, y in tqdm(coords, desc=path.name, unit="tile", leave=False):
            name = f"{path.stem}/{x}_{y}.png"
            tile = slide.read(int(x), int(y), size0, tile_size)
            atomic_write(out_dir / name, lambda tmp, t=tile: Image.fromarray(t).save(
                tmp, format="PNG"))
            names.append(name)
    for old in set(folder.glob("*.png")) - {out_dir / n for n in names}:
        old.unlink()                                          # tiles of other settings
    save_json({"slide": str(path), "settings": settings, "tiles": names}, folder / TILES_RECORD)
    return names


def pretrain_on_slides(slides, out, tile_size: int = 224, mpp=DEFAULT_MPP, slide_mpp=None,
                       magnification=None, min_tissue: float = 0.5, max_tiles_per_slide: int = 0,
                       **pretrain_args) -> list[dict]:
    """export_tiles into `out`/tiles, then MAMIM on them (engine.train.pretrain with
    `pretrain_args`: model, image_size, epochs, batch_size, ...). Returns its history. Under
    torchrun the ranks share the export, then train data-parallel (DDP) as `pretrain` does."""
    from ssmamba_lite.engine.checkpoint import check_run_folder
    from ssmamba_lite.engine.train import PretrainConfig, pretrain

    if not pretrain_args.get("resume"):            # refuse before the tiles are rewritten
        check_run_folder(out, {}, False, pretrain_args.get("overwrite", False), delete=False)
    tiles = Path(out) / "tiles"
    env = setup(pretrain_args.get("device", "auto"), pretrain_args.get("seed", 0))
    export_tiles(slides, tiles, tile_size, mpp, slide_mpp, magnification, min_tissue,
                 max_tiles_per_slide, seed=pretrain_args.get("seed", 0), env=env)
    pretrain_args.setdefault("image_size", tile_size)
    return pretrain(PretrainConfig(data=str(tiles), out=str(out), **pretrain_args))
