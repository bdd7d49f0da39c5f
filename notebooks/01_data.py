# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The data: tiles, classes, patients, magnifications
#
# **What.** A pathology *tile* (or patch) is a small square cut from a scanned slide of
# H&E-stained tissue: haematoxylin colours nuclei blue-purple, eosin colours cytoplasm and
# stroma pink. A tile dataset is many tiles, each with a class (tumour, stroma, ...) and, when
# known, the patient it comes from.
#
# **Why look first.** Three things decide what a model can learn and how honestly we can
# measure it: what the classes look like, how many tiles each has (class balance), and which
# tiles come from the same patient (tiles of one patient are alike, so a split that puts one
# patient on both sides measures memory, not skill).
#
# On disk, `ssmamba_lite` reads either class folders `<data_dir>/<class>/<image>` or a
# `labels.csv` with columns `path,label[,patient_id]`. When `data_dir` does not exist and
# `dataset` names an entry of the registry (`ssmamba-lite data list`), this notebook downloads
# it there first (checksums verified).
#
# Why magnification gets a section of its own: the SSMamba abstract
# ([arXiv:2604.15711](https://arxiv.org/abs/2604.15711)) names "cross-magnification domain
# shift" ("fixed-scale pretraining hinders adaptation to diverse clinical settings") as the
# first of three problems it addresses. Back: [00 · set-up and tour](00_setup_and_tour.ipynb).

# %% [markdown]
# ## Learning objectives
#
# After this notebook you can
# - read a tile dataset from class folders or a `labels.csv`, and count its tiles, classes and
#   patients;
# - say why class balance calls for balanced accuracy, and why splits go by patient;
# - tell a real change of magnification (a wider or narrower field of view on the slide) from
#   what a single tile can show (a crop, or a blur);
# - name the augmentations training applies, the stain jitter among them.
#
# ## Prerequisites
#
# [00 · set-up and tour](00_setup_and_tour.ipynb) (the package installed and the tour run).
# No pathology background is needed.

# %% tags=["parameters"]
data_dir = "sample:kather2016"   # class folders or labels.csv; or "data:kather2016" ($SSMAMBA_DATA)
dataset = "kather2016"      # registry name, downloaded into data_dir when data_dir is absent
output_dir = "runs/notebooks/01_data"
image_size = 128            # tile size for the magnification and augmentation pictures
batch_size = 8              # augmented views shown of one tile
seed = 0
tiles_per_class = 6
zooms = [0.5, 1.0, 2.0, 4.0]
wsi_path = "sample:cmu-small-region/cmu_small_region.svs"   # a whole slide; empty: skip

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ssmamba_lite.course.figures import save_figure
from ssmamba_lite.engine.data import resolve_data

out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
_ = torch.manual_seed(seed)

# %% [markdown]
# ## 1. Get the data (skipped when it is already there)
#
# `data_scripts` downloads a dataset, checks every file against its published checksum and
# lays it out as `<root>/<dataset>/<split>/<class>/<image>` with a `labels.csv`. Here the root
# is the folder above `data_dir`; if `data_dir` has another name than the dataset, a link
# with that name points at the dataset folder.

# %%
data_path = resolve_data(data_dir)
if data_path.exists():
    print(f"{data_path.resolve()} is there: no download")
elif not dataset:
    raise FileNotFoundError(f"data_dir {data_dir!r} does not exist and no `dataset` is given: "
                            f"set dataset to a name from `ssmamba-lite data list`")
else:
    from data_scripts import registry
    from data_scripts.install import install

    entry = registry.get(dataset)
    print(install(entry, data_path.parent))
    if data_path.name != entry.name:
        data_path.symlink_to(entry.name, target_is_directory=True)
        print(f"{data_path} -> {entry.name}")

# %% [markdown]
# ## 2. What is in it

# %%
from PIL import Image

from ssmamba_lite.engine.data import find_labelled

samples = find_labelled(data_path)
sizes = pd.Series([Image.open(p).size for p in samples.paths[:: max(1, len(samples) // 200)]])
print(f"{len(samples)} tiles, {len(samples.classes)} classes, "
      f"{len(set(samples.patients))} patient groups")
print("tile sizes (a sample):", dict(sizes.value_counts()))
print("classes:", samples.classes)

# %% [markdown]
# ## 3. Tiles per class
#
# Look for what separates the classes: nuclear size and density, gland shapes, how much pink
# stroma, empty (white) areas. These are the cues the model has to find.

# %%
from ssmamba_lite.course.figures import tiles_by_class_figure

fig = tiles_by_class_figure(samples, per_class=tiles_per_class, seed=seed)
save_figure(fig, out, "tiles_per_class")
plt.show()

# %% [markdown]
# ## 4. Class balance
#
# With unequal classes, plain accuracy flatters a model that predicts the big class; that is
# why we also report *balanced accuracy* (the mean recall over classes) and macro F1.

# %%
counts = pd.DataFrame({"class": [samples.classes[y] for y in samples.labels]})
fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(samples.classes)), 3))
sns.countplot(data=counts, x="class", order=samples.classes, ax=ax, color="tab:purple")
ax.set_title("tiles per class")
ax.tick_params(axis="x", rotation=45)
fig.tight_layout()
save_figure(fig, out, "class_balance")
plt.show()

# %% [markdown]
# ## 5. Splitting by patient
#
# `patient_split` deals out *patients*, not tiles: every patient's tiles land on one side.
# (Where the data has no `patient_id`, each tile is its own group.) With two parts it also
# stratifies by class (scikit-learn's `StratifiedGroupKFold`), so that each part gets about its
# share of every class. Below: a check that no patient is on both sides, and each class's
# share of the tiles in each part, printed and drawn. The check means something only when the
# data names its patients: where each tile is its own group it holds by construction (the
# cell after it looks for what such data hides).

# %%
from ssmamba_lite.engine.data import patient_split

train, val = patient_split(samples, (0.8, 0.2), seed=seed)
assert not set(train.patients) & set(val.patients), "a patient on both sides"
print(f"no patient on both sides: {len(set(train.patients))} train and "
      f"{len(set(val.patients))} validation patient groups")
parts = pd.DataFrame([{"part": name, "class": s.classes[y]}
                      for name, s in (("train", train), ("validation", val)) for y in s.labels])
print("share of each part's tiles per class:")
print(pd.crosstab(parts["class"], parts["part"], normalize="columns").round(2))
fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(samples.classes)), 3))
sns.countplot(data=parts, x="class", hue="part", order=samples.classes, ax=ax)
ax.tick_params(axis="x", rotation=45)
ax.set_title(f"patient-grouped split: {len(set(train.patients))} / {len(set(val.patients))} groups")
fig.tight_layout()
save_figure(fig, out, "patient_split")
plt.show()

# %% [markdown]
# **When there are no patient ids.** Kather 2016's original file names carry the image each
# tile was cut from, `CRC-Prim-HE-NN_MMM`, where `CRC-Prim-HE-NN` is one of its ten
# primary-tumour slides; the sample keeps that name for some of its tiles. Without a
# `patient_id` column the split above treated every tile as its own group, so tiles of one
# slide could land on both sides. The cell below groups the tiles whose names carry a slide by
# that slide and asks this split.

# %%
import re

from ssmamba_lite.engine.data import has_patient_ids

slide_of = {str(p): m.group(1) for p in samples.paths
            if (m := re.search(r"(CRC-Prim-HE-\d+)", Path(p).name))}
if has_patient_ids(samples):
    print("this data has patient ids: the check above was a real one")
elif slide_of:
    sides = {}
    for part, name in ((train, "train"), (val, "validation")):
        for path in map(str, part.paths):
            if path in slide_of:
                sides.setdefault(slide_of[path], set()).add(name)
    both = sorted(slide for slide, seen in sides.items() if len(seen) == 2)
    print(f"{len(slide_of)} tiles name their source slide ({len(sides)} slides); slides with "
          f"tiles on both sides of this per-tile split: {', '.join(both) if both else 'none'}")
else:
    print("no patient ids and no slide in the file names: the split is per tile, and nothing "
          "here can check it")

# %% [markdown]
# ## 6. The same tissue at several magnifications
#
# Slides are scanned at 20x or 40x, and tiles are cut at many sizes, so the same structure
# reaches a model at different apparent magnifications; the SSMamba abstract calls the result
# "cross-magnification domain shift". From a single tile we can imitate only part of it.
# `magnify(tile, z)` returns a tile of the same size:
# - $z > 1$, `crop_enlarge`: the centre square of side $H/z$ enlarged to $H$: a narrower field
#   of view at $z$ times the magnification, as a real zoom in would give (but with no detail
#   finer than the scan's);
# - $z < 1$, `down_up_blur`: the tile shrunk by $z$ and enlarged back, a **blur**: detail finer
#   than the new pixel is gone but the field of view stays the same. A real zoom out would show a *wider*
#   field (tissue around the tile), which a tile does not hold; the slide below does.

# %%
from ssmamba_lite.course.figures import image_row
from ssmamba_lite.engine.data import load_image
from ssmamba_lite.mamim import magnify

largest = max(range(len(samples)), key=lambda i: Image.open(samples.paths[i]).size[0])
tile = torch.nn.functional.interpolate(load_image(samples.paths[largest])[None].float(),
                                       size=(image_size, image_size), mode="bilinear",
                                       antialias=True)[0].round().to(torch.uint8)
fig = image_row([magnify(tile, z) for z in zooms],
                [f"{z:g}x: {'crop_enlarge' if z > 1 else 'down_up_blur' if z < 1 else 'the tile'}"
                 for z in zooms])
save_figure(fig, out, "magnifications_of_a_tile")
plt.show()

# %% [markdown]
# A whole-slide image shows the real thing: around one centre, a field of view twice as wide,
# shown at the same number of pixels (half the magnification), holds four times the tissue,
# each structure at half the size.

# %%
slide_file = resolve_data(wsi_path) if wsi_path else None
try:
    import openslide
except ImportError:
    openslide = None
if slide_file is None or not slide_file.is_file() or openslide is None:
    print(f"skipped: no slide at {wsi_path!r} (or openslide missing)")
else:
    slide = openslide.OpenSlide(str(slide_file))
    W0, H0 = slide.dimensions
    cx, cy = W0 // 2, H0 // 2
    views, titles = [], []
    for fov in (256, 512, 1024):
        region = slide.read_region((cx - fov // 2, cy - fov // 2), 0, (fov, fov)).convert("RGB")
        views.append(np.asarray(region.resize((256, 256), Image.LANCZOS)))
        titles.append(f"{fov} px field, x{256 / fov:g}")
    fig = image_row(views, titles, size=3)
    save_figure(fig, out, "magnifications_of_a_slide")
    plt.show()

# %% [markdown]
# ## 7. What training sees: augmentation
#
# Tissue has no "up", and stain colours differ from lab to lab, so training shows each tile
# flipped, rotated by multiples of 90° and with jittered colours, including a jitter of the
# two stains separately in optical-density space (Ruifrok & Johnston):
#
# $$\mathrm{OD} = -\log I,\qquad [H, E, D] = \mathrm{OD}\, M^{-1},\qquad
# s \leftarrow s\,(1+\alpha_s) + \beta_s \ \text{ for each stain } s.$$

# %%
from ssmamba_lite.engine.transforms import train_transform

tf = train_transform(image_size)
views = [tf(tile) for _ in range(batch_size)]
fig = image_row(views, [f"view {i + 1}" for i in range(len(views))], size=1.6)
save_figure(fig, out, "augmentations")
plt.show()

# %% [markdown]
# ## What you learned
#
# - A tile dataset is tiles, classes and (when known) patients; `find_labelled` reads class
#   folders or a `labels.csv`, and this notebook printed how many of each the data has.
# - Unequal classes make plain accuracy flatter the largest class: the course reports balanced
#   accuracy (mean recall over classes) and macro F1.
# - Splits go by patient (`patient_split`), stratified by class. "No patient on both sides"
#   is a real check only when the data names its patients; without ids every tile is its own
#   group and the check cannot fail, and section 5 printed what grouping by the slide names
#   says about this split.
# - A real change of magnification changes the field of view; `magnify` can crop (zoom in) or
#   blur (zoom < 1) a tile, never widen it.
# - Training sees flipped, rotated and colour- and stain-jittered views of each tile.

# %% [markdown]
# ## Self-check
#
# Set each answer in its cell and run it; `check` says "correct" or raises an error.
#
# **Q1.** Validation data: 90% of the tiles are class A, 10% class B. A model predicts A for
# every tile. What is its balanced accuracy? Two decimals.

# %%
from ssmamba_lite.course.quiz import check

q1 = 0.5     # change this to your answer, then run the cell
check("Q1", q1, "f88afaea4207e3bd", decimals=2)

# %% [markdown]
# **Q2.** `magnify(tile, 2.0)` on a 128 x 128 tile: what is the side, in pixels, of the centre
# square that gets enlarged?

# %%
q2 = 64     # change this to your answer
check("Q2", q2, "a68b412c4282555f", decimals=0)

# %% [markdown]
# **Q3.** Why is a split by tile, with tiles of one patient on both sides, a problem even when
# the classes are perfectly balanced?
#
# <details><summary>Answer</summary>
#
# Tiles of one patient share stain, scanner, tissue preparation and the patient's own
# morphology. A model can learn to recognise the patient rather than the class, and a
# validation set holding other tiles of the same patients rewards exactly that: the score
# measures memory of patients, and will not carry over to new patients, which is what a
# diagnostic model meets.
#
# </details>
#
# **Q4.** `magnify(tile, 0.5)` and a real half magnification of the same place: name one
# thing the real one shows that the tile version cannot.
#
# <details><summary>Answer</summary>
#
# The tissue *around* the tile: a real zoom out doubles the field of view (four times the area)
# at the same pixel count. `magnify` with $z < 1$ keeps the field of view and only removes fine
# detail (a blur), as the slide figure of section 6 shows next to the tile figure.
#
# </details>

# %% [markdown]
# ## Exercises
#
# 1. Set `data_dir = "sample:idc-breast"` (and `dataset = ""`): how many patients does it hold,
#    and how balanced are its classes? Compare with `sample:kather2016`.
# 2. Change `seed`: does the patient split still keep each class's share? Which class moves
#    most, and why (count its patients)?
# 3. Set `zooms = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]`: at which zoom does a nucleus fill the tile,
#    and at which do nuclei stop being visible?
# 4. Set `batch_size = 16` for more augmented views: which augmentation changes the colours
#    most? Try `train_transform(image_size, stain=False)` in the last code cell to see.
#
# Next: [02 · the selective scan](02_selective_scan_from_scratch.ipynb) builds the operation
# that SSMamba's DMS module runs over these tiles.
