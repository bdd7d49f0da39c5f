"""Where a training step of ssmamba_lite_tiny spends its CPU time, by kind of operator.

    .venv/bin/python benchmarks/profile_model.py                  # 128 px (batch 8), 512 px (batch 2)
    .venv/bin/python benchmarks/profile_model.py --sizes 128 --top 25
    .venv/bin/python benchmarks/profile_model.py --saved --sizes 512 --model vit_tiny_patch16_224

torch.profiler records two training steps (forward, cross-entropy, backward, SGD) after one
warm-up step; each operator's *self* CPU time is put in one group by its name: the selective
scan (our numba operators), convolutions (forward and backward), layout and gathers (copies,
permutes, cat, gather/scatter of the scan orders), normalisation, element-wise arithmetic and
activations, matrix products, the rest. The shares say what is worth making faster.

--saved instead counts what a training step's memory holds between forward and backward: the
tensors autograd saves for the backward pass, each storage once, by the module (stem, stage,
block) whose forward saved it.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_model import build_model, step  # noqa: E402  (models built, steps taken alike)

GROUPS = (   # (group, substrings of operator names), first match wins
    ("selective scan", ("scan",)),
    ("convolution", ("conv",)),
    ("layout and gathers", ("copy_", "contiguous", "permute", "clone", "cat", "gather",
                            "scatter", "index", "flip", "transpose", "reshape", "view")),
    ("normalisation", ("norm",)),
    ("matrix products", ("mm", "matmul", "linear", "addmm", "bmm")),
    ("element-wise and activations", ("add", "mul", "sub", "div", "exp", "gelu", "silu",
                                      "softplus", "sigmoid", "fill_", "sum", "mean", "pow",
                                      "neg", "where", "zero_")),
)


def group_of(name: str) -> str:
    low = name.lower()
    return next((g for g, keys in GROUPS if any(k in low for k in keys)), "other")


def profile_step(model_name: str, size: int, batch: int):
    _, model = build_model(model_name, size)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 9, (batch,))
    step(model, opt, x, y)                                 # warm-up (numba compiles, caches)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step(model, opt, x, y)
    return prof.key_averages()


def saved_by_module(model_name: str, size: int, batch: int) -> dict:
    """MiB of tensors saved for backward during one forward pass, by module (one level below
    each stage: blocks and patch merging; the top-level module elsewhere)."""
    _, model = build_model(model_name, size)
    where, seen, mib = ["(top)"], set(), defaultdict(float)

    def enter(name):
        def hook(module, inputs):
            where.append(name)                             # (a hook returning None changes nothing)
        return hook

    def leave(module, inputs, output):
        where.pop()

    for name, module in model.named_modules():
        parts = name.split(".")
        if name and len(parts) <= (4 if parts[0] == "stages" else 2):
            module.register_forward_pre_hook(enter(name))
            module.register_forward_hook(leave)

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            parts = where[-1].split(".")
            mib[".".join(parts[:4] if parts[0] == "stages" else parts[:1])] += \
                storage.nbytes() / 2**20
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn(batch, 3, size, size))
    return dict(mib)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ssmamba_lite_tiny")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    p.add_argument("--batch", type=int, default=8, help="batch at sizes up to 256 px")
    p.add_argument("--large-batch", type=int, default=2, help="batch above 256 px")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=0, help="also list the N costliest operators")
    p.add_argument("--saved", action="store_true",
                   help="count the tensors saved for backward by module instead")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for size in args.sizes:
        batch = args.batch if size <= 256 else args.large_batch
        if args.saved:
            mib = saved_by_module(args.model, size, batch)
            print(f"\n{args.model}, {size} px, batch {batch}: tensors saved for backward "
                  f"{sum(mib.values()):.0f} MiB")
            print("| module | MiB |\n|---|---|")
            for name, v in sorted(mib.items(), key=lambda kv: -kv[1]):
                print(f"| {name} | {v:.1f} |")
            continue
        events = profile_step(args.model, size, batch)
        total = sum(e.self_cpu_time_total for e in events)
        shares = defaultdict(float)
        for e in events:
            shares[group_of(e.key)] += e.self_cpu_time_total / total
        print(f"\n{args.model}, {size} px, batch {batch}, {args.threads} threads: self CPU time "
              f"of two training steps, {total / 2e6:.2f} s per step")
        print("| group | share |\n|---|---|")
        for g, share in sorted(shares.items(), key=lambda kv: -kv[1]):
            print(f"| {g} | {100 * share:.1f} % |")
        if args.top:
            print(f"\ncostliest {args.top} operators (self CPU):")
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
                print(f"  {100 * e.self_cpu_time_total / total:5.1f} %  {e.count:4d} calls  "
                      f"[{group_of(e.key)}]  {e.key[:70]}")


if __name__ == "__main__":
    main()
