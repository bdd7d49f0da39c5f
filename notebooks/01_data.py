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

# %% tags=["parameters"]
data_dir = "sample:kather2016"   # class folders or labels.csv; or "data:kather2016" ($SSMAMBA_DATA)
dataset = "kather2016"      # registry name, downloaded into data_dir when data_dir is absent
output_dir = "runs/notebooks/01_data"
image_size = 128            # tile size for the magnification and augmentation pictures
epochs = 1                  # not used here
batch_size = 8              # augmented views shown of one tile
device = "auto"             # not used here
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

from ssmamba_lite.engine.data import scan_labelled

samples = scan_labelled(data_path)
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
# (Where the data has no `patient_id`, each tile is its own group.) Below: the two parts have
# no patient in common, and similar class proportions.

# %%
from ssmamba_lite.engine.data import patient_split

train, val = patient_split(samples, (0.8, 0.2), seed=seed)
assert not set(train.patients) & set(val.patients), "a patient on both sides"
parts = pd.DataFrame([{"part": name, "class": s.classes[y]}
                      for name, s in (("train", train), ("validation", val)) for y in s.labels])
fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(samples.classes)), 3))
sns.countplot(data=parts, x="class", hue="part", order=samples.classes, ax=ax)
ax.tick_params(axis="x", rotation=45)
ax.set_title(f"patient-grouped split: {len(set(train.patients))} / {len(set(val.patients))} groups")
fig.tight_layout()
save_figure(fig, out, "patient_split")
plt.show()

# %% [markdown]
# ## 6. The same tissue at several magnifications
#
# Slides are scanned at 20x or 40x, and tiles are cut at many sizes, so the same structure
# reaches a model at different apparent magnifications; SSMamba's abstract names this
# "domain shift". `magnify(tile, z)` shows a tile at `z` times the magnification, at the same
# size: for $z > 1$ a centre crop of side $H/z$ is enlarged; for $z < 1$ the tile is shrunk by
# $z$ and enlarged back, so the detail finer than the new pixel is gone. (It cannot show what
# lies *outside* the tile: a real zoom out would; the slide below does.)

# %%
from ssmamba_lite.course.figures import image_row
from ssmamba_lite.engine.data import load_image
from ssmamba_lite.mamim import magnify

largest = max(range(len(samples)), key=lambda i: Image.open(samples.paths[i]).size[0])
tile = torch.nn.functional.interpolate(load_image(samples.paths[largest])[None].float(),
                                       size=(image_size, image_size), mode="bilinear",
                                       antialias=True)[0].round().to(torch.uint8)
fig = image_row([magnify(tile, z) for z in zooms], [f"zoom {z:g}x" for z in zooms])
save_figure(fig, out, "magnifications_of_a_tile")
plt.show()

# %% [markdown]
# A whole-slide image shows the real thing: around one centre, a field of view twice as wide
# at half the magnification shows more tissue, each structure at half the size.

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
# Next: **02** builds the selective scan, the operation that SSMamba's DMS module runs over
# these tiles.
