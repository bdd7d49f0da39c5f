"""Converters for tile sets placed by hand: SICAPv2 (Mendeley Data) and Chaoyang (form).

Same contract as `convert.py`, whose CONVERTERS names them: verified source files in,
`<split>/<class>/<image>` out, one row per image. Every structural problem is a ConvertError
whose one line names the file at fault. The helpers both modules use are in
`convert_common.py`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from data_scripts.convert_common import ConvertError, Row, place_image, visible_images
from data_scripts.extract import extract
from data_scripts.registry import Dataset
from data_scripts.xlsx import XlsxError, read_records


def _find(tree: Path, relative: str) -> Path | None:
    """`relative` (e.g. partition/Test/Train.xlsx) at the top of `tree` or one folder down."""
    for base in [tree, *sorted(p for p in tree.iterdir() if p.is_dir())]:
        if (base / relative).is_file():
            return base / relative
    return None


def _records(path: Path, label: str) -> list[dict[str, str]]:
    try:
        return read_records(path)
    except XlsxError as err:
        raise ConvertError(f"{label}: {err}") from None


def _sicap_grade(rec: dict[str, str], where: str, classes: tuple[str, ...]) -> str:
    """One-hot NC/G3/G4/G5 (G4C, cribriform, is a G4 pattern) -> the one grade set."""
    def on(col: str) -> bool:
        try:
            return float(rec.get(col) or 0) > 0
        except ValueError:
            raise ConvertError(f"{where}: {rec.get('image_name')} has {col}="
                               f"{rec.get(col)!r}, not a number") from None

    grades = [c for c in classes if on(c) or (c == "G4" and on("G4C"))]
    if len(grades) != 1:
        raise ConvertError(f"{where}: {rec.get('image_name')} has {len(grades)} grades set "
                           f"among {', '.join(classes)} (expected exactly one)")
    return grades[0]


def sicapv2(ds: Dataset, sources: dict[str, Path], out: Path, work: Path) -> list[Row]:
    """SICAPv2: images/ plus partition/Test/{Train,Test}.xlsx (image_name, NC, G3, G4, G5, G4C).

    The official split is partition/Test; the four cross-validation folds of its training part
    (partition/Validation/Val<k>/Test.xlsx) become the column `cv_fold`. Names like
    16B0001851_Block_Region_1_0_0_xini_6803_yini_59786.jpg start with the slide (biopsy) id,
    which becomes `patient_id` (grouping by it keeps each slide on one side)."""
    (archive,) = (sources[f.name] for f in ds.files)
    tree = extract(archive, work / "sicapv2.d")
    parts = {split: _find(tree, f"partition/Test/{name}.xlsx")
             for split, name in (("train", "Train"), ("test", "Test"))}
    for split, path in parts.items():
        if path is None:
            raise ConvertError(f"{archive.name}: no partition/Test/"
                               f"{split.capitalize()}.xlsx (the official split) inside")
    base = parts["train"].parents[2]  # type: ignore[union-attr]
    images = {f.name: f for f in visible_images(base / "images")} \
        if (base / "images").is_dir() else {}
    if not images:
        raise ConvertError(f"{archive.name}: no images/ folder next to partition/")
    folds: dict[str, str] = {}
    for k in range(1, 5):
        val = base / "partition" / "Validation" / f"Val{k}" / "Test.xlsx"
        if val.is_file():
            for rec in _records(val, f"partition/Validation/Val{k}/Test.xlsx"):
                folds[rec.get("image_name", "")] = str(k)
    rows: list[Row] = []
    for split, path in parts.items():
        where = f"partition/Test/{path.name}"  # type: ignore[union-attr]
        records = _records(path, where)  # type: ignore[arg-type]
        if not records:
            raise ConvertError(f"{where}: no rows under its header")
        for rec in records:
            name = rec.get("image_name", "")
            if not name:
                raise ConvertError(f"{where}: no column image_name (or an empty name)")
            label = _sicap_grade(rec, where, ds.classes)
            if name not in images:
                raise ConvertError(f"{where} lists {name}, which images/ lacks")
            rel = place_image(images.pop(name), out, split, label)
            if rel:
                rows.append({"path": rel, "label": label, "split": split,
                             "patient_id": name.split("_")[0],
                             "cribriform": "1" if float(rec.get("G4C") or 0) > 0 else "0",
                             "cv_fold": folds.get(name, "") if split == "train" else ""})
    shutil.rmtree(tree)
    return rows


def chaoyang(ds: Dataset, sources: dict[str, Path], out: Path, work: Path) -> list[Row]:
    """Chaoyang: train.json / test.json, lists of {"name": <path from the json's folder>,
    "label": 0..3}; label k is ds.classes[k] (normal, serrated, adenocarcinoma, adenoma)."""
    (archive,) = (sources[f.name] for f in ds.files)
    tree = extract(archive, work / "chaoyang.d")
    rows: list[Row] = []
    for split in ("train", "test"):
        lists = sorted(p for p in tree.rglob(f"{split}.json") if "__MACOSX" not in p.parts)
        if not lists:
            raise ConvertError(f"{archive.name}: no {split}.json (the official {split} list) "
                               f"inside")
        where = lists[0]
        try:
            entries = json.loads(where.read_text())
        except ValueError as err:
            raise ConvertError(f"{split}.json: not JSON ({err})") from None
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            try:
                name, code = str(entry["name"]), int(entry["label"])
            except (KeyError, TypeError, ValueError):
                raise ConvertError(f"{split}.json: entry {i} has no name and integer "
                                   f"label") from None
            if not 0 <= code < len(ds.classes):
                raise ConvertError(f"{split}.json: {name} has unknown label {code} "
                                   f"(expected 0..{len(ds.classes) - 1})")
            image = where.parent / name
            if not image.is_file():
                raise ConvertError(f"{split}.json lists {name}, which the archive lacks")
            rel = place_image(image, out, split, ds.classes[code])
            if rel:
                rows.append({"path": rel, "label": ds.classes[code], "split": split})
        if not isinstance(entries, list) or not entries:
            raise ConvertError(f"{split}.json: expected a non-empty list of name/label "
                               f"entries")
    shutil.rmtree(tree)
    return rows

