"""MAMIM on the target slides themselves: the paper's self-supervised-on-target idea for WSI.

    slides --tissue tiles at a physical scale--> <out>/tiles.csv (slide, x, y, patient_id)
           --MAMIM (engine.train.pretrain)----> <out>/encoder.safetensors, config.json
    then `ssmamba-lite wsi extract --checkpoint <out>` encodes the slides with that encoder.

    ssmamba-lite wsi pretrain --slides TRAIN_SLIDES --out runs/wsi_mamim --epochs 10
    torchrun --nproc-per-node 2 -m ssmamba_lite.cli wsi pretrain ...      (data-parallel)

Tiles are chosen exactly as `wsi extract` chooses them (the same `features.tile_grid`: tissue
mask, grid, physical scale) and read with the same Slide.read resize, so the encoder sees at
pretraining what it encodes later. They are read from the slides when a batch needs them,
never copied to disk nor all held in memory (`SlideTileSource`): a cohort's tiles need no
space of their own. Under torchrun the ranks share the tissue search (slides dealt in turn,
largest first) and then train data-parallel, as `pretrain` does. Each slide is its own group
(patient_id = slide name), recorded in pretrain_patients.json. Pass only the slides MAMIM may
see: no labels are used, but a slide meant as an untouched test set should stay out.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ssmamba_lite.engine.checkpoint import atomic_write, read_json, save_json
from ssmamba_lite.engine.data import Samples
from ssmamba_lite.engine.distributed import Env, setup
from ssmamba_lite.wsi.cohort import by_size, cohort_slides
from ssmamba_lite.wsi.features import tile_grid
from ssmamba_lite.wsi.slide import DEFAULT_MPP, Slide

TILING = "tiling.json"             # the slides and tile settings a run pretrained on


class SlideTileSource:
    """The tissue tiles of a cohort as a pretraining source (engine.train.pretrain's `source`):
    `samples` holds one key "<slide index>:<x>:<y>" per tile (its group: the slide's name),
    `load(key)` reads that tile from its slide as uint8 (3, tile_size, tile_size). Each process
    (DataLoader workers included) opens a slide once, on its first tile."""

    def __init__(self, slides: list[Path], grids: list[tuple[int, np.ndarray]], tile_size: int):
        self.slides, self.tile_size = [str(p) for p in slides], tile_size
        self.size0 = [size0 for size0, _ in grids]
        keys, groups = [], []
        for i, (path, (_, coords)) in enumerate(zip(slides, grids)):
            keys += [f"{i}:{x}:{y}" for x, y in coords]
            groups += [Path(path).stem] * len(coords)
        self.samples = Samples(keys, [-1] * len(keys), groups)
        self._open: dict[int, Slide] = {}

    def __getstate__(self):                                   # slide handles stay per process
        return {**self.__dict__, "_open": {}}

    def load(self, key: str) -> torch.Tensor:
        i, x, y = (int(v) for v in key.split(":"))
        if i not in self._open:
            self._open[i] = Slide(self.slides[i])
        tile = self._open[i].read(x, y, self.size0[i], self.tile_size)
        return torch.from_numpy(np.array(tile)).permute(2, 0, 1)     # (a writable copy)

    def write_csv(self, path) -> None:
        """tiles.csv: slide, x, y, patient_id of every tile (what MAMIM trained on)."""
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["slide", "x", "y", "patient_id"])
                for key, group in zip(self.samples.paths, self.samples.patients):
                    i, x, y = key.split(":")
                    w.writerow([self.slides[int(i)], x, y, group])
        atomic_write(path, write)


def find_tiles(slides, tile_size: int = 224, mpp=DEFAULT_MPP, slide_mpp=None,
               magnification=None, min_tissue: float = 0.5, max_tiles_per_slide: int = 0,
               thumbnail_size: int = 1024, seed: int = 0, env: Env | None = None
               ) -> SlideTileSource:
    """The tissue tiles of `slides` (files, folders, cohort CSVs), as `wsi extract` finds
    them; `max_tiles_per_slide` > 0 keeps that many per slide, drawn with `seed`. Under
    torchrun (`env`) each rank searches its share of the slides and all ranks get all tiles."""
    env = env or Env(None)
    mpp = None if magnification is not None else mpp
    paths = by_size(cohort_slides(slides))
    mine = {}
    for i in tqdm(range(env.rank, len(paths), env.world), desc=f"rank {env.rank} tissue",
                  unit="slide"):
        with Slide(paths[i]) as slide:
            _, size0, _, coords = tile_grid(slide, tile_size, magnification, mpp, slide_mpp,
                                            min_tissue, thumbnail_size)
        if 0 < max_tiles_per_slide < len(coords):
            pick = np.random.default_rng(seed).choice(len(coords), max_tiles_per_slide,
                                                      replace=False)
            coords = coords[np.sort(pick)]
        mine[i] = (size0, coords)
    grids = {i: g for part in env.gather(mine) for i, g in part.items()}
    if not sum(len(c) for _, c in grids.values()):
        raise ValueError(f"no tissue tile found on {len(paths)} slide(s)")
    return SlideTileSource(paths, [grids[i] for i in range(len(paths))], tile_size)


def pretrain_on_slides(slides, out, tile_size: int = 224, mpp=DEFAULT_MPP, slide_mpp=None,
                       magnification=None, min_tissue: float = 0.5, max_tiles_per_slide: int = 0,
                       **pretrain_args) -> list[dict]:
    """find_tiles, then MAMIM on them read straight from the slides (engine.train.pretrain
    with `pretrain_args`: model, image_size, epochs, batch_size, ...); writes out/tiles.csv.
    Returns the history. Under torchrun the ranks share the tissue search, then train
    data-parallel (DDP) as `pretrain` does."""
    from ssmamba_lite.engine.checkpoint import check_run_folder
    from ssmamba_lite.engine.train import PretrainConfig, pretrain

    seed = pretrain_args.get("seed", 0)
    tiling = {"slides": [str(p) for p in by_size(cohort_slides(slides))],
              "tile_size": tile_size, "mpp": mpp, "slide_mpp": slide_mpp,
              "magnification": magnification, "min_tissue": min_tissue,
              "max_tiles_per_slide": max_tiles_per_slide, "seed": seed}
    record = Path(out) / TILING
    if not pretrain_args.get("resume"):            # refuse before anything is written
        check_run_folder(out, {}, False, pretrain_args.get("overwrite", False), delete=False)
    elif record.is_file() and not pretrain_args.get("overwrite"):
        old = read_json(record)
        for key, value in tiling.items():          # --resume continues the same tiles only
            if old.get(key) != value:
                shown = "another slide list" if key == "slides" else f"{key} {old.get(key)!r}"
                raise ValueError(f"--resume: {out} pretrained on {shown}; this run has "
                                 f"{'other slides' if key == 'slides' else repr(value)}: use "
                                 f"another --out")
    env = setup(pretrain_args.get("device", "auto"), seed)
    source = find_tiles(slides, tile_size, mpp, slide_mpp, magnification, min_tissue,
                        max_tiles_per_slide, seed=seed, env=env)
    pretrain_args.setdefault("image_size", tile_size)
    cfg = PretrainConfig(data=";".join(source.slides), out=str(out), **pretrain_args)
    if env.is_main:
        Path(out).mkdir(parents=True, exist_ok=True)
        save_json(tiling, record)
    history = pretrain(cfg, source=source)
    if env.is_main:
        source.write_csv(Path(out) / "tiles.csv")
    return history
