"""CPU training-step throughput: ssmamba_lite_tiny against timm's resnet18 and vit_tiny.

One training step = forward, cross-entropy, backward, SGD update, on a batch of random images.
Models and sizes are interleaved round by round (model A, B, C at 64 px, then at 128 px, ...),
so a slow moment of a shared machine hits all of them alike and the ratios stay meaningful.
Reports the median step time over the rounds, and checks the targets with the median and with
the best (least disturbed) round.

    .venv/bin/python benchmarks/bench_model.py                 # batch 16, 2 threads, 64/128/256 px
    .venv/bin/python benchmarks/bench_model.py --rounds 3 --sizes 128
    .venv/bin/python benchmarks/bench_model.py --compiled ssmamba_lite_tiny   # + torch.compile

A model named in --compiled also runs as `<name>+compile`, wrapped in torch.compile (its
compilation happens in the warm-up rounds and is not timed).

Targets: ssmamba_lite_tiny within 1.5x of resnet18's throughput at 128 px; its step time at
256 px at most 4.6x the one at 128 px (4x the tokens: linear cost, where attention's is quadratic).
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import ssmamba_lite  # noqa: F401  (registers ssmamba_lite_* with timm)

MODELS = ("ssmamba_lite_tiny", "resnet18", "vit_tiny_patch16_224")


COMPILED = "+compile"


def make(name: str, size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(what a step calls, the module whose parameters it updates)."""
    base = name.removesuffix(COMPILED)
    kwargs = {"img_size": size} if base.startswith("vit") else {}
    model = timm.create_model(base, num_classes=9, **kwargs).train()
    return (torch.compile(model) if name.endswith(COMPILED) else model), model


def step(model, opt, x, y) -> float:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--compiled", nargs="*", default=[],
                   help="models also timed under torch.compile")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.models = args.models + [f"{name}{COMPILED}" for name in args.compiled]

    runs = {}                                              # (model, size) -> (model, opt, x, y)
    for size in args.sizes:
        for name in args.models:
            m, module = make(name, size)
            opt = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)
            x = torch.randn(args.batch, 3, size, size)
            y = torch.randint(0, 9, (args.batch,))
            runs[name, size] = (m, opt, x, y)
    params = {name: sum(p.numel() for p in runs[name, args.sizes[0]][1].param_groups[0]["params"])
              for name in args.models}
    times = {key: [] for key in runs}
    for r in range(args.warmup + args.rounds):
        for key, (m, opt, x, y) in runs.items():
            t = step(m, opt, x, y)
            if r >= args.warmup:
                times[key].append(t)
    med = {key: statistics.median(ts) for key, ts in times.items()}
    best = {key: min(ts) for key, ts in times.items()}

    print(f"training step, batch {args.batch}, {args.threads} threads, median of {args.rounds} "
          f"interleaved rounds (torch {torch.__version__})")
    head = "| model | params (M) | " + " | ".join(f"{s} px img/s" for s in args.sizes)
    ref = "resnet18" if "resnet18" in args.models else None
    if ref:
        head += " | " + " | ".join(f"{s} px img/s / resnet18's" for s in args.sizes)
    if 128 in args.sizes and 256 in args.sizes:
        head += " | step 256/128"
    print(head + " |")
    print("|" + "---|" * (head.count("|")))
    for name in args.models:
        row = f"| {name} | {params[name] / 1e6:.2f} | "
        row += " | ".join(f"{args.batch / med[name, s]:.1f}" for s in args.sizes)
        if ref:
            row += " | " + " | ".join(f"{med[ref, s] / med[name, s]:.2f}x" for s in args.sizes)
        if 128 in args.sizes and 256 in args.sizes:
            row += f" | {med[name, 256] / med[name, 128]:.2f}x"
        print(row + " |")
    spread = max(max(ts) / min(ts) for ts in times.values())
    print(f"\nlargest max/min step-time spread over the rounds: {spread:.2f}x "
          f"(above ~1.3x means the machine was busy: rerun)")
    ours = "ssmamba_lite_tiny"
    if ref and ours in args.models and 128 in args.sizes:
        for label, t in (("median", med), ("best round", best)):
            ratio = t[ours, 128] / t[ref, 128]
            line = (f"{label:>10}: {ours} step time at 128 px = {ratio:.2f}x resnet18's "
                    f"(target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})")
            if 256 in args.sizes:
                g = t[ours, 256] / t[ours, 128]
                line += f"; 256 px / 128 px = {g:.2f}x (target <= 4.6x: " \
                        f"{'met' if g <= 4.6 else 'NOT met'})"
            print(line)

if __name__ == "__main__":
    main()
