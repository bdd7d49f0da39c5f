"""One GPU check: scan parity, bf16 training steps, and throughput against ViT and ResNet.

    make gpu-check                                    (after make install)
    PYTHONPATH=. python benchmarks/gpu_check.py --out DIR       (a stock CUDA PyTorch image:
                                                                 torch, triton, timm, numba)

1. Parity of every CUDA scan backend present here (mamba-ssm's kernel, Triton, the chunked
   torch scan) against the reference loop, in float32 and bfloat16, outputs and the gradients
   of every input, for fixed, shared and DMS's grouped B/C; and the scan's speed (fwd+bwd)
   as ratios to the reference.
2. bf16-autocast training steps of ssmamba_lite_tiny (DMS), a mamba1d-mixer model, Mamba-MIL
   and MAMIM pretraining, each 20 steps on one fixed batch: the losses must stay finite and fall.
3. Training-step throughput (img/s) and peak memory against timm's vit_small_patch16_224 and
   resnet50 at 224 px and 1024 px (ViT's attention is quadratic in the tokens).
Writes DIR/gpu_check.json and DIR/gpu_check.md; exits 1 on a parity failure or a non-finite or
non-falling loss. Without a GPU it says so, runs the Triton kernels in Triton's interpreter on
small CPU shapes (the parity part only) and exits 0 unless they disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

GPU = torch.cuda.is_available()
if not GPU:                               # must be set before Triton's first import (timm's)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import timm  # noqa: E402

from ssmamba_lite.kernels.oracle import random_scan_inputs  # noqa: E402
from ssmamba_lite.mamim import MAMIM, MaskGenerator  # noqa: E402
from ssmamba_lite.scan import backend_report, selective_scan  # noqa: E402
from ssmamba_lite.wsi.mil import MILAggregator, MILConfig  # noqa: E402

TOL = {torch.float32: 1e-3, torch.bfloat16: 5e-2}   # max error / max magnitude


def scan_inputs(bc, dtype, device, batch=2, D=16, L=128, N=8, G=4, seed=0):
    """Every argument of the scan, Δ raw (softplus'd by the scan), A, D and delta_bias in
    float32 as under autocast, recording gradients."""
    return random_scan_inputs(batch, D, L, N, bc=bc, G=G, delta=("normal", 0.0, 1.0),
                              dtype=dtype, param_dtype=torch.float32, device=device, seed=seed,
                              requires_grad=True)


def scan_outputs(t, backend):
    out, last = selective_scan(**t, delta_softplus=True, return_last_state=True, backend=backend)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
    loss = (out.float() * w).sum() + last.float().sum()
    grads = torch.autograd.grad(loss, list(t.values()))
    return [out.float(), last.float(), *[g.float() for g in grads]]


def parity(backends, device, dtypes, report) -> bool:
    ok = True
    for dtype in dtypes:
        for bc in ("fixed", "shared", "grouped"):
            t = scan_inputs(bc, dtype, device)
            ref = scan_outputs({k: v.detach().float().cpu().requires_grad_()
                                for k, v in t.items()}, "reference")
            for backend in backends:
                got = scan_outputs(t, backend)
                err = max(((a.cpu() - b).abs().max() / (b.abs().max() + 1e-6)).item()
                          for a, b in zip(got, ref))
                passed = err <= TOL[dtype]
                ok &= passed
                report["parity"].append({"backend": backend, "dtype": str(dtype)[6:],
                                         "layout": bc, "rel_err": err, "ok": passed})
                print(f"parity {backend:8s} {str(dtype)[6:]:9s} {bc:8s} rel err {err:.1e} "
                      f"{'ok' if passed else 'FAILED'}", flush=True)
    return ok


def timed(fn, repeat=5) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def scan_speed(backends, report) -> None:
    t = scan_inputs("shared", torch.float32, "cuda", batch=8, D=192, L=784, N=16)
    secs = {b: timed(lambda b=b: scan_outputs(t, b), repeat=3 if b == "reference" else 10)
            for b in backends + ["reference"]}
    for b, s in secs.items():
        report["scan_speed"].append({"backend": b, "seconds": s,
                                     "x_faster_than_reference": secs["reference"] / s})
        print(f"scan fwd+bwd B=8 D=192 L=784 N=16: {b:9s} {s * 1e3:8.2f} ms  "
              f"{secs['reference'] / s:7.1f}x the reference", flush=True)


def training(report) -> bool:
    """20 bf16 steps on one fixed batch per model: losses finite and falling."""
    ok = True
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 128, 128, device="cuda"), torch.arange(8, device="cuda") % 4
    bags = torch.randn(4, 64, 96, device="cuda")
    mask = MaskGenerator(128, 16, 4, 0.6)(8).cuda()            # MAMIM's hidden blocks
    cases = {
        "ssmamba_lite_tiny (DMS)": (timm.create_model("ssmamba_lite_tiny", num_classes=4),
                                    lambda m: torch.nn.functional.cross_entropy(m(x), y)),
        "mamba1d mixer": (timm.create_model("ssmamba_lite_tiny", num_classes=4, mixer="mamba1d"),
                          lambda m: torch.nn.functional.cross_entropy(m(x), y)),
        "Mamba-MIL": (MILAggregator(MILConfig(in_dim=96, num_classes=2, aggregator="mamba")),
                      lambda m: torch.nn.functional.cross_entropy(m(bags)[0], y[:4] % 2)),
        "MAMIM": (MAMIM(timm.create_model("ssmamba_lite_tiny", num_classes=0)),
                  lambda m: m(x, mask)[0]),
    }
    for name, (model, loss_fn) in cases.items():
        model = model.cuda().train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(20):
            with torch.autocast("cuda", torch.bfloat16):
                loss = loss_fn(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        finite = all(map(lambda v: v == v and abs(v) != float("inf"), losses))
        falls = finite and sum(losses[-5:]) < sum(losses[:5])
        ok &= finite and falls
        report["training"].append({"model": name, "first": losses[0], "last": losses[-1],
                                   "finite": finite, "falls": falls})
        print(f"train {name:24s} loss {losses[0]:.4f} -> {losses[-1]:.4f} "
              f"{'ok' if finite and falls else 'FAILED'}", flush=True)
    return ok


def step_seconds(name: str, size: int, batch: int, rounds: int) -> float:
    """Seconds of one bf16 training step of timm model `name` on random images."""
    kw = {"img_size": size} if name.startswith("vit") else {}
    m = timm.create_model(name, num_classes=10, **kw).cuda().train()
    opt = torch.optim.SGD(m.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size, device="cuda")
    y = torch.zeros(batch, dtype=torch.long, device="cuda")

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, repeat=rounds)


def throughput(report, rounds: int) -> None:
    for size, batch in ((224, 32), (1024, 2)):
        for name in ("ssmamba_lite_tiny", "vit_small_patch16_224", "resnet50"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            row = {"model": name, "size": size, "batch": batch}
            try:
                s = step_seconds(name, size, batch, rounds)
                row.update(img_s=batch / s, peak_gib=torch.cuda.max_memory_allocated() / 2**30)
            except torch.cuda.OutOfMemoryError:
                row.update(img_s=0.0, peak_gib=float("nan"), note="out of memory")
            report["throughput"].append(row)
            print(f"{name:22s} {size:5d} px batch {batch:3d}: {row['img_s']:8.1f} img/s, "
                  f"peak {row['peak_gib']:.2f} GiB", flush=True)


def markdown(report) -> str:
    lines = [f"# GPU check: {report['device']}, torch {report['torch']}", "",
             "| backend | dtype | layout | rel. error | ok |", "|---|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['dtype']} | {r['layout']} | {r['rel_err']:.1e} | "
              f"{r['ok']} |" for r in report["parity"]]
    if report["scan_speed"]:
        lines += ["", "| scan backend | fwd+bwd ms | x faster than reference |", "|---|---|---|"]
        lines += [f"| {r['backend']} | {r['seconds'] * 1e3:.2f} | "
                  f"{r['x_faster_than_reference']:.1f} |" for r in report["scan_speed"]]
    if report["training"]:
        lines += ["", "| model (bf16, 20 steps) | first loss | last loss | ok |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['first']:.4f} | {r['last']:.4f} | "
                  f"{r['finite'] and r['falls']} |" for r in report["training"]]
    if report["throughput"]:
        lines += ["", "| model | px | batch | img/s | peak GiB |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['size']} | {r['batch']} | {r['img_s']:.1f} | "
                  f"{r['peak_gib']:.2f} |" for r in report["throughput"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="build/gpu_check")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if GPU else "no CUDA GPU",
              "torch": torch.__version__, "parity": [], "scan_speed": [], "training": [],
              "throughput": []}
    t0 = time.perf_counter()
    if not GPU:
        print("no CUDA GPU: checking the Triton kernels in Triton's interpreter on CPU tensors")
        ok = parity(["triton", "chunked"], "cpu", [torch.float32], report)
    else:
        probe = torch.empty(1, device="cuda")
        backends = [b for b in ("cuda", "triton", "chunked") if _usable(probe, b)]
        print(f"auto on CUDA tensors: {backend_report(probe)}; testing {backends}")
        ok = parity(backends, "cuda", [torch.float32, torch.bfloat16], report)
        scan_speed(backends, report)
        ok &= training(report)
        throughput(report, args.rounds)
    report["seconds"] = time.perf_counter() - t0
    report["ok"] = bool(ok)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"{'all checks passed' if ok else 'FAILED'} in {report['seconds']:.0f} s -> "
          f"{out / 'gpu_check.md'}")
    return 0 if ok else 1


def _usable(probe, backend) -> bool:
    try:
        backend_report(probe, backend)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
