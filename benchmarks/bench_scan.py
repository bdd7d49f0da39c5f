"""Selective-scan speed on this CPU: our reference loop, our numba kernel, mamba-ssm's
`selective_scan_ref` and mambapy's parallel scan (`pscan`), measured side by side.

    .venv/bin/python benchmarks/bench_scan.py [--repeats 5] [--lengths 196 784]

Shapes: batch 8, D 192, N 16 (B and C shared across channels, as in Mamba), 2 threads.
Implementations are interleaved within each round so that machine noise hits all alike.
Prints median times, the speed-up of the kernel over each, and the max abs error against
mamba-ssm's reference (outputs and all input gradients). Then two figures of the kernel
alone: how a batch of one scales from 1 thread to --threads (the backward splits channels
into blocks), and the forward and backward kernels' state updates per second on one core,
next to a bound measured in the same run: a bare loop doing the forward's exp,
multiply-add and dot with C per update (the kernel's exp and flags, in cache). Last, the
performance targets, each read off this run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ssmamba_lite.kernels.oracle import load_mamba_ssm_oracle, random_scan_inputs
from ssmamba_lite.scan import selective_scan

ORACLE_LIMIT_S = 60.0  # one forward+backward slower than this is timed once, not repeated


def mambapy_scan(u, delta, A, B, C, D):
    """The same scan through mambapy's Blelloch parallel scan (its `selective_scan` recipe)."""
    from mambapy.pscan import pscan

    dt = delta.transpose(1, 2)                                     # (batch, L, D)
    dA = torch.exp(dt.unsqueeze(-1) * A)                           # (batch, L, D, N)
    BX = (dt * u.transpose(1, 2)).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2)
    hs = pscan(dA, BX)                                             # (batch, L, D, N)
    y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1)         # (batch, L, D)
    return (y + D * u.transpose(1, 2)).transpose(1, 2)


def bench_inputs(batch, dim, L, N, seed=0):
    """u, Δ ~ U(0.001, 0.101) (the step itself), A = -exp(N(0, 0.25)), B and C shared, D."""
    return random_scan_inputs(batch, dim, L, N, delta=("uniform", 0.001, 0.101),
                              A=("lognormal", 0.0, 0.5), extras=("D",), seed=seed)


def run_once(fn, x, backward):
    inputs = {k: v.clone().requires_grad_(backward) for k, v in x.items()}
    t0 = time.perf_counter()
    out = fn(**inputs)
    if backward:
        out.pow(2).mean().backward()
    dt = time.perf_counter() - t0
    grads = [inputs[k].grad for k in ("u", "delta", "A", "B", "C", "D")] if backward else []
    return dt, [out.detach()] + grads


def limit_updates_per_s(rows: int, L: int, N: int, repeats: int) -> float:
    """State updates per second of a bare loop with the kernel's arithmetic per update and its
    data layout (channels in the vector lanes, WIDTH of them per job: h = exp(Δ a) h + x b,
    then y += c h, with the kernel's exp and compiler flags, all in cache): an upper bound
    for the scan on this machine, on the threads numba is set to."""
    import numpy as np
    from numba import njit, prange

    from ssmamba_lite.kernels.scan_cpu import WIDTH
    from ssmamba_lite.kernels.vecmath import FASTMATH, decay_exp

    @njit(parallel=True, cache=False, fastmath=FASTMATH, error_model="numpy")
    def bare(delta, a, out):
        for job in prange(delta.shape[0]):
            h = np.zeros((a.shape[0], delta.shape[2]), np.float32)
            for t in range(delta.shape[1]):
                dt = delta[job, t]
                acc = out[job, t]
                acc[:] = np.float32(0.0)
                for n in range(a.shape[0]):
                    hn, an = h[n], a[n]
                    for k in range(dt.shape[0]):                  # Δ_t u_t -> Δ_t, B_t -> 0.5
                        hn[k] = decay_exp(dt[k] * an[k]) * hn[k] + dt[k] * np.float32(0.5)
                    for k in range(dt.shape[0]):                  # C_t -> 0.25
                        acc[k] += np.float32(0.25) * hn[k]

    jobs = max(1, rows // WIDTH)
    delta = np.random.default_rng(0).random((jobs, L, WIDTH), dtype=np.float32) * 0.1
    a = -np.linspace(0.5, 2.0, N * WIDTH, dtype=np.float32).reshape(N, WIDTH)
    out = np.empty((jobs, L, WIDTH), np.float32)
    bare(delta[:1, :4], a, out[:1, :4])                         # compile outside the timing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        bare(delta, a, out)
        times.append(time.perf_counter() - t0)
    return jobs * L * WIDTH * N / statistics.median(times)


def kernel_args(x: dict, dim: int) -> tuple:
    """bench_inputs()'s tensors as the numba kernels' arguments around the chunk length: u, δ
    (batch, L, D), A, B, C (kernel order), D, then (bias, softplus) = (zeros, False), since
    bench_inputs()'s delta is already the step."""
    from ssmamba_lite.kernels.bc_order import to_kernel_order

    return ([x["u"].transpose(1, 2).contiguous().numpy(),
             x["delta"].transpose(1, 2).contiguous().numpy(), x["A"].numpy(),
             to_kernel_order(x["B"], torch.float32).numpy(),
             to_kernel_order(x["C"], torch.float32).numpy(), x["D"].numpy()],
            (torch.zeros(dim).numpy(), False))


def blocks_figure(dim: int, L: int, repeats: int, threads: int) -> None:
    """The backward kernel of a batch of one: all channels in one job against
    `channels_per_job`'s blocks, interleaved, on `threads` threads."""
    import numba

    from ssmamba_lite.kernels import scan_cpu

    numba.set_num_threads(threads)
    arrays, step = kernel_args(bench_inputs(1, dim, L, 16), dim)
    width = scan_cpu.channels_per_job(1, dim, 1, 1)
    ckpt = scan_cpu.forward_kernel(*arrays, scan_cpu.CHUNK, *step, width)[2]
    dy, dlast = torch.randn(1, L, dim).numpy(), torch.zeros(1, dim, 16).numpy()
    times = {dim: [], width: []}
    for _ in range(repeats + 1):                                # the first round compiles
        for w in times:
            t0 = time.perf_counter()
            scan_cpu.backward_kernel(*arrays, *step, ckpt, dy, dlast, scan_cpu.CHUNK, w)
            times[w].append(time.perf_counter() - t0)
    one = statistics.median(times[dim][1:])
    split = statistics.median(times[width][1:])       # the same runs when one thread: 1 block
    print(f"backward kernel, batch 1, {threads} threads: all {dim} channels in one job "
          f"{one:.4f} s, in blocks of {width} {split:.4f} s: {one / split:.2f}x")


def kernel_figures(args) -> tuple:
    import numba

    from ssmamba_lite.kernels import scan_cpu

    L, dim1, repeats = args.batch1_length, args.batch1_dim, max(3, args.repeats)
    x = bench_inputs(1, dim1, L, 16)
    kernel = lambda **k: selective_scan(**k, backend="cpu")   # noqa: E731
    times = {1: [], args.threads: []}
    for _ in range(repeats):                                    # interleaved
        for threads in times:
            torch.set_num_threads(threads)
            times[threads].append(run_once(kernel, x, True)[0])
    torch.set_num_threads(args.threads)
    one = statistics.median(times[1])
    many = statistics.median(times[args.threads])     # the same runs when --threads 1
    print(f"\nbatch 1, D={dim1}, N=16, L={L}, fwd+bwd: {one:.4f} s on 1 thread, {many:.4f} s on "
          f"{args.threads}: {one / many:.2f}x")
    blocks_figure(dim1, L, repeats, args.threads)
    L, batch, dim, N = max(args.lengths), 8, 192, 16
    x = bench_inputs(batch, dim, L, N)
    fwd = statistics.median(run_once(kernel, x, False)[0] for _ in range(repeats))
    arrays, step = kernel_args(x, dim)
    numba.set_num_threads(1)                                    # per core, interleaved
    width = scan_cpu.channels_per_job(batch, dim, 1, 1)
    ckpt = scan_cpu.forward_kernel(*arrays, scan_cpu.CHUNK, *step, width)[2]
    dy, dlast = torch.randn(batch, L, dim).numpy(), torch.zeros(batch, dim, N).numpy()
    times = {"forward": [], "backward": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        scan_cpu.forward_kernel(*arrays, scan_cpu.CHUNK, *step, width)
        times["forward"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scan_cpu.backward_kernel(*arrays, *step, ckpt, dy, dlast, scan_cpu.CHUNK, width)
        times["backward"].append(time.perf_counter() - t0)
    limit = limit_updates_per_s(batch * dim, L, N, repeats)
    numba.set_num_threads(args.threads)
    updates = batch * dim * L * N
    rates = {k: updates / statistics.median(v) for k, v in times.items()}
    print(f"one core, batch {batch}, D={dim}, N={N}, L={L}: forward kernel "
          f"{rates['forward'] / 1e9:.2f} G state updates/s, backward kernel "
          f"{rates['backward'] / 1e9:.2f} G/s; the bound (a bare loop of the forward's "
          f"arithmetic in its layout: exp, multiply-add, y += c h, in cache): "
          f"{limit / 1e9:.2f} G/s. Forward at {rates['forward'] / limit:.0%} of it, backward "
          f"at {rates['backward'] / limit:.0%} (it does about three times the arithmetic per "
          f"update). The whole forward of selective_scan ({args.threads} threads, with the "
          f"D skip, the layout of B and C and the transposes) takes {fwd:.4f} s")
    return one / many, rates["forward"], rates["forward"] / limit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lengths", type=int, nargs="+", default=[196, 784])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch1-dim", type=int, default=384, help="D of the batch-of-one figures")
    ap.add_argument("--batch1-length", type=int, default=1024, help="L of the batch-of-one figures")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    oracle = load_mamba_ssm_oracle()
    impls = {
        "ours: reference loop": lambda **k: selective_scan(**k, backend="reference"),
        "ours: numba kernel": lambda **k: selective_scan(**k, backend="cpu"),
        "mambapy pscan": mambapy_scan,
    }
    if oracle is not None:
        impls["mamba-ssm selective_scan_ref"] = oracle.selective_scan_ref
    batch, dim, N = 8, 192, 16
    print(f"batch={batch} D={dim} N={N}, {args.threads} threads, median of {args.repeats}, "
          f"torch {torch.__version__}")
    selective_scan(**bench_inputs(1, 2, 3, 2), backend="cpu")  # JIT-compile outside the timings
    rows = []
    for L in args.lengths:
        x = bench_inputs(batch, dim, L, N)
        for backward in (False, True):
            mode = "fwd+bwd" if backward else "forward"
            times = {name: [] for name in impls}
            results, notes = {}, {}
            for _ in range(args.repeats):
                for name, fn in impls.items():
                    if name in notes:
                        continue
                    dt, res = run_once(fn, x, backward)
                    times[name].append(dt)
                    results[name] = res
                    if dt > ORACLE_LIMIT_S:
                        notes[name] = f"one run took {dt:.0f} s: not repeated"
            ref = results.get("mamba-ssm selective_scan_ref")
            kernel = statistics.median(times["ours: numba kernel"])
            for name in impls:
                med = statistics.median(times[name])
                err = max((a - b).abs().max().item() for a, b in zip(results[name], ref)) \
                    if ref is not None else float("nan")
                rows.append((L, mode, name, med, med / kernel, err, notes.get(name, "")))
    print("\n| L | pass | implementation | median s | x slower than kernel | max abs err vs mamba-ssm | note |")
    print("|---|---|---|---|---|---|---|")
    for L, mode, name, med, ratio, err, note in rows:
        print(f"| {L} | {mode} | {name} | {med:.4f} | {ratio:.1f} | {err:.1e} | {note} |")
    scaling, forward, fraction = kernel_figures(args)
    lead = next(r[4] for r in rows if r[0] == max(args.lengths) and r[1] == "fwd+bwd"
                and r[2] == "mambapy pscan")
    met = lambda ok: "met" if ok else "NOT met"               # noqa: E731
    print(f"\ntargets: fwd+bwd at L={max(args.lengths)} {lead:.1f}x mambapy's pscan (>= 40x: "
          f"{met(lead >= 40)}); batch 1, {args.threads} threads vs 1: {scaling:.2f}x (>= 1.8x: "
          f"{met(scaling >= 1.8)}); forward on one core {forward / 1e9:.2f} G updates/s, "
          f"{fraction:.0%} of the bound (>= 2.0 G/s or >= 50%: "
          f"{met(forward >= 2e9 or fraction >= 0.5)})")


if __name__ == "__main__":
    main()
