"""Does MAMIM pretraining help? A patient-disjoint experiment on real IDC breast patches, with
error bars over patient splits.

    .venv/bin/python benchmarks/learning_idc.py [--split-seeds 0 1 2 --epochs 8 ...]

Data: `--labelled` (default: the IDC sample inside the package, 955 50x50 H&E patches of 160
patients; give a larger folder with path,label,patient_id for docs/mamim.md's numbers). For every
split seed, the patients are split 80/20, stratified by class: the 20 % are held out and used
for nothing but the final table. Arms, on the same training patients:
    scratch       the model from random weights, supervised
    scratch-long  the same at MAMIM+SFT's compute: its fine-tuning epochs plus as many more as
                  it takes to match MAMIM's image passes (pretrain epochs x pool size)
    mamim+sft     MAMIM on the training images (plus, with --pool train+unlabeled, the
                  unlabelled pool minus every image of a held-out patient), then fine-tuning
                  with layer-wise lr decay (--layer-decay) and an EMA of the weights (--ema-decay)
    probe         the MAMIM encoder frozen, a linear head trained
    resnet18      timm's resnet18 from random weights, the scratch recipe and epochs
each with all training labels and with `--label-fractions` of the training patients. The last
epoch is scored (nothing is selected on the held-out patients).

Statistics: per arm, the mean over split seeds with a 95 % interval; per split seed, the
paired difference MAMIM+SFT minus each other arm, its mean and 95 % interval. The intervals are
the corrected resampled t (course/budget.py: random 80/20 splits share most training patients,
so their scores are not independent). The verdict of
each comparison is computed from that interval: "ahead" or "behind" when it excludes 0, "within
noise" when it covers 0. Every finished run is appended to results.jsonl, so an interrupted
run continues where it stopped; summary.md holds the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssmamba_lite.course.budget import split_interval, split_verdict  # noqa: E402
from ssmamba_lite.engine import data  # noqa: E402
from ssmamba_lite.engine.inference import evaluate  # noqa: E402
from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig, finetune, pretrain  # noqa: E402

ARMS = ("scratch", "scratch-long", "mamim+sft", "probe", "resnet18")
METRICS = ("balanced_accuracy", "auroc", "macro_f1")


def prepare_split(args, split_seed: int, root: Path):
    """Write the split's train/val labels and the MAMIM pool; returns (train, test, pool)."""
    labelled = data.find_labelled(data.resolve_data(args.labelled))
    train, test = data.patient_split(labelled, (0.8, 0.2), seed=split_seed)
    held = set(test.patients)
    data.write_labels_csv(root / "data" / "train" / "labels.csv", train)
    data.write_labels_csv(root / "data" / "val" / "labels.csv", test)
    pool = train
    if args.pool == "train+unlabeled":
        extra = data.find_unlabelled(data.resolve_data(args.unlabelled))
        extra = extra.subset(i for i, g in enumerate(extra.patients) if g not in held)
        pool = data.Samples(train.paths + extra.paths, [-1] * (len(train) + len(extra)),
                            train.patients + extra.patients)
    data.write_labels_csv(root / "data" / "pool" / "images.csv", pool, labelled=False)
    return train, test, pool


def run_split(args, split_seed: int, done: dict, log) -> None:
    root = Path(args.out) / f"split{split_seed}"
    train, test, pool = prepare_split(args, split_seed, root)
    print(f"split {split_seed}: train {len(train)} images of {len(set(train.patients))} "
          f"patients; held out {len(test)} of {len(set(test.patients))}; MAMIM pool "
          f"{len(pool)}", flush=True)
    common = dict(image_size=args.image_size, batch_size=args.batch_size, seed=args.seed,
                  progress=sys.stderr.isatty())
    mamim = root / "mamim"
    # A pretraining run is finished when its row is in results.jsonl: encoder.safetensors is
    # written after every epoch, so a cut run has one too; resume=True finishes it.
    if {"mamim+sft", "probe"} & set(args.arms) and (split_seed, None, "mamim") not in done:
        t = time.perf_counter()
        pretrain(PretrainConfig(data=str(root / "data" / "pool"), out=str(mamim),
                                model=args.model, model_args=args.model_args,
                                epochs=args.pretrain_epochs, lr=args.pretrain_lr,
                                mask_ratio=args.mask_ratio, resume=True, **common))
        log({"split_seed": split_seed, "arm": "mamim", "seconds": time.perf_counter() - t})
    for frac in args.label_fractions:
        for arm in args.arms:
            if (split_seed, frac, arm) in done:
                continue
            epochs = args.epochs
            if arm == "scratch-long":                     # MAMIM's image passes, spent on labels
                n_labelled = len(data.label_subset(train, frac, seed=split_seed))
                epochs += round(args.pretrain_epochs * len(pool) / n_labelled)
            from_mamim = arm in ("mamim+sft", "probe")
            cfg = FinetuneConfig(
                data=str(root / "data"), out=str(root / f"{arm}-labels{frac:g}"), epochs=epochs,
                resume=True,                              # a cut run with no row is finished
                lr=args.lr, label_fraction=frac, split_seed=split_seed,
                model="resnet18" if arm == "resnet18" else args.model,
                model_args={} if arm == "resnet18" else args.model_args,
                init=str(mamim) if from_mamim else "scratch", linear_probe=arm == "probe",
                layer_decay=args.layer_decay if arm == "mamim+sft" else 1.0,
                ema_decay=args.ema_decay if arm == "mamim+sft" else 0.0, **common)
            t = time.perf_counter()
            finetune(cfg)
            seconds = time.perf_counter() - t
            m = evaluate(root / "data" / "val", cfg.out, out=cfg.out)
            log({"split_seed": split_seed, "labels": frac, "arm": arm, "epochs": epochs,
                 **{k: m[k] for k in METRICS}, "n_test": m["n"], "seconds": seconds})


def summarise(rows: list[dict], args) -> str:
    """The two tables (per arm; paired differences) as Markdown, verdicts computed."""
    runs = [r for r in rows if r["arm"] != "mamim"]
    seeds = sorted({r["split_seed"] for r in runs})
    lines = [f"split seeds {seeds}; model {args.model}; {args.epochs} fine-tuning epochs, "
             f"{args.pretrain_epochs} MAMIM epochs; 95 % corrected resampled t-intervals over the splits", "",
             "| labels | arm | epochs | balanced acc. | AUROC | macro-F1 | fine-tune s |",
             "|---|---|---|---|---|---|---|"]
    table = {}
    for frac in args.label_fractions:
        for arm in args.arms:
            got = sorted((r for r in runs if r["labels"] == frac and r["arm"] == arm),
                         key=lambda r: r["split_seed"])
            if not got:
                continue
            table[frac, arm] = {r["split_seed"]: r for r in got}
            cells = []
            for k in METRICS:
                m, lo, hi = split_interval([r[k] for r in got])
                cells.append(f"{m:.3f} [{lo:.3f}, {hi:.3f}]")
            epochs = "/".join(sorted({str(r["epochs"]) for r in got}))
            secs = np.mean([r["seconds"] for r in got])
            lines.append(f"| {frac:.0%} | {arm} | {epochs} | " + " | ".join(cells) +
                         f" | {secs:.0f} |")
    lines += ["", "Paired by split seed, MAMIM+SFT minus each arm (balanced accuracy; AUROC):",
              "", "| labels | MAMIM+SFT minus | balanced acc. | verdict | AUROC | verdict |",
              "|---|---|---|---|---|---|"]
    for frac in args.label_fractions:
        ours = table.get((frac, "mamim+sft"), {})
        for arm in args.arms:
            other = table.get((frac, arm), {})
            both = sorted(set(ours) & set(other))
            if arm == "mamim+sft" or not both:
                continue
            cells = []
            for k in ("balanced_accuracy", "auroc"):
                m, lo, hi = split_interval([ours[s][k] - other[s][k] for s in both])
                cells += [f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]", split_verdict(lo, hi)]
            lines.append(f"| {frac:.0%} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/learning_idc")
    ap.add_argument("--labelled", default="sample:idc-breast",
                    help="labelled IDC patches (path,label,patient_id); a path or sample:NAME")
    ap.add_argument("--unlabelled", default="sample:idc-breast-unlabeled",
                    help="the unlabelled pool of --pool train+unlabeled")
    ap.add_argument("--pool", choices=["train", "train+unlabeled"], default="train")
    ap.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seed", type=int, default=0, help="training seed of every run")
    ap.add_argument("--model", default="ssmamba_lite_cpu")
    ap.add_argument("--model-args", type=json.loads, default={},
                    help='SSMambaConfig overrides as JSON, e.g. \'{"lpr_zero_init": false}\'')
    ap.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs of every arm")
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--pretrain-lr", type=float, default=1.5e-3)
    ap.add_argument("--mask-ratio", type=float, default=0.6)
    ap.add_argument("--layer-decay", type=float, default=0.75, help="MAMIM+SFT only")
    ap.add_argument("--ema-decay", type=float, default=0.0, help="MAMIM+SFT only")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--label-fractions", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / "results.jsonl"
    rows = [json.loads(x) for x in log_file.read_text().splitlines()] if log_file.is_file() else []
    done = {(r["split_seed"], r.get("labels"), r["arm"]) for r in rows}   # mamim: labels None

    def log(row):
        rows.append(row)
        with log_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if "labels" in row:
            print(f"split {row['split_seed']} {row['arm']} labels={row['labels']:g} "
                  f"({row['epochs']} epochs): bal_acc {row['balanced_accuracy']:.4f}  "
                  f"auroc {row['auroc']:.4f}  ({row['seconds']:.0f} s)", flush=True)

    t0 = time.perf_counter()
    for split_seed in args.split_seeds:
        run_split(args, split_seed, done, log)
    summary = summarise(rows, args)
    (out / "summary.md").write_text(summary)
    print("\n" + summary + f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
