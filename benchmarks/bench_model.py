"""CPU training-step throughput and peak memory: ssmamba_lite_tiny against timm's resnet18 and vit_tiny.

One training step = forward, cross-entropy, backward, SGD update, on a batch of random images.
Models and sizes are interleaved round by round (model A, B, C at 128 px, then at 512 px, ...),
so a slow moment of a shared machine hits all of them alike and the ratios stay meaningful.
Reports the median step time over the rounds and its spread (max/min); when the spread says the
machine was busy (> --busy), the rounds are repeated (up to --repeats times) and the least
disturbed repetition is reported.

Peak memory, for each (model, size) in a fresh process, over a step after two warm-up steps:
- tensor peak: the most bytes of tensors alive at once during the step (activations kept for
  backward, gradients, temporaries), counted op by op (what torch.cuda.max_memory_allocated
  reports on a GPU; parameters and optimizer state held before the step are not counted);
- process peak: the process's peak resident memory during the step (VmHWM), everything
  included: Python, PyTorch, numba's compiler and kernels, the allocator's free lists.

    .venv/bin/python benchmarks/bench_model.py             # 128 px (batch 16), 512 px (batch 2)
    .venv/bin/python benchmarks/bench_model.py --sizes 128 512 1024 --rounds 3
    .venv/bin/python benchmarks/bench_model.py --compiled ssmamba_lite_tiny   # + torch.compile

A model named in --compiled also runs as `<name>+compile`, wrapped in torch.compile (its
compilation happens in the warm-up rounds and is not timed). One named in --checkpointed (by
default ssmamba_lite_tiny and vit_tiny) also runs as `<name>+ckpt`, with timm's
`set_grad_checkpointing()`: blocks recomputed in backward instead of kept. A size that does not fit in memory
for a model is reported as skipped.

Targets: ssmamba_lite_tiny's step at 128 px <= 1.0x resnet18's; at 512 px its img/s >= vit_tiny's
and its peak memory lower (attention's cost grows with the square of the tokens, a scan's
linearly).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import weakref
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import ssmamba_lite  # noqa: F401  (registers ssmamba_lite_* with timm)

REPO = Path(__file__).resolve().parents[1]
MODELS = ("ssmamba_lite_tiny", "resnet18", "vit_tiny_patch16_224")


COMPILED, CHECKPOINTED = "+compile", "+ckpt"


def build_model(name: str, size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(what a step calls, the module whose parameters it updates)."""
    base = name.removesuffix(COMPILED).removesuffix(CHECKPOINTED)
    kwargs = {"img_size": size} if base.startswith("vit") else {}
    model = timm.create_model(base, num_classes=9, **kwargs).train()
    if name.endswith(CHECKPOINTED):
        model.set_grad_checkpointing(True)
    return (torch.compile(model) if name.endswith(COMPILED) else model), model


def step(model, opt, x, y) -> float:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return time.perf_counter() - t0


def batch_for(size: int, args) -> int:
    return args.batch if size <= 256 else args.large_batch


def peak_memory_mib(name: str, size: int, batch: int, threads: int) -> dict | None:
    """{"tensors": tensor peak, "process": process peak} of a step in MiB, measured in a fresh
    process; None when the step does not fit."""
    code = ("import sys, json; sys.argv = ['x']; import benchmarks.bench_model as b; "
            f"print(json.dumps(b.step_memory({name!r}, {size}, {batch}, {threads})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024                    # reported in kB


class TensorPeak(TorchDispatchMode):
    """Counts the bytes of CPU tensor storages alive at once while it is active: each op's new
    outputs are added, and subtracted when PyTorch frees their storage."""

    def __init__(self):
        super().__init__()
        self.sizes, self.now, self.peak = {}, 0, 0

    def _freed(self, key: int) -> None:
        self.now -= self.sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self.sizes and storage.nbytes():     # new storage, not a view
                    self.sizes[key] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._freed, key)
        return out


def step_memory(name: str, size: int, batch: int, threads: int) -> dict:
    """In this process, after two warm-up steps: the tensor peak of one step, and the process's
    peak resident memory during another (MiB)."""
    torch.set_num_threads(threads)
    m, module = build_model(name, size)
    opt = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 9, (batch,))
    for _ in range(2):
        step(m, opt, x, y)
    with open("/proc/self/clear_refs", "w") as f:         # Linux: resets VmHWM to VmRSS
        f.write("5")
    step(m, opt, x, y)
    process = rss_mib("VmHWM")
    with TensorPeak() as counter:
        step(m, opt, x, y)
    return {"tensors": round(counter.peak / 2**20, 1), "process": round(process, 1)}


def time_rounds(runs: dict, rounds: int, warmup: int) -> dict:
    times = {key: [] for key in runs}
    for r in range(warmup + rounds):
        for key, (m, opt, x, y) in runs.items():
            t = step(m, opt, x, y)
            if r >= warmup:
                times[key].append(t)
    return times


def spread_of(times: dict) -> float:
    return max(max(ts) / min(ts) for ts in times.values())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16, help="batch at sizes up to 256 px")
    p.add_argument("--large-batch", type=int, default=2, help="batch above 256 px")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--compiled", nargs="*", default=[],
                   help="models also timed under torch.compile")
    p.add_argument("--checkpointed", nargs="*", default=["ssmamba_lite_tiny", "vit_tiny_patch16_224"],
                   help="models also run with timm's set_grad_checkpointing()")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--busy", type=float, default=1.3,
                   help="a max/min spread above this means the machine was busy: repeat")
    p.add_argument("--repeats", type=int, default=2, help="at most this many repetitions")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.models = (args.models + [f"{name}{COMPILED}" for name in args.compiled]
                   + [f"{name}{CHECKPOINTED}" for name in args.checkpointed])

    runs, skipped = {}, []                                 # (model, size) -> (model, opt, x, y)
    for size in args.sizes:
        for name in args.models:
            try:
                m, module = build_model(name, size)
                opt = torch.optim.SGD(module.parameters(), lr=1e-3, momentum=0.9)
                x = torch.randn(batch_for(size, args), 3, size, size)
                y = torch.randint(0, 9, (batch_for(size, args),))
                step(m, opt, x, y)                         # does it fit?
            except (RuntimeError, MemoryError) as err:
                skipped.append(f"{name} at {size} px: {str(err).splitlines()[0][:80]}")
                continue
            runs[name, size] = (m, opt, x, y)
    params = {name: sum(p.numel() for p in runs[key][1].param_groups[0]["params"])
              for key in runs for name in [key[0]]}
    times = time_rounds(runs, args.rounds, args.warmup)
    for attempt in range(args.repeats):
        if spread_of(times) <= args.busy:
            break
        print(f"spread {spread_of(times):.2f}x > {args.busy}x: the machine was busy, "
              f"repeating the rounds ({attempt + 1}/{args.repeats})", flush=True)
        again = time_rounds(runs, args.rounds, 0)
        if spread_of(again) < spread_of(times):
            times = again
    med = {key: statistics.median(ts) for key, ts in times.items()}
    best = {key: min(ts) for key, ts in times.items()}
    memory = {} if args.no_memory else {
        key: peak_memory_mib(key[0], key[1], batch_for(key[1], args), args.threads)
        for key in runs if not key[0].endswith(COMPILED)}

    batches = ", ".join(f"{s} px: {batch_for(s, args)}" for s in args.sizes)
    print(f"training step, batch ({batches}), {args.threads} threads, median of {args.rounds} "
          f"interleaved rounds (torch {torch.__version__})")
    head = "| model | params (M) | " + " | ".join(f"{s} px img/s" for s in args.sizes)
    ref = "resnet18" if "resnet18" in args.models else None
    if ref:
        head += " | " + " | ".join(f"{s} px step / resnet18's" for s in args.sizes)
    if memory:
        head += " | " + " | ".join(f"{s} px {kind} peak MiB" for kind in ("tensor", "process")
                                   for s in args.sizes)
    print(head + " |")
    print("|" + "---|" * head.count("|"))
    cell = lambda fmt, key, table: fmt(table[key]) if table.get(key) is not None else "-"  # noqa: E731
    for name in args.models:
        if name not in params:
            continue
        row = f"| {name} | {params[name] / 1e6:.2f} | "
        row += " | ".join(cell(lambda t, s=s: f"{batch_for(s, args) / t:.1f}", (name, s), med)
                          for s in args.sizes)
        if ref:
            row += " | " + " | ".join(
                f"{med[name, s] / med[ref, s]:.2f}x" if (name, s) in med and (ref, s) in med
                else "-" for s in args.sizes)
        if memory:
            row += " | " + " | ".join(cell(lambda v, k=kind: f"{v[k]:.0f}", (name, s), memory)
                                      for kind in ("tensors", "process") for s in args.sizes)
        print(row + " |")
    print(f"\nlargest max/min step-time spread over the rounds: {spread_of(times):.2f}x "
          f"(above {args.busy}x the machine was busy even after repeating: rerun)")
    for line in skipped:
        print(f"skipped (does not fit): {line}")
    ours, vit = "ssmamba_lite_tiny", "vit_tiny_patch16_224"
    for label, t in (("median", med), ("best round", best)):
        if (ours, 128) in t and (ref, 128) in t:
            ratio = t[ours, 128] / t[ref, 128]
            print(f"{label:>10}: {ours} step at 128 px = {ratio:.2f}x resnet18's "
                  f"(target <= 1.0x: {'met' if ratio <= 1.0 else 'NOT met'})")
        for name in (ours, ours + CHECKPOINTED):
            if (name, 512) in t and (vit, 512) in t:
                speed = t[vit, 512] / t[name, 512]
                print(f"{label:>10}: {name} img/s at 512 px = {speed:.2f}x vit_tiny's "
                      f"(target >= 1.0x: {'met' if speed >= 1.0 else 'NOT met'})")
    for name in (ours, ours + CHECKPOINTED):
        if memory.get((name, 512)) and memory.get((vit, 512)):
            a, b = memory[name, 512]["tensors"], memory[vit, 512]["tensors"]
            print(f"tensor peak of a step at 512 px: {name} {a:.0f} MiB = {a / b:.2f}x "
                  f"vit_tiny's (target < 1.0x: {'met' if a < b else 'NOT met'}); process peak "
                  f"{memory[name, 512]['process']:.0f} vs {memory[vit, 512]['process']:.0f} MiB")


if __name__ == "__main__":
    main()
