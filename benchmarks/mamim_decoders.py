"""MAMIM's decoders side by side: the masked loss each reaches, and what a step costs.

    .venv/bin/python benchmarks/mamim_decoders.py                 # 20 epochs, about 15 minutes
    .venv/bin/python benchmarks/mamim_decoders.py --arms linear hierarchical hier-8px
    .venv/bin/python benchmarks/mamim_decoders.py --skip cost \
        --record ssmamba_lite/sample_data/weights/mamim_decoders.json    # what 04 draws

1. Cost: one MAMIM training step (forward, masked loss, backward, AdamW) of `--model` for each
   decoder, interleaved round by round at each of `--sizes`; the median step time and its ratio
   to the linear head's in the same run.
2. Learning: `engine.train.pretrain` at the course's defaults (`--data` plus its unlabelled
   pool `--extra-data`, training patients only; 64 px, batch 64, the default lr and masks), one
   run per arm, same seed. Reported per arm: the masked loss of the first and last epoch (on
   the zoomed, jittered training views), its ratio to the linear head's, and the masked loss of
   the last checkpoint in eval mode on un-augmented tiles under fixed masks, on training tiles
   and on the tiles of the held-out patients (the validation split fine-tuning holds out; no
   image of theirs was pretrained on). Under norm_pix_loss 1.0 is the flat painter (every
   hidden patch its true mean colour).

Arms: linear (SimMIM's head on the last stage), hierarchical (the default top-down decoder),
hier-8px (the same with 8 px mask patches: 64 mask units at 64 px; its loss is on a different
target, patches standardised at 8 px, so compare its downstream effect, not its loss), hier-w64
(decoder width 64), hier-remask (SparK's choice for hidden positions at the deeper stages: a
mask token per stage after every stage, instead of the stem's alone). Each run's folder is kept under --out; a finished run is not redone.

Targets (issue "MAMIM learns at the course's scale"): after 20 epochs the hierarchical loss
<= 0.90 and <= 0.9x the linear head's; a step <= 1.3x the linear head's at 64 and 224 px.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssmamba_lite.course.analysis import load_mamim  # noqa: E402
from ssmamba_lite.course.weights import mean_masked_loss  # noqa: E402
from ssmamba_lite.engine.data import load_image  # noqa: E402
from ssmamba_lite.engine.splits import labelled_parts, pretraining_samples  # noqa: E402
from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig, pretrain  # noqa: E402
from ssmamba_lite.engine.transforms import eval_transform  # noqa: E402
from ssmamba_lite.mamim import MAMIM  # noqa: E402

ARMS = {                     # name: PretrainConfig overrides
    "linear": {"decoder": "linear"},
    "hierarchical": {"decoder": "hierarchical"},
    "hier-8px": {"decoder": "hierarchical", "mask_patch_size": 8},
    "hier-w64": {"decoder": "hierarchical", "decoder_width": 64},
    "hier-remask": {"decoder": "hierarchical", "remask": True},
}


def step_seconds(mamim: MAMIM, opt, x: torch.Tensor, mask: torch.Tensor) -> float:
    t = time.perf_counter()
    loss = mamim(x, mask)[0]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def cost(args) -> list[str]:
    """Median step time per (size, arm), interleaved; ratio to the linear head's."""
    lines = ["| size | batch | arm | median step s | x linear's |", "|---|---|---|---|---|"]
    for size in args.sizes:
        batch = args.batch if size <= 128 else args.large_batch
        runs = {}
        for arm in args.arms:
            torch.manual_seed(0)
            over = ARMS[arm]
            mamim = MAMIM(timm.create_model(args.model, num_classes=0),
                          over.get("mask_patch_size"), decoder=over["decoder"],
                          decoder_width=over.get("decoder_width", 32),
                          remask=over.get("remask", False))
            opt = torch.optim.AdamW(mamim.parameters(), lr=1e-4)
            x = torch.randn(batch, 3, size, size)
            mask = mamim.mask_generator(size)(batch, torch.Generator().manual_seed(0))
            runs[arm] = (mamim, opt, x, mask)
        times = {arm: [] for arm in runs}
        for r in range(args.warmup + args.rounds):
            for arm, run in runs.items():
                t = step_seconds(*run)
                if r >= args.warmup:
                    times[arm].append(t)
        base = statistics.median(times["linear"]) if "linear" in times else float("nan")
        for arm, ts in times.items():
            med = statistics.median(ts)
            lines.append(f"| {size} | {batch} | {arm} | {med:.4f} | {med / base:.2f} |")
    return lines


def tiles(samples, n: int, size: int, seed: int) -> torch.Tensor:
    pick = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([eval_transform(size)(load_image(samples.paths[i])) for i in pick.tolist()])


def learning(args) -> list[str]:
    common = dict(data=args.data, extra_data=args.extra_data, model=args.model,
                  image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
                  seed=args.seed, progress=sys.stderr.isatty())
    base_cfg = PretrainConfig(out=str(Path(args.out) / "_"), **common)
    train = pretraining_samples(base_cfg)
    _, val, _ = labelled_parts(FinetuneConfig(data=args.data, seed=args.seed))
    seen = tiles(train, args.eval_tiles, args.image_size, 1)
    held = tiles(val, args.eval_tiles, args.image_size, 2)
    print(f"pretraining pool {len(train)} tiles; held-out patients' tiles {len(val)} "
          f"(scored on {len(held)})", flush=True)
    results = {}
    for arm in args.arms:
        out = Path(args.out) / arm
        if not (out / "history.json").is_file():
            t = time.perf_counter()
            history = pretrain(PretrainConfig(out=str(out), resume=True, **common, **ARMS[arm]))
            (out / "history.json").write_text(json.dumps(
                {"history": history, "seconds": time.perf_counter() - t}))
        record = json.loads((out / "history.json").read_text())
        mamim = load_mamim(out)
        scores = {name: mean_masked_loss(mamim, x, generator=torch.Generator().manual_seed(3))
                  for name, x in (("train", seen), ("held_out", held))}
        results[arm] = {"first": record["history"][0]["loss"],
                        "last": record["history"][-1]["loss"],
                        "seconds": record["seconds"], **scores}
        print(f"{arm}: loss {results[arm]['first']:.4f} -> {results[arm]['last']:.4f}; "
              f"eval train {scores['train']:.4f}, held out {scores['held_out']:.4f}", flush=True)
    if args.record:
        record = {"command": "python benchmarks/mamim_decoders.py " + " ".join(sys.argv[1:]),
                  "epochs": args.epochs, "model": args.model, "image_size": args.image_size,
                  "batch_size": args.batch_size, "seed": args.seed, "pool": len(train),
                  "eval_tiles": {"train": len(seen), "held_out": len(held)},
                  "arms": {arm: {"loss": [h["loss"] for h in json.loads(
                      (Path(args.out) / arm / "history.json").read_text())["history"]],
                      "eval_train": r["train"], "eval_held_out": r["held_out"],
                      **ARMS[arm]} for arm, r in results.items()}}
        Path(args.record).write_text(json.dumps(record, indent=1) + "\n")
    base = results.get("linear", {}).get("last", float("nan"))
    lines = [f"{args.epochs} epochs, {args.model}, {args.image_size} px, batch {args.batch_size}, "
             f"seed {args.seed}; {len(train)} pretraining tiles; eval on {len(seen)} training "
             f"and {len(held)} held-out tiles under fixed masks (1.0 = the flat painter)", "",
             "| arm | loss epoch 1 | last epoch | x linear's | eval: training tiles | "
             "eval: held-out patients | minutes |", "|---|---|---|---|---|---|---|"]
    for arm, r in results.items():
        lines.append(f"| {arm} | {r['first']:.4f} | {r['last']:.4f} | {r['last'] / base:.3f} | "
                     f"{r['train']:.4f} | {r['held_out']:.4f} | {r['seconds'] / 60:.1f} |")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/mamim_decoders")
    ap.add_argument("--data", default="sample:idc-breast")
    ap.add_argument("--extra-data", default="sample:idc-breast-unlabeled")
    ap.add_argument("--model", default="ssmamba_lite_cpu")
    ap.add_argument("--arms", nargs="+", default=["linear", "hierarchical"], choices=list(ARMS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-tiles", type=int, default=256)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 224], help="for the cost table")
    ap.add_argument("--batch", type=int, default=32, help="cost batch up to 128 px")
    ap.add_argument("--large-batch", type=int, default=4, help="cost batch above 128 px")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--skip", choices=["cost", "learning"], nargs="*", default=[])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", default="", help="also write the loss curves and scores as "
                    "JSON here (notebook 04 draws ssmamba_lite/sample_data/weights/"
                    "mamim_decoders.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    report = []
    if "cost" not in args.skip:
        report += ["MAMIM step, interleaved rounds:", ""] + cost(args) + [""]
    if "learning" not in args.skip:
        report += learning(args)
    text = "\n".join(report) + "\n"
    (Path(args.out) / "summary.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
