"""`ssmamba-lite data layout NAME`: labels.csv for files already in <root>/<name>/, in place.

For sets fetched with the provider's tool or too large to pack (whole slides, BRACS' RoI tree),
nothing is copied, moved or linked: the layout reads the folder as published (plus the
published label files) and writes `<root>/<name>/labels.csv`.

* slide sets: slide,label,patient_id,split,path[,...] - what `ssmamba-lite mil train` reads
  (slide = file stem, as `wsi extract` names feature files; split train/val/test where
  official, empty where not, so that the MIL code draws a patient-grouped split);
* tile sets (BRACS RoI): path,label,split,patient_id - what the tile data loader reads.

Every problem (a missing label file, an unknown class, a slide without a label) is one
LayoutError line that names the file.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path

from data_scripts.registry import Dataset
from data_scripts.xlsx import XlsxError, read_records

SLIDE_EXTS = {".tif", ".tiff", ".svs", ".ndpi", ".mrxs"}
Row = dict[str, str]


class LayoutError(Exception):
    """The folder does not hold what the published layout promises; the message names the file."""


def _files(folder: Path, exts: set[str]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _read_csv(path: Path, what: str) -> list[list[str]]:
    if not path.is_file():
        raise LayoutError(f"{path}: missing ({what})")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [r for r in csv.reader(fh) if any(c.strip() for c in r)]


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


# ----------------------------------------------------------------------------- CAMELYON16
_C16_LABEL = {"normal": "normal", "negative": "normal", "tumor": "tumor", "tumour": "tumor",
              "micro": "tumor", "macro": "tumor", "itc": "tumor", "positive": "tumor"}


def camelyon16(ds: Dataset, folder: Path) -> list[Row]:
    """training/{normal,tumor}/*.tif (label = folder), testing/images/test_*.tif (labels from
    evaluation/reference.csv: slide, class, ...). The bucket's flat images/ folder (normal_*,
    tumor_*, test_*) is read the same way."""
    train: dict[str, tuple[str, Path]] = {}
    test: dict[str, Path] = {}
    for f in _files(folder, {".tif", ".tiff"}):
        parts, stem = f.relative_to(folder).parts, f.stem
        if stem.endswith(("_mask", "_tissue")) or parts[0] not in ("training", "testing", "images"):
            continue  # masks/, background_tissue/ rasters share the names
        kind = stem.split("_")[0].lower()
        if kind == "test":
            test[stem] = f
        elif kind in ("normal", "tumor"):
            folder_label = parts[1] if parts[0] == "training" and len(parts) > 2 else kind
            if folder_label != kind:
                raise LayoutError(f"{f}: a {kind} slide in the {folder_label} folder")
            train[stem] = (kind, f)
    if not train and not test:
        raise LayoutError(f"{folder}: no slide (training/normal, training/tumor, testing/images "
                          f"or images/ with normal_*, tumor_*, test_*.tif)")
    rows = [{"slide": s, "label": lab, "patient_id": s, "split": "train", "path": _rel(f, folder)}
            for s, (lab, f) in sorted(train.items())]
    if test:
        ref = folder / "evaluation" / "reference.csv"
        given: dict[str, str] = {}
        for r in _read_csv(ref, "the test labels; testing/reference.csv is not used"):
            name = Path(r[0].strip()).stem
            if not name.startswith(("test_", "normal_", "tumor_")):
                continue  # a header row
            value = r[1].strip().lower() if len(r) > 1 else ""
            if value not in _C16_LABEL:
                raise LayoutError(f"{ref}: {name} has unknown class {r[1] if len(r) > 1 else ''!r}"
                                  f" (expected Normal/Tumor or negative/itc/micro/macro)")
            given[name] = _C16_LABEL[value]
        for s, (lab, _) in train.items():
            if given.get(s, lab) != lab:
                raise LayoutError(f"{ref}: {s} is {given[s]} but lies in the {lab} folder")
        for s, f in sorted(test.items()):
            if s not in given:
                raise LayoutError(f"{ref}: no label for {s} ({_rel(f, folder)})")
            rows.append({"slide": s, "label": given[s], "patient_id": s, "split": "test",
                         "path": _rel(f, folder)})
    return rows


# ----------------------------------------------------------------------------- CAMELYON17
_C17 = re.compile(r"^(patient_\d+)_node_\d+$")


def camelyon17(ds: Dataset, folder: Path) -> list[Row]:
    """patient_XXX_node_Y.tif under training/center_N/ with stage_labels.csv (patient,stage):
    slide rows carry negative/itc/micro/macro; patient rows (patient_XXX.zip, pN stage) are
    kept as the column pn_stage. Only the training centres' labels are public: split empty."""
    found = sorted(folder.rglob("stage_labels.csv"))
    labels = found[0] if found else folder / "training" / "stage_labels.csv"
    slide_label: dict[str, str] = {}
    stage: dict[str, str] = {}
    for r in _read_csv(labels, "the slide labels of CAMELYON17"):
        name, value = Path(r[0].strip()).stem, (r[1].strip() if len(r) > 1 else "")
        if name.lower() == "patient":
            continue  # header
        if _C17.match(name):
            if value.lower() not in ds.classes:
                raise LayoutError(f"{labels}: {name} has unknown class {value!r} "
                                  f"(expected {', '.join(ds.classes)})")
            slide_label[name] = value.lower()
        else:
            stage[name] = value
    rows = []
    for f in _files(folder, {".tif", ".tiff"}):
        m = _C17.match(f.stem)
        if not m or f.stem not in slide_label:
            continue  # test-centre slides: no public label
        centre = next((p for p in f.relative_to(folder).parts if p.startswith("center_")), "")
        rows.append({"slide": f.stem, "label": slide_label[f.stem], "patient_id": m.group(1),
                     "split": "", "path": _rel(f, folder), "center": centre.removeprefix("center_"),
                     "pn_stage": stage.get(m.group(1), "")})
    if not rows:
        raise LayoutError(f"{folder}: no patient_*_node_*.tif listed in {labels}")
    return rows


# ----------------------------------------------------------------------------- PANDA
def panda(ds: Dataset, folder: Path) -> list[Row]:
    """train.csv (image_id, data_provider, isup_grade, gleason_score) and train_images/<id>.tiff.
    No patient id is published: each biopsy is its own group (patient_id = image_id)."""
    table = folder / "train.csv"
    rows_in = _read_csv(table, "the Kaggle competition's label table")
    header, body = [h.strip() for h in rows_in[0]], rows_in[1:]
    need = ("image_id", "data_provider", "isup_grade", "gleason_score")
    if any(c not in header for c in need):
        raise LayoutError(f"{table}: expected columns {', '.join(need)}, got {', '.join(header)}")
    images = folder / "train_images"
    if not images.is_dir():
        raise LayoutError(f"{images}: missing (the slides, from the competition's data page)")
    rows = []
    for r in body:
        rec = dict(zip(header, r))
        label = f"isup{rec['isup_grade'].strip()}"
        if label not in ds.classes:
            raise LayoutError(f"{table}: {rec['image_id']} has unknown isup_grade "
                              f"{rec['isup_grade']!r} (expected 0..5)")
        rows.append({"slide": rec["image_id"], "label": label, "patient_id": rec["image_id"],
                     "split": "", "path": f"train_images/{rec['image_id']}.tiff",
                     "data_provider": rec["data_provider"], "gleason_score": rec["gleason_score"]})
    return rows


# ----------------------------------------------------------------------------- BRACS
def _bracs_patients(folder: Path) -> dict[str, str]:
    """WSI id -> patient id from BRACS.xlsx (sheet WSI_Information), when it was placed."""
    found = sorted(folder.rglob("BRACS.xlsx"))
    if not found:
        return {}
    try:
        recs = read_records(found[0], "WSI_Information")
    except XlsxError as err:
        raise LayoutError(f"{found[0]}: {err}") from None
    if recs and not {"WSI Filename", "Patient Id"} <= set(recs[0]):
        raise LayoutError(f"{found[0]}: sheet WSI_Information lacks 'WSI Filename' / 'Patient Id'")
    return {Path(r["WSI Filename"]).stem: r["Patient Id"] for r in recs}


def _split_of(parts: tuple[str, ...], path: Path) -> str:
    split = next((p for p in parts if p in ("train", "val", "test")), None)
    if split is None:
        raise LayoutError(f"{path}: not inside a train/, val/ or test/ folder")
    return split


def bracs_roi(ds: Dataset, folder: Path) -> list[Row]:
    """BRACS_RoI/latest_version/{train,val,test}/{0_N,...,6_IC}/BRACS_<wsi>_<class>_<k>.png."""
    patients = _bracs_patients(folder)
    rows = []
    for f in _files(folder, {".png", ".jpg", ".jpeg", ".tif", ".tiff"}):
        parts = f.relative_to(folder).parts
        if "previous_version" in parts:
            continue  # the older release, other class order
        cls = next((p for p in parts[:-1] if re.fullmatch(r"\d_[A-Z]+", p)), None)
        if cls is None:
            continue
        if cls not in ds.classes:
            raise LayoutError(f"{f}: unknown class folder {cls!r} (expected {', '.join(ds.classes)})")
        wsi = "_".join(f.stem.split("_")[:2])
        rows.append({"path": _rel(f, folder), "label": cls, "split": _split_of(parts, f),
                     "patient_id": patients.get(wsi, wsi), "wsi": wsi})
    if not rows:
        raise LayoutError(f"{folder}: no RoI image in a {ds.classes[0]}/ ... class folder")
    return rows


def bracs_wsi(ds: Dataset, folder: Path) -> list[Row]:
    """BRACS_WSI/{train,val,test}/Group_<BT|AT|MT>/Type_<N|PB|UDH|FEA|ADH|DCIS|IC>/<slide>.svs."""
    patients = _bracs_patients(folder)
    rows = []
    for f in _files(folder, SLIDE_EXTS):
        parts = f.relative_to(folder).parts
        kind = next((p for p in parts[:-1] if p.startswith("Type_")), None)
        if kind is None:
            continue
        label = kind.removeprefix("Type_")
        if label not in ds.classes:
            raise LayoutError(f"{f}: unknown class folder {kind!r} (expected Type_"
                              f"{', Type_'.join(ds.classes)})")
        group = next((p.removeprefix("Group_") for p in parts if p.startswith("Group_")), "")
        rows.append({"slide": f.stem, "label": label, "patient_id": patients.get(f.stem, f.stem),
                     "split": _split_of(parts, f), "path": _rel(f, folder), "group": group})
    if not rows:
        raise LayoutError(f"{folder}: no slide inside a Type_<class> folder")
    return rows


LAYOUTS: dict[str, Callable[[Dataset, Path], list[Row]]] = {
    "camelyon16": camelyon16, "camelyon17": camelyon17, "panda": panda,
    "bracs_roi": bracs_roi, "bracs_wsi": bracs_wsi,
}


def write_labels(rows: list[Row], target: Path) -> None:
    """labels.csv, written to a temporary file and renamed (never half written)."""
    first = ["slide", "label", "patient_id", "split"] if "slide" in rows[0] else \
        ["path", "label", "split", "patient_id"]
    columns = first + [k for k in rows[0] if k not in first]
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, target)


def layout(ds: Dataset, root: Path) -> str:
    """Write <root>/<name>/labels.csv for `ds`; a one-line summary."""
    if not ds.layout:
        how = "ssmamba-lite data download " + ds.name if ds.converter or ds.access == "direct" \
            else ds.access_steps
        raise LayoutError(f"{ds.name}: no in-place layout; {how}")
    folder = root / ds.name
    if not folder.is_dir():
        raise LayoutError(f"{folder}: missing; first: {ds.access_steps}")
    rows = LAYOUTS[ds.layout](ds, folder)
    write_labels(rows, folder / "labels.csv")
    counts: dict[str, int] = {}
    for r in rows:
        key = f"{r['split'] or 'no split'}/{r['label']}"
        counts[key] = counts.get(key, 0) + 1
    detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    what = "slides" if "slide" in rows[0] else "images"
    absent = sum(not (folder / r["path"]).is_file() for r in rows)
    note = f"; {absent} listed {what} are not (yet) in {folder}" if absent else ""
    return (f"{ds.name}: {len(rows)} {what} ({detail}) -> {folder / 'labels.csv'}; nothing "
            f"copied{note}")
