"""Does MAMIM pretraining help, and after how many epochs? A budget curve on real IDC patches.

    .venv/bin/python benchmarks/mamim_budget.py             # budgets 0 5 20 60, 3 splits: ~2 h
    .venv/bin/python benchmarks/mamim_budget.py --budgets 0 20 60 200 --labelled DIR

For every split seed the labelled patches are split by patient, 80/20 stratified by class (the
same splits as learning_idc.py); the 20 % are used for nothing but scoring. For every MAMIM
budget E (epochs, each budget its own full schedule; E = 0 is a random encoder):
    pretrain   MAMIM for E epochs on the training patients' tiles plus the unlabelled pool
               minus every tile of a held-out patient (the course's recipe: decoder, masks,
               zooms as `pretrain`'s defaults)
    probe      the encoder frozen, a linear head trained on all training labels
    sft        the encoder fine-tuned (E = 0: from random weights) with all training labels
               and with each of --label-fractions of the training patients; a few-label run
               takes as many optimizer steps as the all-label one (its epochs times the ratio
               of the image counts), so that budgets compare at equal steps
Every fine-tuning uses the same recipe at every budget (lr, epochs, layer decay): only the
starting weights differ. The last epoch is scored (nothing is selected on held-out patients).
Balanced accuracy reads the classifier at its 0.5 threshold, AUROC its ranking alone: a gain
in AUROC without one in balanced accuracy is a better ranking with a threshold left behind.

Statistics (ssmamba_lite/course/budget.py, which notebook 05 uses too): per (arm, labels,
budget) the mean over split seeds and its 95 % t-interval; per split seed the paired
difference budget E minus budget 0, its mean and 95 % t-interval, and a verdict computed from
that interval ("ahead" / "behind" when it excludes 0, "within noise" when it covers 0). Every finished run is appended to results.jsonl (an interrupted or extended
run continues where it stopped: add budgets or split seeds and run again); summary.md holds
the tables, budget_curve.png the curve.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_idc import prepare_split  # noqa: E402

from ssmamba_lite.course.budget import budget_figure, summary_tables  # noqa: E402
from ssmamba_lite.engine import data  # noqa: E402
from ssmamba_lite.engine.inference import evaluate  # noqa: E402
from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig, finetune, pretrain  # noqa: E402

METRICS = ("balanced_accuracy", "auroc")


def runs_of(args, split_seed: int, budget: int, train) -> list[tuple[str, float, int]]:
    """(arm, label fraction, fine-tuning epochs) of one budget."""
    out = [("probe", 1.0, args.probe_epochs)]
    n_all = len(train)
    for frac in args.label_fractions:
        n = len(data.label_subset(train, frac, seed=split_seed))
        out.append(("sft", frac, max(1, round(args.epochs * n_all / n))))   # equal steps
    return out


def run_split(args, split_seed: int, done: set, log) -> None:
    root = Path(args.out) / f"split{split_seed}"
    args.pool = "train+unlabeled"
    train, test, pool = prepare_split(args, split_seed, root)
    print(f"split {split_seed}: train {len(train)} images of {len(set(train.patients))} "
          f"patients; held out {len(test)} of {len(set(test.patients))}; MAMIM pool "
          f"{len(pool)}", flush=True)
    common = dict(image_size=args.image_size, batch_size=args.batch_size, seed=args.seed,
                  model=args.model, progress=sys.stderr.isatty())
    for budget in args.budgets:
        mamim = root / f"mamim-e{budget}"
        if budget > 0 and (split_seed, budget, "pretrain") not in done:   # resumes a cut run
            t = time.perf_counter()
            pretrain(PretrainConfig(data=str(root / "data" / "pool"), out=str(mamim),
                                    epochs=budget, lr=args.pretrain_lr, resume=True,
                                    mask_ratio=args.mask_ratio, mask_patch_size=args.mask_patch,
                                    decoder_width=args.decoder_width, **common))
            log({"split_seed": split_seed, "budget": budget, "arm": "pretrain",
                 "seconds": time.perf_counter() - t})
        for arm, frac, epochs in runs_of(args, split_seed, budget, train):
            if (split_seed, budget, arm, frac) in done:
                continue
            cfg = FinetuneConfig(
                data=str(root / "data"), out=str(root / f"{arm}-e{budget}-labels{frac:g}"),
                resume=True,                              # a cut run with no row is finished
                epochs=epochs, lr=args.lr, label_fraction=frac, split_seed=split_seed,
                init=str(mamim) if budget > 0 else "scratch", linear_probe=arm == "probe",
                layer_decay=args.layer_decay, **common)
            t = time.perf_counter()
            finetune(cfg)
            seconds = time.perf_counter() - t
            m = evaluate(root / "data" / "val", cfg.out, out=cfg.out)
            log({"split_seed": split_seed, "budget": budget, "arm": arm, "labels": frac,
                 "epochs": epochs, **{k: m[k] for k in METRICS}, "n_test": m["n"],
                 "seconds": seconds})


def key(r: dict) -> tuple:
    return (r["split_seed"], r["budget"], r["arm"]) + ((r["labels"],) if "labels" in r else ())


RECIPE = ("model", "image_size", "batch_size", "seed", "pretrain_lr", "mask_ratio", "mask_patch",
          "decoder_width", "epochs", "probe_epochs", "lr", "layer_decay")


def check_recipe(path: Path, args, ap) -> None:
    """One --out holds one recipe: a run with other settings there would mix its rows in."""
    recipe = {k: getattr(args, k) for k in RECIPE}
    if path.is_file():
        old = json.loads(path.read_text())
        changed = [f"--{k.replace('_', '-')} {old[k]} -> {recipe[k]}" for k in RECIPE
                   if k in old and old[k] != recipe[k]]
        if changed and not args.summarise_only:
            ap.error(f"{path} was written with other settings ({', '.join(changed)}): "
                     f"give another --out")
    elif not args.summarise_only:
        path.write_text(json.dumps(recipe, indent=1) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/mamim_budget")
    ap.add_argument("--labelled", default="sample:idc-breast",
                    help="labelled IDC patches (path,label,patient_id); a path or sample:NAME")
    ap.add_argument("--unlabelled", default="sample:idc-breast-unlabeled",
                    help="the unlabelled pool MAMIM also trains on")
    ap.add_argument("--budgets", type=int, nargs="+", default=[0, 5, 20, 60])
    ap.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seed", type=int, default=0, help="training seed of every run")
    ap.add_argument("--model", default="ssmamba_lite_cpu")
    ap.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs with all labels")
    ap.add_argument("--probe-epochs", type=int, default=5)
    ap.add_argument("--pretrain-lr", type=float, default=1.5e-3)
    ap.add_argument("--mask-ratio", type=float, default=0.6, help="MAMIM's hidden fraction")
    ap.add_argument("--mask-patch", type=int, default=0,
                    help="MAMIM's mask patch in pixels (0: sized to the image, 16 at 64 px)")
    ap.add_argument("--decoder-width", type=int, default=32, help="the decoder's channels")
    ap.add_argument("--layer-decay", type=float, default=1.0, help="every fine-tuning run")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--label-fractions", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--summarise-only", action="store_true", help="tables and plot, no runs")
    args = ap.parse_args(argv)
    if 0 not in args.budgets:
        ap.error("--budgets must include 0 (the random encoder every budget is paired with)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / "results.jsonl"
    check_recipe(out / "recipe.json", args, ap)
    rows = [json.loads(x) for x in log_file.read_text().splitlines()] if log_file.is_file() else []
    done = {key(r) for r in rows}

    def log(row):
        rows.append(row)
        with log_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if "labels" in row:
            print(f"split {row['split_seed']} E={row['budget']} {row['arm']} "
                  f"labels={row['labels']:g} ({row['epochs']} epochs): bal_acc "
                  f"{row['balanced_accuracy']:.4f}  auroc {row['auroc']:.4f}  "
                  f"({row['seconds']:.0f} s)", flush=True)

    t0 = time.perf_counter()
    if not args.summarise_only:
        for split_seed in args.split_seeds:
            run_split(args, split_seed, done, log)
    seeds = sorted({r["split_seed"] for r in rows})
    summary = (f"split seeds {seeds}; {args.model}, {args.image_size} px; MAMIM budgets "
               f"{sorted({r['budget'] for r in rows})} epochs; 95 % t-intervals over the "
               f"splits (ssmamba_lite/course/budget.py)\n\n" + summary_tables(rows))
    (out / "summary.md").write_text(summary)
    budget_figure(rows).savefig(out / "budget_curve.png", dpi=120)
    print("\n" + summary + f"\ntotal {time.perf_counter() - t0:.0f} s; {out / 'budget_curve.png'}")


if __name__ == "__main__":
    main()
