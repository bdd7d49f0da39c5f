"""A constructed MIL benchmark from a labelled *patch* dataset (no whole slides needed).

This is not a slide dataset: it is built here, from patches, to check that the slide-level
pipeline can learn at all. From a labels CSV with path,label,patient_id (e.g. idc_breast):

    for every patient: shuffle its negative and its positive patches (seeded), then draw
                       bags in turn, a negative one and a positive one, while patches last:
        negative bag   n ~ U{bag_size/2 .. bag_size} negative patches
        positive bag   n patches: k ~ U{1 .. witness_fraction * n} positive ones (the
                       "witnesses") and n - k
                       negative ones
                       (a bag that cannot be filled is skipped; leftover patches stay unused)
    bag label        = positive  iff the bag holds >= 1 patch labelled `positive`
    split            = whole patients: `test_fraction` of them for test, `val_fraction` for
                       validation (epoch selection), the rest for training (bags are drawn
                       within a patient, so no patient is on two sides)

Each bag is written like a slide of features.py: `<out>/features/<bag>.h5` (features, coords taken
from the `_x<X>_y<Y>` in the file name when present) and `<out>/labels.csv` with
slide,label,patient_id,split. `mil train` and `mil evaluate` then run on it unchanged.

Patch features: an encoder (features.load_tile_encoder: a trained SSMamba, or random weights as a
baseline), or "colour": mean and standard deviation of R, G, B, H, S, V per patch (12 numbers;
a hand-made baseline that needs no network).
"""

from __future__ import annotations

import csv
import random
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch.nn as nn
from PIL import Image
from tqdm.auto import tqdm

from ssmamba_lite.engine.data import read_table
from ssmamba_lite.engine.device import resolve_device
from ssmamba_lite.wsi.features import encode_tiles, write_features


def make_patch_bags(labels_csv, bag_size: int = 4, positive: str = "idc_positive",
                    witness_fraction: float = 1.0, test_fraction: float = 0.3,
                    val_fraction: float = 0.15, seed: int = 0) -> list[dict]:
    """-> [{"name", "patient", "paths", "label" ("positive"/"negative"), "split"}]."""
    rows = read_table(labels_csv, ("path", "label", "patient_id"))
    root = Path(labels_csv).parent
    by_patient = defaultdict(list)
    for r in rows:
        by_patient[r["patient_id"]].append(r)
    rng = random.Random(seed)
    patients = sorted(by_patient)
    rng.shuffle(patients)
    n_test, n_val = round(test_fraction * len(patients)), round(val_fraction * len(patients))
    split = {p: "test" if i < n_test else "val" if i < n_test + n_val else "train"
             for i, p in enumerate(patients)}
    bags = []
    for patient in sorted(by_patient):
        pool = {kind: sorted((r for r in by_patient[patient] if (r["label"] == positive) == kind),
                             key=lambda r: r["path"]) for kind in (False, True)}
        for patches in pool.values():
            rng.shuffle(patches)
        kind, failed = rng.random() < 0.5, 0                     # True: a positive bag next
        while failed < 2:
            n = rng.randint(max(1, bag_size // 2), bag_size)
            k = rng.randint(1, max(1, int(witness_fraction * n))) if kind else 0   # witnesses
            if len(pool[True]) >= k and len(pool[False]) >= n - k:
                chunk = [pool[True].pop() for _ in range(k)] + [pool[False].pop()
                                                                for _ in range(n - k)]
                rng.shuffle(chunk)
                bags.append({"name": f"{patient}_bag{len(bags)}", "patient": patient,
                             "paths": [root / r["path"] for r in chunk],
                             "label": "positive" if k else "negative", "split": split[patient]})
                failed = 0
            else:
                failed += 1
            kind = not kind
    return bags


def colour_features(images: np.ndarray) -> np.ndarray:
    """(batch, h, w, 3) uint8 RGB -> (batch, 12): mean and std of R, G, B, H, S, V."""
    hsv = np.stack([np.asarray(Image.fromarray(im).convert("HSV")) for im in images])
    x = np.concatenate([images, hsv], axis=-1).astype(np.float32) / 255   # (batch, h, w, 6)
    return np.concatenate([x.mean((1, 2)), x.std((1, 2))], axis=1)


def patch_features(paths: list[Path], encoder: nn.Module | str = "colour", image_size: int = 64,
                   batch_size: int = 64, device="auto") -> np.ndarray:
    """Features of image files: (n, C) float32."""
    device = resolve_device(device)
    if encoder != "colour":
        encoder = encoder.to(device).eval()
    feats = []
    for i in tqdm(range(0, len(paths), batch_size), desc="patch features", unit="batch",
                  leave=False):
        imgs = np.stack([np.asarray(Image.open(p).convert("RGB").resize(
            (image_size, image_size), Image.BILINEAR)) for p in paths[i:i + batch_size]])
        feats.append(colour_features(imgs) if encoder == "colour"
                     else encode_tiles(encoder, imgs, device).numpy())
    return np.concatenate(feats).astype(np.float32)


def _xy(path: Path) -> tuple[int, int]:
    m = re.search(r"_x(\d+)_y(\d+)", path.name)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def write_patch_bags(labels_csv, out_dir, encoder: nn.Module | str = "colour",
                     bag_size: int = 4, witness_fraction: float = 1.0, image_size: int = 64,
                     test_fraction: float = 0.3,
                     val_fraction: float = 0.15, seed: int = 0, max_patients: int | None = None,
                     device="auto") -> Path:
    """Build the benchmark into `out_dir` (features/ and labels.csv); returns labels.csv.
    `max_patients` keeps only the first patients of a seeded shuffle (a smaller, faster set)."""
    bags = make_patch_bags(labels_csv, bag_size, witness_fraction=witness_fraction,
                           test_fraction=test_fraction,
                           val_fraction=val_fraction, seed=seed)
    if max_patients is not None:
        keep = sorted({b["patient"] for b in bags})
        random.Random(seed + 1).shuffle(keep)
        keep = set(keep[:max_patients])
        bags = [b for b in bags if b["patient"] in keep]
    paths = [p for b in bags for p in b["paths"]]
    feats = patch_features(paths, encoder, image_size, device=device)
    out_dir = Path(out_dir)
    start = 0
    for b in bags:
        n = len(b["paths"])
        write_features(out_dir / "features" / f"{b['name']}.h5", feats[start:start + n],
                       [_xy(p) for p in b["paths"]], patient=b["patient"], tile_size0=50)
        start += n
    labels = out_dir / "labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide", "label", "patient_id", "split"])
        w.writerows([b["name"], b["label"], b["patient"], b["split"]] for b in bags)
    return labels
