"""Datasets of H&E tiles, the labels-CSV reader and patient-grouped splits.

A dataset folder is one of:
    <root>/<class>/<image>                      class folders (ImageFolder layout)
    <root>/labels.csv  with path,label[,patient_id][,split]   (paths relative to <root>)
    <root>/{train,val,test}/...                 either of the above per split
    <root>/images.csv  with path[,patient_id]  or any tree of images: *unlabelled* (pretraining)
A data folder's own split (split folders, or labels.csv's `split` column with train and val or
test rows) is used as it is; without one, runs split by patient themselves.

Where data is named rather than given as a path (`resolve_data`):
    sample:NAME   a small real set that ships inside the package (`sample_dir`,
                  `ssmamba-lite data sample`): idc-breast, idc-breast-unlabeled, kather2016,
                  nct-crc-he, cmu-small-region
    data:NAME     $SSMAMBA_DATA/NAME, where `ssmamba-lite data download NAME` puts a full set

Patients: tiles of one patient are correlated, so every split here is by patient (the
labels.csv column `patient_id`; without it, each image is its own group, named by its path).
Bad input fails early with one line that names the culprit (`DataError`). The transforms
used in training and evaluation are in transforms.py.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
SPLITS = ("train", "val", "test")
SAMPLE_ROOT = Path(__file__).resolve().parents[1] / "sample_data"
DATA_ENV = "SSMAMBA_DATA"                   # where `ssmamba-lite data download` puts datasets


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


def _group(path) -> str:
    """The group (patient) of an image without a patient id: its own absolute path."""
    return os.path.abspath(path)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def read_table(path, columns: tuple) -> list[dict]:
    """The rows of a CSV file with a header, as dicts; a DataError when the file is missing,
    empty or lacks one of `columns`. The one reader of every labels/images CSV of the toolkit
    (tile datasets here, slide labels and patch bags in wsi/)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:     # a BOM is not a column name
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    missing = [c for c in columns if c not in header or not rows]
    if missing:
        raise DataError(f"{path} needs the columns {','.join(columns)} in its header "
                        f"(and at least one row); missing {missing}")
    for n, r in enumerate(rows, start=2):
        if None in r or None in r.values():                       # too many or too few fields
            fields = sum(v is not None for k, v in r.items() if k is not None)
            raise DataError(f"{path}, line {n}: {fields + len(r.get(None) or [])} fields where "
                            f"the header has {len(header)}")
    return rows


def _read_csv(path: Path, root: Path, need_label: bool):
    """The rows of a labels/images CSV, each checked: an image that exists, a relative path
    that stays inside `root`, a label that is not empty, no image listed twice."""
    rows = read_table(path, ("path", "label") if need_label else ("path",))
    first_line: dict = {}
    inside = Path(os.path.normpath(root.absolute()))
    for n, r in enumerate(rows, start=2):
        image = root / r["path"]
        key = Path(os.path.normpath(image.absolute()))    # lexical: symlinked folders are fine
        if not Path(r["path"]).is_absolute() and not key.is_relative_to(inside):
            raise DataError(f"{path}, line {n}: {r['path']} leaves the data folder {root}")
        if not image.is_file():
            raise DataError(f"{path}, line {n}: image {image} does not exist")
        if need_label and not r["label"].strip():
            raise DataError(f"{path}, line {n}: the label of {r['path']} is empty")
        if key in first_line:
            raise DataError(f"{path}, lines {first_line[key]} and {n}: {r['path']} is listed "
                            f"twice")
        first_line[key] = n
    return rows


def sample_dir(name: str) -> Path:
    """The folder of the sample set `name` that ships inside the package (ATTRIBUTION.md in
    its parent folder gives sources and licences)."""
    names = sample_names()
    if name not in names:
        raise DataError(f"no sample set {name!r}; the samples are {names}")
    return SAMPLE_ROOT / name


def sample_names() -> list[str]:
    """The sample sets: the folders of sample_data/ but `weights/` (pretrained weights that
    ship with the course, not a data set)."""
    return sorted(p.name for p in SAMPLE_ROOT.iterdir() if p.is_dir() and p.name != "weights") \
        if SAMPLE_ROOT.is_dir() else []


def resolve_data(spec) -> Path:
    """A data folder (or file) from its spelling: "sample:NAME[/file]" (sample_dir),
    "data:NAME" ($SSMAMBA_DATA/NAME), else a path (~ expanded; relative paths from the current
    folder)."""
    spec = str(spec)
    if spec.startswith("sample:"):
        name, _, rest = spec.removeprefix("sample:").partition("/")
        return sample_dir(name) / rest if rest else sample_dir(name)
    if spec.startswith("data:"):
        if not os.environ.get(DATA_ENV):
            raise DataError(f"{spec}: set {DATA_ENV} to your data root (where `ssmamba-lite "
                            f"data download` puts datasets), or give the folder's path")
        return Path(os.environ[DATA_ENV]).expanduser() / spec.removeprefix("data:")
    return Path(spec).expanduser()


def own_split(root, classes: list[str] | None = None) -> dict | None:
    """The data's own split as {"train": Samples, "val": ..., "test": ...} (parts it lacks are
    absent): train/ with val/ or test/ folders, or a `split` column in labels.csv with train
    rows and val or test rows. None when the data has no split of its own."""
    root = Path(root)
    if (root / "train").is_dir() and any((root / s).is_dir() for s in SPLITS[1:]):
        train = find_labelled(root / "train", classes)
        return _disjoint(root, {"train": train, **{s: find_labelled(root / s, train.classes)
                                                   for s in SPLITS[1:] if (root / s).is_dir()}})
    if not (root / "labels.csv").is_file():
        return None
    split = [r.get("split", "") for r in read_table(root / "labels.csv", ("path",))]
    if "train" not in split or not {"val", "test"} & set(split):
        return None
    samples = find_labelled(root, classes)                # rows in the order of labels.csv
    return _disjoint(root, {s: samples.subset(i for i, x in enumerate(split) if x == s)
                            for s in SPLITS if s in split})


def _disjoint(root, parts: dict) -> dict:
    """`parts` when no patient is in two of them, else a DataError naming one."""
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = sorted(set(parts[a].patients) & set(parts[b].patients))
            if both:
                raise DataError(f"{root}: {len(both)} patient(s) are in both {a} and {b} (e.g. "
                                f"{both[0]!r}): a patient's tiles must stay on one side")
    return parts


def is_labelled(root) -> bool:
    """Whether `root` is laid out as labelled data: split folders, a labels.csv with a label
    column, or (without an images.csv) two or more class folders."""
    root = Path(root)
    if (root / "train").is_dir():
        return True
    if (root / "labels.csv").is_file():
        return "label" in read_table(root / "labels.csv", ("path",))[0]
    if (root / "images.csv").is_file() or not root.is_dir():
        return False
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return len(folders) >= 2


def find_labelled(root, classes: list[str] | None = None) -> Samples:
    """Find the labelled images under <root> (class folders or labels.csv)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if (root / "labels.csv").is_file():
        rows = _read_csv(root / "labels.csv", root, need_label=True)
        names = sorted({r["label"] for r in rows})
        items = [(root / r["path"], r["label"], r.get("patient_id") or _group(root / r["path"]))
                 for r in rows]
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
            items += [(p, folder.name, _group(p)) for p in images]
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


def find_unlabelled(root) -> Samples:
    """All images under <root> (via images.csv or labels.csv when present), labels ignored."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    for name in ("images.csv", "labels.csv"):
        if (root / name).is_file():
            rows = _read_csv(root / name, root, need_label=False)
            paths = [root / r["path"] for r in rows]
            return Samples(paths, [-1] * len(paths),
                           [r.get("patient_id") or _group(p) for r, p in zip(rows, paths)])
    paths = _images_under(root)
    if not paths:
        raise DataError(f"{root}: no images found ({', '.join(sorted(IMAGE_EXTS))})")
    return Samples(paths, [-1] * len(paths), [_group(p) for p in paths])


def write_labels_csv(path, samples: Samples, labelled: bool = True) -> Path:
    """Write samples as a labels.csv (path,label,patient_id; absolute paths) that
    `find_labelled` reads back, or an images.csv (path,patient_id) when not `labelled`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id"] if labelled else ["path", "patient_id"])
        for p, y, g in zip(samples.paths, samples.labels, samples.patients):
            p = str(Path(p).resolve())
            w.writerow([p, samples.classes[y], g] if labelled else [p, g])
    return path


def fold_ratio(fraction: float, n_groups: int) -> Fraction:
    """a/b, the ratio nearest `fraction` with b <= min(100, n_groups): `held_out_folds` holds
    out a of b folds (0.2 -> 1/5, 0.4 -> 2/5, 0.7 -> 7/10)."""
    return Fraction(fraction).limit_denominator(max(2, min(100, n_groups)))


def held_out_folds(labels, groups, fraction: float, seed: int = 0) -> list[int] | None:
    """Indices of about `fraction` of the groups, stratified by class: a of the b folds of
    scikit-learn's StratifiedGroupKFold (shuffled with `seed`), a/b = `fold_ratio`. Rounding
    to one fold of round(1/fraction) would make 0.4, 0.5 and 0.6 all one half. None when
    there are fewer groups than folds, or the ratio is 0 or 1."""
    ratio = fold_ratio(fraction, len(set(groups)))
    if not 0 < ratio < 1 or len(set(groups)) < ratio.denominator:
        return None
    from sklearn.model_selection import StratifiedGroupKFold

    split = StratifiedGroupKFold(ratio.denominator, shuffle=True, random_state=seed % 2**32)
    folds = split.split(np.zeros(len(labels)), labels, groups)
    held = [i for _, fold in itertools.islice(folds, ratio.numerator) for i in fold.tolist()]
    return sorted(held)


def patient_split(samples: Samples, fractions=(0.8, 0.2), seed: int = 0) -> list[Samples]:
    """Split by patient: every patient's images land in exactly one part.

    Two parts of labelled samples are also stratified by class (`held_out_folds`: the smaller
    part is a of b folds, a/b its fraction), so it gets about its fraction of the images of
    every class. Otherwise patients are shuffled (seeded) and dealt out so that each part
    gets about its fraction of the images."""
    if not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"patient_split: fractions must sum to 1, got {fractions}")
    groups: dict[str, list[int]] = {}
    for i, g in enumerate(samples.patients):
        groups.setdefault(g, []).append(i)
    small = int(np.argmin(fractions))
    held = None
    if len(fractions) == 2 and min(samples.labels, default=-1) >= 0 and \
            len(set(samples.labels)) > 1:
        held = held_out_folds(samples.labels, samples.patients, fractions[small], seed)
    if held is not None:
        rest = sorted(set(range(len(samples))) - set(held))
        parts = [rest, held] if small == 1 else [held, rest]
        return [samples.subset(p) for p in parts]
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


def has_patient_ids(samples: Samples) -> bool:
    """Whether the samples carry patient ids (else every image is its own group)."""
    return any(g != _group(p) for p, g in zip(samples.paths, samples.patients))


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
    """(image, label) pairs; images decoded once and kept in memory when `cache` is set.
    `load(path) -> uint8 (3, H, W)` reads one image (default: an image file; a slide's tile
    source passes its own, see wsi/pretrain.py)."""

    def __init__(self, samples: Samples, transform=None, cache: bool = True, load=None):
        self.samples, self.transform, self.cache = samples, transform, cache
        self.load = load or load_image
        self._images = [self.load(p) for p in samples.paths] if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        img = self._images[i] if self._images is not None else self.load(self.samples.paths[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.samples.labels[i]
