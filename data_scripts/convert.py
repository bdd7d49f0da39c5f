"""Converters: verified source files -> the toolkit layout `<split>/<class>/<image>`.

Each converter gets the registry entry, the verified source files by name, the output tree
and a scratch folder, and returns one row per image: {'path', 'label', 'split'} plus
'patient_id' (and other columns) where the dataset publishes them. `install.py` writes
those rows to labels.csv. Image bytes are moved, never re-encoded, except where the source
holds arrays (PCam's HDF5, MedMNIST's npz), which become lossless PNG files.

SICAPv2 and Chaoyang have their converters in `convert_families.py`; what every converter
shares (ConvertError, Row, finding and placing images) is in `convert_common.py`.
"""

from __future__ import annotations

import csv
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from data_scripts.convert_common import ConvertError, Row, place_image, visible_images
from data_scripts.convert_families import chaoyang, sicapv2
from data_scripts.extract import extract, gunzip
from data_scripts.registry import Dataset


def image_folders(ds: Dataset, sources: dict[str, Path], out: Path, work: Path) -> list[Row]:
    """Archives of class folders: an image's label is its nearest folder named like a class."""
    classes = set(ds.classes)
    rows: list[Row] = []
    for src in ds.files:
        tree = extract(sources[src.name], work / (src.name + ".d"))
        split = src.split or "all"
        before = len(rows)
        for f in visible_images(tree):
            label = next((p.name for p in f.relative_to(tree).parents if p.name in classes), None)
            if label is None:
                continue  # e.g. BACH's WSI folder: not part of the tile set
            rel = place_image(f, out, split, label)
            if rel:
                rows.append({"path": rel, "label": label, "split": split})
        if len(rows) == before:
            raise ConvertError(f"{src.name}: no image inside a folder named like a class "
                               f"({', '.join(ds.classes)})")
        shutil.rmtree(tree)
    return rows


def _write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")


def pcam_h5(ds: Dataset, sources: dict[str, Path], out: Path, work: Path,
            chunk: int = 4096) -> list[Row]:
    """PCam: gzipped HDF5 `x` (N, 96, 96, 3) uint8 and `y` (N, 1, 1, 1) -> PNG class folders."""
    try:
        import h5py
    except ImportError:
        raise ConvertError("pcam needs h5py: pip install 'ssmamba_lite[data]'") from None
    rows: list[Row] = []
    splits: dict = dict(ds.options.get("splits", {}))  # type: ignore[arg-type]
    for split, tag in splits.items():
        xs, ys = (f"camelyonpatch_level_2_split_{tag}_{k}.h5.gz" for k in "xy")
        x_h5 = gunzip(sources[xs], work / xs[: -len(".gz")])
        y_h5 = gunzip(sources[ys], work / ys[: -len(".gz")])
        with h5py.File(x_h5, "r") as fx, h5py.File(y_h5, "r") as fy:
            if "x" not in fx or "y" not in fy:
                raise ConvertError(f"{xs}/{ys}: expected HDF5 datasets 'x' and 'y'")
            x, y = fx["x"], fy["y"]
            if x.shape[0] != y.shape[0]:
                raise ConvertError(f"{xs}: {x.shape[0]} images but {ys}: {y.shape[0]} labels")
            for start in range(0, x.shape[0], chunk):
                images = x[start:start + chunk]
                labels = np.asarray(y[start:start + chunk]).reshape(len(images), -1)[:, 0]
                for i, (img, lab) in enumerate(zip(images, labels)):
                    label = ds.classes[int(lab)]
                    rel = f"{split}/{label}/{split}_{start + i:06d}.png"
                    _write_png(img, out / rel)
                    rows.append({"path": rel, "label": label, "split": split})
        x_h5.unlink()
        y_h5.unlink()
    return rows


def _npz_member(npz: Path, key: str, chunk: int) -> Iterator[np.ndarray]:
    """Stream the rows of array `key` from an .npz without loading it whole."""
    with zipfile.ZipFile(npz) as zf:
        if key + ".npy" not in zf.namelist():
            raise ConvertError(f"{npz.name}: no array {key!r} (has {', '.join(zf.namelist())})")
        with zf.open(key + ".npy") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            if fortran or dtype.hasobject:
                raise ConvertError(f"{npz.name}: array {key!r} is not a plain C-ordered array")
            row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            for start in range(0, shape[0], chunk):
                n = min(chunk, shape[0] - start)
                buf = fh.read(n * row)
                if len(buf) != n * row:
                    raise ConvertError(f"{npz.name}: array {key!r} is truncated")
                yield np.frombuffer(buf, dtype=dtype).reshape((n, *shape[1:]))


def medmnist_npz(ds: Dataset, sources: dict[str, Path], out: Path, work: Path,
                 chunk: int = 2048) -> list[Row]:
    """MedMNIST: `<split>_images` (N, H, W[, C]) and `<split>_labels` (N, 1) -> PNG folders."""
    (npz,) = (sources[f.name] for f in ds.files)
    rows: list[Row] = []
    for split in ("train", "val", "test"):
        images = _npz_member(npz, f"{split}_images", chunk)
        labels = _npz_member(npz, f"{split}_labels", chunk)
        index = 0
        for img_chunk, lab_chunk in zip(images, labels):
            for img, lab in zip(img_chunk, lab_chunk.reshape(len(lab_chunk), -1)[:, 0]):
                label = ds.classes[int(lab)]
                rel = f"{split}/{label}/{split}_{index:06d}.png"
                _write_png(img, out / rel)
                rows.append({"path": rel, "label": label, "split": split})
                index += 1
    return rows


_BREAKHIS = re.compile(r"^SOB_([BM])_([A-Z]+)-(\d+)-([0-9A-Z]+)-(\d+)-(\d+)\.png$", re.I)
_BREAKHIS_CLASS = {"A": "adenosis", "F": "fibroadenoma", "PT": "phyllodes_tumor",
                   "TA": "tubular_adenoma", "DC": "ductal_carcinoma", "LC": "lobular_carcinoma",
                   "MC": "mucinous_carcinoma", "PC": "papillary_carcinoma"}


def breakhis(ds: Dataset, sources: dict[str, Path], out: Path, work: Path) -> list[Row]:
    """BreakHis: names like SOB_B_A-14-22549AB-40-001.png carry class, patient, magnification."""
    (archive,) = (sources[f.name] for f in ds.files)
    tree = extract(archive, work / "breakhis.d")
    rows: list[Row] = []
    for f in visible_images(tree):
        m = _BREAKHIS.match(f.name)
        if not m:
            continue
        group, code, year, patient, mag, _ = m.groups()
        label = _BREAKHIS_CLASS.get(code.upper())
        if label is None:
            raise ConvertError(f"{f.name}: unknown BreakHis tumour code {code!r}")
        rel = place_image(f, out, "all", label)
        if rel:
            rows.append({"path": rel, "label": label, "split": "all",
                         "patient_id": f"{year}-{patient}", "magnification": f"{mag}X",
                         "tumour": "benign" if group.upper() == "B" else "malignant"})
    if not rows:
        raise ConvertError(f"{archive.name}: no BreakHis image (SOB_*.png) found")
    return rows


_IDC = re.compile(r"^(\d+)_idx5_x(\d+)_y(\d+)_class([01])\.png$")


def idc(ds: Dataset, sources: dict[str, Path], out: Path, work: Path) -> list[Row]:
    """IDC: names like 10253_idx5_x1001_y1001_class0.png carry patient and class."""
    (archive,) = (sources[f.name] for f in ds.files)
    tree = extract(archive, work / "idc.d")
    rows: list[Row] = []
    for f in visible_images(tree):
        m = _IDC.match(f.name)
        if not m:
            continue
        label = ds.classes[int(m.group(4))]
        rel = place_image(f, out, "all", label)
        if rel:
            rows.append({"path": rel, "label": label, "split": "all", "patient_id": m.group(1)})
    if not rows:
        raise ConvertError(f"{archive.name}: no IDC patch (<patient>_idx5_x_y_class*.png) found")
    return rows


def mhist(ds: Dataset, sources: dict[str, Path], out: Path, work: Path) -> list[Row]:
    """MHIST: images.zip plus annotations.csv (Image Name, Majority Vote Label, Partition)."""
    tree = extract(sources[str(ds.options["images"])], work / "mhist.d")
    by_name = {f.name: f for f in visible_images(tree)}
    rows: list[Row] = []
    with open(sources[str(ds.options["annotations"])], newline="") as fh:
        for rec in csv.DictReader(fh):
            try:
                name, label, split = rec["Image Name"], rec["Majority Vote Label"], rec["Partition"]
            except KeyError as err:
                raise ConvertError(f"annotations.csv: missing column {err}") from None
            if label not in ds.classes:
                raise ConvertError(f"annotations.csv: {name} has unknown label {label!r}")
            if name not in by_name:
                raise ConvertError(f"annotations.csv lists {name}, which images.zip lacks")
            rel = place_image(by_name.pop(name), out, split, label)
            if rel:
                rows.append({"path": rel, "label": label, "split": split})
    return rows


CONVERTERS: dict[str, Callable[[Dataset, dict[str, Path], Path, Path], list[Row]]] = {
    "image_folders": image_folders,
    "pcam_h5": pcam_h5,
    "medmnist_npz": medmnist_npz,
    "breakhis": breakhis,
    "idc": idc,
    "mhist": mhist,
    "sicapv2": sicapv2,
    "chaoyang": chaoyang,
}
