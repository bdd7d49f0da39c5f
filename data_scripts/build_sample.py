"""Build the small real sample that ships inside the repository (ssmamba_lite/sample_data/).

    python -m data_scripts.build_sample --source DIR [--out ssmamba_lite/sample_data]

DIR holds the larger real sets this sample is drawn from, laid out as
    DIR/idc_breast/labels.csv              path,label,patient_id,source_repo,md5 (3000 patches)
    DIR/idc_breast_unlabeled/images.csv    path,patient_id (6065 patches, no labels)
    DIR/kather2016_mini/, DIR/nct_crc_he_mini/   class folders + labels.csv
    DIR/wsi/cmu_small_region.svs
(their provenance and licences: ssmamba_lite/sample_data/ATTRIBUTION.md). Image bytes are
copied unchanged: no resizing, no recompression.

What it writes (names as `ssmamba_lite.engine.data.sample_dir` knows them):
    idc-breast/            IDC patches of `--patients` patients drawn at random (seeded), at
                           most `--per-class` per class and patient; labels.csv with a fixed
                           patient-disjoint `split` column (train / val)
    idc-breast-unlabeled/  more patches of the *train* patients only (never a val patient),
                           at most `--unlabelled-per-patient` each; images.csv without labels
    kather2016/, nct-crc-he/   the two colorectal minis, whole
    cmu-small-region/      the slide crop
Nothing here imports torch or the library.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
from collections import defaultdict
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "ssmamba_lite" / "sample_data"


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, fields: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def build_idc(source: Path, out: Path, patients: int, per_class: int, val_fraction: float,
              unlabelled_per_patient: int, seed: int) -> dict:
    """The labelled and unlabelled IDC samples; returns counts for the report."""
    rng = random.Random(seed)
    by_patient = defaultdict(list)
    for r in _rows(source / "idc_breast" / "labels.csv"):
        by_patient[r["patient_id"]].append(r)
    chosen = sorted(by_patient)
    rng.shuffle(chosen)
    chosen = chosen[:patients]
    n_val = round(val_fraction * len(chosen))
    split = {p: "val" if i < n_val else "train" for i, p in enumerate(chosen)}
    picked = []
    for p in sorted(chosen):
        for label in ("idc_negative", "idc_positive"):
            rows = sorted((r for r in by_patient[p] if r["label"] == label), key=lambda r: r["path"])
            rng.shuffle(rows)
            picked += [{**r, "split": split[p]} for r in rows[:per_class]]
    target = out / "idc-breast"
    for r in picked:
        (target / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "idc_breast" / r["path"], target / r["path"])
    _write(target / "labels.csv", ["path", "label", "patient_id", "split", "md5"], picked)

    train_patients = {p for p in chosen if split[p] == "train"}
    pool = defaultdict(list)
    for r in _rows(source / "idc_breast_unlabeled" / "images.csv"):
        if r["patient_id"] in train_patients:
            pool[r["patient_id"]].append(r)
    extra = []
    for p in sorted(pool):
        rows = sorted(pool[p], key=lambda r: r["path"])
        rng.shuffle(rows)
        extra += rows[:unlabelled_per_patient]
    target = out / "idc-breast-unlabeled"
    for r in extra:
        (target / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "idc_breast_unlabeled" / r["path"], target / r["path"])
    _write(target / "images.csv", ["path", "patient_id"], extra)
    return {"labelled": len(picked), "patients": len(chosen), "val_patients": n_val,
            "val": sum(r["split"] == "val" for r in picked), "unlabelled": len(extra)}


def copy_tree(source: Path, target: Path) -> int:
    """Every file of `source` but its MANIFEST.md (ATTRIBUTION.md says it all) -> `target`."""
    n = 0
    for f in sorted(source.rglob("*")):
        if f.is_file() and f.name != "MANIFEST.md":
            (target / f.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target / f.relative_to(source))
            n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--patients", type=int, default=160)
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--unlabelled-per-patient", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args(argv)
    for name in ("idc-breast", "idc-breast-unlabeled", "kather2016", "nct-crc-he",
                 "cmu-small-region"):
        shutil.rmtree(args.out / name, ignore_errors=True)
    counts = build_idc(args.source, args.out, args.patients, args.per_class, args.val_fraction,
                       args.unlabelled_per_patient, args.seed)
    counts["kather2016"] = copy_tree(args.source / "kather2016_mini", args.out / "kather2016")
    counts["nct-crc-he"] = copy_tree(args.source / "nct_crc_he_mini", args.out / "nct-crc-he")
    (args.out / "cmu-small-region").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.source / "wsi" / "cmu_small_region.svs",
                    args.out / "cmu-small-region" / "cmu_small_region.svs")
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{counts}; {size / 1e6:.1f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
