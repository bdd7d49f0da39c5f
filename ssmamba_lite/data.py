"""Datasets of H&E tiles, patient-grouped splits and the transforms used in training.

A dataset folder is one of:
    <root>/<class>/<image>                      class folders (ImageFolder layout)
    <root>/labels.csv  with path,label[,patient_id]   (paths relative to <root>)
    <root>/{train,val,test}/...                 either of the above per split
    <root>/images.csv  with path[,patient_id]  or any tree of images: *unlabelled* (pretraining)

Patients: tiles of one patient are correlated, so every split here is by patient (the
labels.csv column `patient_id`; without it, each image is its own group).
Bad input fails early with one line that names the culprit (`DataError`).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A problem with the data on disk; the message names the file or folder."""


@dataclass
class Samples:
    """Image paths with integer labels (-1 when unlabelled), patient ids and class names."""

    paths: list[Path]
    labels: list[int]
    patients: list[str]
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> Samples:
        idx = list(idx)
        return Samples([self.paths[i] for i in idx], [self.labels[i] for i in idx],
                       [self.patients[i] for i in idx], list(self.classes))


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _read_csv(path: Path, root: Path, need_label: bool):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "path" not in rows[0] or (need_label and "label" not in rows[0]):
        cols = "path,label[,patient_id]" if need_label else "path[,patient_id]"
        raise DataError(f"{path}: expected a header with columns {cols}")
    for n, r in enumerate(rows, start=2):
        if not (root / r["path"]).is_file():
            raise DataError(f"{path}, line {n}: image {root / r['path']} does not exist")
    return rows


def has_splits(root) -> bool:
    """True when <root> holds train/ and val/ (or test/) sub-folders."""
    root = Path(root)
    return (root / "train").is_dir() and any((root / s).is_dir() for s in SPLITS[1:])


def scan_labelled(root, classes: list[str] | None = None) -> Samples:
    """Find the labelled images under <root> (class folders or labels.csv)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if (root / "labels.csv").is_file():
        rows = _read_csv(root / "labels.csv", root, need_label=True)
        names = sorted({r["label"] for r in rows})
        items = [(root / r["path"], r["label"], r.get("patient_id") or r["path"]) for r in rows]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(f"{root}: no class folders and no labels.csv")
        names, items = [], []
        for folder in folders:
            images = _images_under(folder)
            if not images:
                raise DataError(f"class folder {folder} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
            names.append(folder.name)
            items += [(p, folder.name, str(p.relative_to(root))) for p in images]
    if classes is None:
        if len(names) < 2:
            raise DataError(f"{root}: classification needs at least 2 classes, found {names}")
        classes = names
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(f"{root}: classes {unknown} are not among the model's classes {classes}")
    index = {c: i for i, c in enumerate(classes)}
    return Samples([p for p, _, _ in items], [index[c] for _, c, _ in items],
                   [str(g) for _, _, g in items], list(classes))


def scan_unlabelled(root) -> Samples:
    """All images under <root> (via images.csv or labels.csv when present), labels ignored."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    for name in ("images.csv", "labels.csv"):
        if (root / name).is_file():
            rows = _read_csv(root / name, root, need_label=False)
            paths = [root / r["path"] for r in rows]
            return Samples(paths, [-1] * len(paths), [r.get("patient_id") or r["path"] for r in rows])
    paths = _images_under(root)
    if not paths:
        raise DataError(f"{root}: no images found ({', '.join(sorted(IMAGE_EXTS))})")
    return Samples(paths, [-1] * len(paths), [str(p.relative_to(root)) for p in paths])


def write_labels_csv(path, samples: Samples, labelled: bool = True) -> Path:
    """Write samples as a labels.csv (path,label,patient_id; absolute paths) that
    `scan_labelled` reads back, or an images.csv (path,patient_id) when not `labelled`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id"] if labelled else ["path", "patient_id"])
        for p, y, g in zip(samples.paths, samples.labels, samples.patients):
            p = str(Path(p).resolve())
            w.writerow([p, samples.classes[y], g] if labelled else [p, g])
    return path


def patient_split(samples: Samples, fractions=(0.8, 0.2), seed: int = 0) -> list[Samples]:
    """Split by patient: every patient's images land in exactly one part. Patients are
    shuffled (seeded) and dealt out so that each part gets about its fraction of the images."""
    if not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"patient_split: fractions must sum to 1, got {fractions}")
    groups: dict[str, list[int]] = {}
    for i, g in enumerate(samples.patients):
        groups.setdefault(g, []).append(i)
    order = list(groups)
    np.random.default_rng(seed).shuffle(order)
    bounds = np.cumsum(fractions) * len(samples)
    parts, part, seen = [[] for _ in fractions], 0, 0
    for g in order:
        while part < len(fractions) - 1 and seen >= bounds[part]:
            part += 1
        parts[part] += groups[g]
        seen += len(groups[g])
    return [samples.subset(sorted(p)) for p in parts]


def label_subset(samples: Samples, fraction: float, seed: int = 0) -> Samples:
    """Keep about `fraction` of the patients (and at least one patient of every class), for
    experiments with few labels."""
    if fraction >= 1.0:
        return samples
    keep = set(patient_split(samples, (fraction, 1.0 - fraction), seed)[0].patients)
    for k in range(len(samples.classes)):
        of_k = [g for g, y in zip(samples.patients, samples.labels) if y == k]
        if of_k and not keep.intersection(of_k):
            keep.add(of_k[0])
    return samples.subset(i for i, g in enumerate(samples.patients) if g in keep)


def load_image(path: Path) -> torch.Tensor:
    """RGB image as a uint8 tensor (3, H, W); DataError names a truncated or non-image file."""
    try:
        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def drop_unreadable(samples: Samples) -> tuple[Samples, list[tuple[Path, str]]]:
    """Decode every image once; return the readable ones and (path, reason) for the rest."""
    good, bad = [], []
    for i, p in enumerate(samples.paths):
        try:
            load_image(p)
            good.append(i)
        except DataError as e:
            bad.append((p, str(e)))
    return samples.subset(good), bad


class TileDataset(Dataset):
    """(image, label) pairs; images decoded once and kept in memory when `cache` is set."""

    def __init__(self, samples: Samples, transform=None, cache: bool = True):
        self.samples, self.transform, self.cache = samples, transform, cache
        self._images = [load_image(p) for p in samples.paths] if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        img = self._images[i] if self._images is not None else load_image(self.samples.paths[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.samples.labels[i]


# ---------------------------------------------------------------------------------------------
# Transforms (torchvision v2, on uint8 tensors (3, H, W)).
# ---------------------------------------------------------------------------------------------
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)   # H&E colours vary by lab: a neutral normalisation

# Ruifrok & Johnston stain vectors: optical density OD = -log(I) = [H, E, D] @ RGB_FROM_HED
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)


class RandomHEDJitter(torch.nn.Module):
    """Stain augmentation: in HED space each stain s becomes s·(1 + α) + β,
    α ~ U(-sigma, sigma), β ~ U(-bias, bias); then back to RGB. Input/output float in [0, 1]."""

    def __init__(self, sigma: float = 0.05, bias: float = 0.05):
        super().__init__()
        self.sigma, self.bias = sigma, bias

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        od = -torch.log(img.clamp(min=1e-6)).permute(1, 2, 0)          # (H, W, 3)
        hed = od @ HED_FROM_RGB                                         # stain concentrations
        alpha = 1 + (torch.rand(3) * 2 - 1) * self.sigma
        beta = (torch.rand(3) * 2 - 1) * self.bias
        od = (hed * alpha + beta) @ RGB_FROM_HED
        return torch.exp(-od).clamp(0, 1).permute(2, 0, 1)


class RandomRot90(torch.nn.Module):
    """Rotate by k·90°, k uniform in {0, 1, 2, 3}: tissue has no 'up'."""

    def forward(self, img):
        return torch.rot90(img, int(torch.randint(4, ())), dims=(-2, -1))


def train_transform(image_size: int, stain: bool = True) -> v2.Compose:
    """Resize, flips, 90° rotations, colour + H&E stain jitter, normalise."""
    ops = [v2.Resize((image_size, image_size), antialias=True), v2.RandomHorizontalFlip(),
           v2.RandomVerticalFlip(), RandomRot90(), v2.ToDtype(torch.float32, scale=True)]
    if stain:
        ops += [v2.ColorJitter(0.1, 0.1, 0.1, 0.02), RandomHEDJitter()]
    return v2.Compose(ops + [v2.Normalize(MEAN, STD)])


def eval_transform(image_size: int) -> v2.Compose:
    return v2.Compose([v2.Resize((image_size, image_size), antialias=True),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
