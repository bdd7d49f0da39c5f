"""Does MAMIM pretraining help? A patient-disjoint experiment on the real IDC breast patches.

    .venv/bin/python benchmarks/learning_idc.py [--epochs 6 --pretrain-epochs 6 ...]

Data: `--labelled` (default: the IDC sample inside the package, 955 50x50 H&E patches of 160
patients, 2 classes; give a larger IDC folder with path,label,patient_id for the README's
numbers), split by patient: 80% of the patients train, 20% are held out for testing (never
seen in any stage). Arms, each
trained the same number of fine-tuning epochs on the same training patients:
    (a) scratch      SSMamba-lite tiny, supervised from random weights
    (b) mamim+sft    MAMIM on the training images (labels unused), then supervised fine-tuning
    (c) probe        MAMIM encoder frozen, linear head only
    (d) resnet18     timm resnet18 from random weights, the same recipe
    (e) scratch-long SSMamba-lite tiny from scratch at MAMIM+SFT's compute: its fine-tuning
                     epochs plus as many more as it takes to match MAMIM's image passes
                     (pretrain epochs x pool size), so neither arm gets more encoder updates
each with all training labels and with `--label-fractions` of the training patients.
With --pool train+unlabeled, MAMIM also sees `--unlabelled` (default: the sample's unlabelled
pool) minus every image of a test patient. Prints one table (balanced accuracy, AUROC, macro-F1 on the held-out
patients, wall time per arm, MAMIM time counted separately) and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssmamba_lite.engine import data  # noqa: E402
from ssmamba_lite.engine.inference import evaluate  # noqa: E402
from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig, finetune, pretrain  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/learning_idc")
    ap.add_argument("--labelled", default="sample:idc-breast",
                    help="labelled IDC patches (path,label,patient_id); a path or sample:NAME")
    ap.add_argument("--unlabelled", default="sample:idc-breast-unlabeled",
                    help="the unlabelled pool of --pool train+unlabeled")
    ap.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs of every arm")
    ap.add_argument("--pretrain-epochs", type=int, default=6)
    ap.add_argument("--pool", choices=["train", "train+unlabeled"], default="train")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--label-fractions", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--arms", nargs="+", default=["scratch", "mamim+sft", "probe", "resnet18"],
                    choices=["scratch", "mamim+sft", "probe", "resnet18", "scratch-long"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)

    labelled = data.scan_labelled(data.resolve_data(args.labelled))
    train, test = data.patient_split(labelled, (0.8, 0.2), seed=args.seed)
    assert not set(train.patients) & set(test.patients)
    data.write_labels_csv(out / "data" / "train" / "labels.csv", train)
    data.write_labels_csv(out / "data" / "val" / "labels.csv", test)       # monitored only, never selected on
    pool = train
    if args.pool == "train+unlabeled":
        extra = data.scan_unlabelled(data.resolve_data(args.unlabelled))
        keep = [i for i, g in enumerate(extra.patients) if g not in set(test.patients)]
        extra = extra.subset(keep)
        pool = data.Samples(train.paths + extra.paths, [-1] * (len(train) + len(extra)),
                         train.patients + extra.patients)
    data.write_labels_csv(out / "data" / "pool" / "images.csv", pool, labelled=False)
    print(f"train: {len(train)} images of {len(set(train.patients))} patients; held-out test: "
          f"{len(test)} images of {len(set(test.patients))} patients; MAMIM pool: {len(pool)} images")

    common = dict(image_size=args.image_size, batch_size=args.batch_size, seed=args.seed,
                  progress=sys.stderr.isatty())
    t0 = time.perf_counter()
    needs_mamim = any(a in ("mamim+sft", "probe") for a in args.arms)
    if needs_mamim:
        pretrain(PretrainConfig(data=str(out / "data" / "pool"), out=str(out / "mamim"),
                                epochs=args.pretrain_epochs, **common))
    mamim_s = time.perf_counter() - t0

    rows = []
    for frac in args.label_fractions:
        for arm in args.arms:
            epochs = args.epochs
            if arm == "scratch-long":                    # MAMIM's image passes, spent on labels
                n_labelled = len(data.label_subset(train, frac, seed=args.seed))
                epochs += round(args.pretrain_epochs * len(pool) / n_labelled)
            cfg = FinetuneConfig(
                data=str(out / "data"), out=str(out / f"{arm}-labels{frac:g}"), epochs=epochs,
                lr=args.lr, label_fraction=frac,
                model="resnet18" if arm == "resnet18" else "ssmamba_lite_tiny",
                init=str(out / "mamim") if arm in ("mamim+sft", "probe") else "scratch",
                linear_probe=arm == "probe", **common)
            t = time.perf_counter()
            finetune(cfg)
            seconds = time.perf_counter() - t
            m = evaluate(out / "data" / "val", cfg.out, out=cfg.out)
            rows.append({"labels": frac, "arm": arm, "epochs": epochs,
                         "balanced_accuracy": m["balanced_accuracy"], "auroc": m["auroc"],
                         "macro_f1": m["macro_f1"], "n_test": m["n"], "finetune_s": seconds})
            print(f"{arm} labels={frac:g} ({epochs} epochs): "
                  f"bal_acc {m['balanced_accuracy']:.4f}  "
                  f"auroc {m['auroc']:.4f}  ({seconds:.0f} s)", flush=True)

    (out / "results.json").write_text(json.dumps({"args": vars(args), "mamim_s": mamim_s,
                                                  "rows": rows}, indent=2))
    ran = (f"{args.pretrain_epochs} epochs on {len(pool)} images, {mamim_s:.0f} s"
           if needs_mamim else "not run (no arm needs it)")
    print(f"\nheld-out patients: {len(set(test.patients))} ({len(test)} patches); "
          f"MAMIM pretraining: {ran}")
    print("| labels | arm | epochs | balanced acc. | AUROC | macro-F1 | fine-tune s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['labels']:.0%} | {r['arm']} | {r['epochs']} | "
              f"{r['balanced_accuracy']:.4f} | "
              f"{r['auroc']:.4f} | {r['macro_f1']:.4f} | {r['finetune_s']:.0f} |")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
