"""Slide-level training and evaluation of the MIL aggregators of mil.py.

Inputs: a folder of feature files `<slide>.h5` (features.py) and a labels CSV with columns
`slide,label` (slide = file name without .h5) and optionally `patient_id` and `split`
(train / val / test). Without a split column, whole patients (or slides, without patient ids)
are drawn for test and validation, stratified by class, so that no patient is on two sides.
Validation picks the epoch; the test split is evaluated once, with the picked weights, and
is the number to report (the best validation score is optimistic: it was the one chosen).

Training: AdamW on the cross-entropy of the slide labels, `batch_size` bags per step (padded,
see mil.pad_bags), one validation pass per epoch; the checkpoint of the best validation AUROC
(ties: lower validation loss) is kept. Run folder:
    model.safetensors   weights of the best epoch
    config.json         {"mil_config", "train_config", "classes", "epoch"}
    metrics.json        {"best": val metrics of the best epoch, "history": [per epoch]}
    metrics.csv, events TensorBoard's record of every epoch (engine/tracking.py)
Evaluation writes eval_metrics.json, predictions.csv and, for slides whose feature file holds a
thumbnail, heatmaps/<slide>.png of the attention over the slide.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ssmamba_lite.engine.checkpoint import load_weights, read_json, save_json, save_weights
from ssmamba_lite.engine.data import fold_ratio, held_out_folds, read_table
from ssmamba_lite.engine.device import resolve_device
from ssmamba_lite.engine.metrics import classification_metrics, format_metrics
from ssmamba_lite.engine.tracking import RunLog
from ssmamba_lite.wsi.features import read_features
from ssmamba_lite.wsi.heatmap import save_heatmap
from ssmamba_lite.wsi.mil import MILAggregator, MILConfig, pad_bags


@dataclass
class MILTrainConfig:
    epochs: int = 20
    lr: float = 2e-4
    weight_decay: float = 1e-4
    batch_size: int = 1              # bags per optimizer step
    val_fraction: float = 0.2        # patients held out for epoch selection (no split column)
    test_fraction: float = 0.2       # patients held out for the one final test
    seed: int = 0
    device: str = "auto"


@dataclass
class Bag:
    """One slide: features (n, C) float32, coords (n, 2) level-0 (x, y), label index."""

    name: str
    features: torch.Tensor
    coords: np.ndarray
    label: int
    patient: str
    split: str | None = None
    file: Path | None = None
    encoder: str = ""              # the encoder that made the features (name:fingerprint)


def load_bags(features_dir, labels_csv, classes: list[str] | None = None):
    """Feature files + labels CSV -> (bags, classes). `classes` defaults to the sorted labels.
    A slide without a feature file, or whose file holds no tile, is named in one line and
    left out; the others load."""
    rows = read_table(labels_csv, ("slide", "label"))
    classes = list(classes) if classes else sorted({r["label"] for r in rows})
    bags, missing = [], []
    for r in tqdm(rows, desc="bags", unit="bag", leave=False):
        file = Path(features_dir) / f"{r['slide']}.h5"
        if r["label"] not in classes:
            raise ValueError(f"{labels_csv}: slide {r['slide']} has label {r['label']!r}, "
                             f"not one of the model's classes {classes}")
        if not file.is_file():
            missing.append(r["slide"])
            tqdm.write(f"warning: slide {r['slide']} of {labels_csv} has no feature file "
                       f"{file} (run `ssmamba-lite wsi extract`); left out", file=sys.stderr)
            continue
        d = read_features(file)
        if len(d["features"]) == 0:
            tqdm.write(f"warning: feature file {file} holds no tiles (no tissue found?); "
                       f"left out", file=sys.stderr)
            continue
        encoder = f"{d.get('encoder') or 'unnamed'}:{d.get('encoder_fingerprint') or '?'}"
        bags.append(Bag(r["slide"], torch.from_numpy(d["features"]), d["coords"],
                        classes.index(r["label"]), r.get("patient_id") or r["slide"],
                        r.get("split") or None, file, encoder))
    if not bags:
        raise FileNotFoundError(f"no slide of {labels_csv} has a feature file in {features_dir}")
    first = next((b for b in bags if b.encoder != bags[0].encoder), None)
    if first is not None:                   # features of two encoders are not one feature space
        raise ValueError(f"{features_dir}: {bags[0].name}.h5 holds features of "
                         f"{bags[0].encoder}, {first.name}.h5 of {first.encoder}: extract every "
                         f"slide with one encoder")
    return bags, classes


SPLITS = ("train", "val", "test")


def split_bags(bags: list[Bag], val_fraction: float = 0.2, test_fraction: float = 0.2,
               seed: int = 0) -> dict:
    """{"train", "val", "test"} lists of bags. The CSV's split column when every row has one
    (a partly filled column, another value, or a patient on two sides is an error); else whole
    patients are drawn (seeded), stratified by class: first `test_fraction` of them for test,
    then `val_fraction` of all for validation. Validation picks the epoch; test is only ever
    evaluated once, with the picked weights."""
    given = [b for b in bags if b.split]
    if given:
        if len(given) != len(bags):
            empty = next(b for b in bags if not b.split)
            raise ValueError(f"the split column is filled for {len(given)} of {len(bags)} "
                             f"slides (slide {empty.name} has none): fill it for every slide, "
                             f"or leave it empty for all to draw a patient split")
        bad = sorted({b.split for b in bags} - set(SPLITS))
        if bad:
            raise ValueError(f"split {bad[0]!r} is not one of {', '.join(SPLITS)}")
        sides: dict[str, set] = {}
        for b in bags:
            sides.setdefault(b.patient, set()).add(b.split)
        both = sorted(p for p, s in sides.items() if len(s) > 1)
        if both:
            raise ValueError(f"patient {both[0]} has slides in {' and '.join(sorted(sides[both[0]]))}"
                             f": a split must keep each patient on one side")
        return {s: [b for b in bags if b.split == s] for s in SPLITS}
    rest, test = _hold_out(bags, test_fraction, seed)
    train, val = _hold_out(rest, val_fraction / max(1e-9, 1 - test_fraction), seed + 1)
    return {"train": train, "val": val, "test": test}


def _hold_out(bags: list[Bag], fraction: float, seed: int) -> tuple[list[Bag], list[Bag]]:
    """(kept, held out): whole patients, about `fraction` of them, stratified by class when
    every class has enough patients (`held_out_folds`: a of b folds, a/b the fraction), else
    at random."""
    if fraction <= 0 or not bags:
        return list(bags), []
    patients = [b.patient for b in bags]
    labels = [b.label for b in bags]
    folds = fold_ratio(fraction, len(set(patients))).denominator
    per_class = min(len({p for p, y in zip(patients, labels) if y == c}) for c in set(labels))
    held = held_out_folds(labels, patients, fraction, seed) if per_class >= folds else None
    if held is not None:
        held_set = set(held)
    else:
        order = sorted(set(patients))
        random.Random(seed).shuffle(order)
        chosen = set(order[:math.ceil(fraction * len(order))])
        held_set = {i for i, p in enumerate(patients) if p in chosen}
    return ([b for i, b in enumerate(bags) if i not in held_set],
            [b for i, b in enumerate(bags) if i in held_set])


def _batches(bags: list[Bag], size: int, device):
    for i in range(0, len(bags), size):
        chunk = bags[i:i + size]
        x, mask = pad_bags([b.features.to(device) for b in chunk])
        yield chunk, x, mask, torch.tensor([b.label for b in chunk], device=device)


@torch.no_grad()
def predict_bags(model: MILAggregator, bags: list[Bag], batch_size: int = 8, device="cpu"):
    """-> probabilities (n_bags, K) and a list of attention vectors (n_i,) per bag."""
    model.eval().to(device)
    probs, attention = [], []
    for chunk, x, mask, _ in _batches(bags, batch_size, device):
        logits, a = model(x, mask)
        probs.append(logits.softmax(-1).cpu())
        attention += [a[i, :len(b.features)].cpu().numpy() for i, b in enumerate(chunk)]
    return torch.cat(probs).numpy(), attention


def evaluate_bags(model, bags: list[Bag], classes: list[str], device="cpu") -> dict:
    """classification_metrics of the bags, plus their mean cross-entropy as "loss"."""
    probs, _ = predict_bags(model, bags, device=device)
    labels = np.array([b.label for b in bags])
    m = classification_metrics(labels, probs, classes)
    m["loss"] = float(-np.log(np.clip(probs[np.arange(len(bags)), labels], 1e-12, None)).mean())
    return m


def train_mil(train: list[Bag], val: list[Bag], classes: list[str], out_dir,
              cfg: MILConfig | None = None, tcfg: MILTrainConfig | None = None) -> dict:
    """Train an aggregator on `train`, select the epoch on `val`; returns metrics.json's dict."""
    if not train:
        raise ValueError("train_mil: no training bags")
    tcfg = tcfg or MILTrainConfig()
    cfg = dataclasses.replace(cfg or MILConfig(), in_dim=train[0].features.shape[1],
                              num_classes=len(classes))
    out_dir, device = Path(out_dir), resolve_device(tcfg.device)
    torch.manual_seed(tcfg.seed)
    rng = random.Random(tcfg.seed)
    model = MILAggregator(cfg)
    model.set_feature_stats(b.features for b in train)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    history, best, best_key = [], None, None
    log = RunLog(out_dir)                       # TensorBoard events and metrics.csv
    for epoch in (bar := tqdm(range(1, tcfg.epochs + 1), desc=f"mil {cfg.aggregator}", unit="epoch")):
        model.train()
        order, losses = rng.sample(train, len(train)), []
        for _, x, mask, y in _batches(order, tcfg.batch_size, device):
            loss = F.cross_entropy(model(x, mask)[0], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if val:
            row["val"] = evaluate_bags(model, val, classes, device)
            bar.set_postfix_str(format_metrics(row["val"]))
        history.append(row)
        log.epoch(row, history)
        auroc = row["val"]["auroc"] if val else float("nan")
        key = (-math.inf if math.isnan(auroc) else auroc, -row["val"]["loss"] if val else epoch)
        if best_key is None or key > best_key:
            best, best_key = row, key
            save_weights(model, out_dir / "model.safetensors")
            save_json({"mil_config": dataclasses.asdict(cfg),
                       "train_config": dataclasses.asdict(tcfg), "classes": classes,
                       "epoch": epoch, "feature_encoder": train[0].encoder},
                      out_dir / "config.json")
    log.close()
    result = {"best": best, "history": history}
    save_json(result, out_dir / "metrics.json")
    return result


def save_split(out_dir, split: dict[str, list[Bag]]) -> None:
    """split.json in a run folder: the slides of each part, so that `mil evaluate` can tell
    which slides the run trained on."""
    save_json({k: [b.name for b in v] for k, v in split.items()}, Path(out_dir) / "split.json")


def unseen_bags(run_dir, bags: list[Bag]) -> tuple[list[Bag], str]:
    """(bags to score, what was done): when `bags` hold slides the run in `run_dir` trained on
    (its split.json), only its test slides (else its validation slides) among them, and a
    line saying so; otherwise all of them."""
    record = Path(run_dir) / "split.json"
    if not record.is_file():
        return bags, ""
    split = read_json(record)
    if not {b.name for b in bags} & set(split["train"]):
        return bags, ""
    part = "test" if split.get("test") else "val"
    kept = [b for b in bags if b.name in set(split[part])]
    return kept, (f"scoring the {len(kept)} {part} slides of the run's split ({record}); "
                  f"{len(bags) - len(kept)} others were trained on or picked the epoch "
                  f"(--split all scores every slide)")


def load_mil(run_dir, device="cpu") -> tuple[MILAggregator, list[str]]:
    """A trained aggregator (eval mode) and its class names from a train_mil folder."""
    cfg_file = Path(run_dir) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"MIL checkpoint {cfg_file} does not exist: point at the "
                                f"folder written by `ssmamba-lite mil train`")
    saved = read_json(cfg_file)
    model = MILAggregator(MILConfig(**saved["mil_config"]))
    load_weights(model, Path(run_dir) / "model.safetensors")
    return model.eval().to(device), saved["classes"]


EVALUATION_FILES = ("eval_metrics.json", "predictions.csv")     # what evaluate_mil writes


def evaluate_mil(run_dir, bags: list[Bag], classes: list[str], out_dir,
                 heatmaps: bool = True, device="auto") -> dict:
    """Metrics, predictions.csv and attention heatmaps of a trained aggregator on `bags`."""
    device = resolve_device(device)
    model, _ = load_mil(run_dir, device)
    out_dir = Path(out_dir)
    probs, attention = predict_bags(model, bags, device=device)
    metrics = classification_metrics([b.label for b in bags], probs, classes)
    save_json(metrics, out_dir / "eval_metrics.json")
    with (out_dir / "predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slide", "label", "predicted", *[f"p_{c}" for c in classes]])
        for b, p in zip(bags, probs):
            w.writerow([b.name, classes[b.label], classes[int(p.argmax())], *np.round(p, 6)])
    for b, a in zip(bags, attention) if heatmaps else ():
        d = read_features(b.file)
        if d["thumbnail"] is not None:
            save_heatmap(out_dir / "heatmaps" / f"{b.name}.png", d["thumbnail"], d["coords"], a,
                         d["tile_size0"], d["level0_size"])
    return metrics
