# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: nbgrader,tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The selective scan (S6), from scratch
#
# **What.** Every Mamba layer, and so SSMamba's DMS module, is built around one operation:
# the *selective scan*, a recurrence that walks along a sequence of tokens and carries a small
# hidden state from one token to the next. Here we derive it, write it as a plain loop, check
# our loop against the library's readable version, check the library's fast path against
# both, check everything against mamba-ssm's own reference code, and time them.
#
# **Why a scan.** Self-attention compares every token with every other: cost $O(L^2)$ for
# $L$ tokens. A scan costs $O(L)$, yet every token can still influence all later ones through
# the state. The catch: the information must survive in a fixed-size state; what survives is
# decided by the input itself (that is the "selective" part).

# %% tags=["parameters"]
data_dir = "sample:kather2016"   # a tile row becomes our first sequence
output_dir = "runs/notebooks/02_selective_scan_from_scratch"
image_size = 128          # the tile is resized to this; one row is a sequence this long
epochs = 1                # not used here
batch_size = 2            # sequences per scan in the checks and timings
device = "auto"           # where the speed comparison runs
seed = 0
d_inner = 64              # channels D of the scans we time
d_state = 16              # state size N
lengths = [64, 256, 1024]   # sequence lengths L of the speed plot
repeats = 3               # timings per point (the median is kept)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ssmamba_lite.course.figures import save_figure
from ssmamba_lite.course.runner import require_data
from ssmamba_lite.engine.device import resolve_device

data_dir = require_data(data_dir, dataset="kather2016")
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
dev = resolve_device(device)
_ = torch.manual_seed(seed)

# %% [markdown]
# ## 1. From a continuous system to a recurrence
#
# A linear state-space model maps an input signal $u(t)$ to an output $y(t)$ through a state
# $h(t) \in \mathbb{R}^N$:
#
# $$h'(t) = A\,h(t) + B\,u(t), \qquad y(t) = C\,h(t) + D\,u(t).$$
#
# With a diagonal, negative $A$ the state is a set of $N$ leaky memories with different decay
# rates. To use it on tokens we sample it with a step $\Delta$ (zero-order hold, with Mamba's
# simplified input term):
#
# $$\bar A_t = e^{\Delta_t A}, \qquad h_t = \bar A_t \odot h_{t-1} + \Delta_t B_t u_t, \qquad
# y_t = \langle C_t, h_t\rangle + D u_t .$$
#
# **Selective:** in S4 the parameters $\Delta, B, C$ are fixed; in Mamba's S6 they are computed
# *from each token*. A large $\Delta_t$ makes $\bar A_t \approx 0$: forget the past, take in
# this token. A small $\Delta_t$ keeps the state and lets the token pass by. Each of the $D$
# channels has its own state; Mamba finally gates the output, $\mathrm{out}_t = y_t\cdot
# \mathrm{silu}(z_t)$.

# %% [markdown]
# ## 2. The loop, written by hand
#
# One channel ($D=1$), one state dimension ($N=1$) first, so every quantity is a number. Our
# sequence: the grey values of one row of a real tile.

# %%
from ssmamba_lite.engine.data import load_image, scan_labelled


def scan_by_hand(u, delta, A, B, C, D=0.0):
    """One channel: u, delta, B, C are lists over time (B and C: N-vectors), A an N-vector."""
    h = np.zeros_like(A)                              # h_0 = 0
    ys = []
    for u_t, d_t, B_t, C_t in zip(u, delta, B, C):
        A_bar = np.exp(d_t * A)                       # Ā_t = exp(Δ_t A)
        h = A_bar * h + d_t * B_t * u_t               # h_t = Ā_t h_{t-1} + Δ_t B_t u_t
        ys.append(float(C_t @ h) + D * u_t)           # y_t = <C_t, h_t> + D u_t
    return np.array(ys)


samples = scan_labelled(data_dir)
img = load_image(samples.paths[0]).float().mean(0)                  # grey (H, W), 0..255
img = torch.nn.functional.interpolate(img[None, None], size=(image_size, image_size),
                                      mode="bilinear", antialias=True)[0, 0]
row = (img[image_size // 2] / 255.0).double().numpy()                # u_1..u_L in [0, 1]
L = len(row)
A = np.array([-1.0])
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(row, "k", lw=1, label="u: grey values along a row")
for d in (0.05, 0.5):
    y = scan_by_hand(row, [d] * L, A, [np.ones(1)] * L, [np.ones(1)] * L)
    ax.plot(y, label=f"y with Δ = {d}")
ax.set_xlabel("t (pixel along the row)")
ax.legend(fontsize=8)
ax.set_title("a fixed Δ is a leaky average: small Δ remembers long, large Δ follows the input")
fig.tight_layout()
save_figure(fig, out, "leaky_average")
plt.show()

# %% [markdown]
# Now make Δ depend on the input, the way S6 does: here, large where the pixel is dark (a
# nucleus), so the state *resets* at each nucleus and otherwise holds its value. The state
# becomes a memory of "the last nucleus", something a fixed filter cannot do.

# %%
delta_sel = 0.02 + 2.0 * (row < np.quantile(row, 0.2))            # Δ_t large on dark pixels
y_sel = scan_by_hand(row, delta_sel, A, [np.ones(1)] * L, [np.ones(1)] * L)
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(row, "k", lw=1, label="u")
ax.plot(delta_sel / delta_sel.max(), ":", color="tab:orange", label="Δ_t (scaled)")
ax.plot(y_sel, color="tab:blue", label="y: selective")
ax.set_xlabel("t")
ax.legend(fontsize=8)
fig.tight_layout()
save_figure(fig, out, "selective_delta")
plt.show()

# %% [markdown]
# ## 3. The same loop in the library
#
# `ssmamba_lite.scan.selective_scan_reference` is this loop for all channels and states at
# once, with shapes `u, Δ: (batch, D, L)`, `A: (D, N)` and `B, C: (batch, N, L)` (or one of
# the other layouts of mamba-ssm's signature). Our hand-written loop must give the same
# numbers; here with $N = 4$ states and input-dependent $B_t, C_t$ too.

# %%
from ssmamba_lite.scan import selective_scan, selective_scan_reference, which_backend

g = torch.Generator().manual_seed(seed)
N = 4
A4 = -torch.rand(1, N, generator=g) - 0.5
B4 = torch.randn(1, N, L, generator=g)
C4 = torch.randn(1, N, L, generator=g)
u_t = torch.tensor(row, dtype=torch.float64)[None, None]               # (1, 1, L)
d_t = torch.tensor(delta_sel, dtype=torch.float64)[None, None]
mine = scan_by_hand(row, delta_sel, A4[0].double().numpy(), B4[0].T.double().numpy(),
                    C4[0].T.double().numpy())
lib = selective_scan_reference(u_t, d_t, A4.double(), B4.double(), C4.double())[0, 0].numpy()
print(f"hand-written loop vs library reference: max |difference| = {np.abs(mine - lib).max():.2e}")
assert np.allclose(mine, lib, rtol=0, atol=1e-10)

# %% [markdown]
# ### Exercise 1 (3 points): the loop for every channel at once
#
# `scan_by_hand` handles one channel. Write `s6_recurrence`, the same recurrence for a whole
# batch of sequences with $D$ channels and $N$ states each, plus the skip term $D u_t$:
#
# $$h_0 = 0, \qquad h_t = e^{\Delta_t A} \odot h_{t-1} + \Delta_t B_t u_t, \qquad
# y_t = \langle C_t, h_t \rangle + D u_t .$$
#
# Loop over time only; every step works on whole `(batch, D, N)` tensors (broadcasting). The
# cell after it checks your function against the library's `selective_scan_reference`.

# %% nbgrader={"grade": false, "grade_id": "s6_recurrence", "locked": false, "schema_version": 3, "solution": true, "task": false}
import torch


def s6_recurrence(u, delta, A, B, C, D):
    """y (batch, D, L) of the selective scan without gate or softplus.

    u, delta: (batch, D, L); A: (D, N); B, C: (batch, N, L), shared by the channels; D: (D,).
    """
    ### BEGIN SOLUTION
    batch, channels, length = u.shape
    h = u.new_zeros(batch, channels, A.shape[1])                # h_0 = 0         (batch, D, N)
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]                               # Δ_t             (batch, D, 1)
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[:, :, t])   # <C_t, h_t> + D u_t
    return torch.stack(ys, dim=-1)
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "s6_recurrence_tests", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Checks s6_recurrence against the library's selective_scan_reference on random input.
import torch

from ssmamba_lite.course.exercises import assert_close
from ssmamba_lite.scan import selective_scan_reference


def random_scan_input(batch, channels, length, states, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return dict(u=r(batch, channels, length), delta=r(batch, channels, length).abs() + 0.05,
                A=-r(channels, states).abs() - 0.2, B=r(batch, states, length),
                C=r(batch, states, length), D=r(channels))


x = random_scan_input(2, 3, 8, 4, seed=0)
assert_close(s6_recurrence(**x), selective_scan_reference(**x), "s6_recurrence", seed=0)
### BEGIN HIDDEN TESTS
for seed, shape in [(1, (1, 5, 17, 2)), (2, (3, 2, 1, 6)), (3, (2, 4, 33, 16))]:
    x = random_scan_input(*shape, seed=seed)
    assert_close(s6_recurrence(**x), selective_scan_reference(**x), "s6_recurrence", seed=seed)
x = random_scan_input(2, 3, 12, 4, seed=4)
x["delta"] = x["delta"] * 20                                     # large steps: Ā ≈ 0, no blow-up
assert_close(s6_recurrence(**x), selective_scan_reference(**x), "s6_recurrence (large Δ)", seed=4)
### END HIDDEN TESTS
print("s6_recurrence: checks passed")

# %% [markdown]
# The library's loop, line by line, with the equation beside each step:

# %%
import inspect

src = inspect.getsource(selective_scan_reference).splitlines()
start = next(i for i, line in enumerate(src) if "h = u.new_zeros" in line)
print("\n".join(src[start:start + 7]))

# %% [markdown]
# ## 4. The fast path
#
# The loop above runs $L$ small PyTorch operations, each creating `(batch, D, N)` tensors:
# slow. `selective_scan` (same signature) dispatches to a fused kernel: on the CPU a numba
# kernel that walks $L$ once per (sequence, channel) with the state in a small local array, and
# recomputes the states in its backward pass from a few checkpoints; on a GPU mamba-ssm's CUDA
# kernel. Same numbers, for the outputs *and* the gradients:

# %%
def scan_inputs(batch, D, L, N, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(device, dtype)  # noqa: E731
    return dict(u=t(batch, D, L), delta=t(batch, D, L, scale=0.5),
                A=-torch.rand(D, N, generator=g).add(0.5).to(device, dtype),
                B=t(batch, N, L), C=t(batch, N, L), D=t(D), z=t(batch, D, L),
                delta_bias=t(D, scale=0.1))


def run(fn, args, **kw):
    args = {k: v.detach().clone().requires_grad_(True) for k, v in args.items()}
    out = fn(**args, delta_softplus=True, **kw)
    out.backward(torch.ones_like(out))
    return out.detach(), {k: v.grad for k, v in args.items()}


args = scan_inputs(batch_size, 8, 128, d_state, dev, seed=seed)
print("fast path on", dev, "->", which_backend(args["u"]))
ref_out, ref_grads = run(selective_scan_reference, args)
fast_out, fast_grads = run(selective_scan, args)
print(f"output       max |fast - reference| = {(fast_out - ref_out).abs().max():.2e}")
for k in ref_grads:
    print(f"d loss / d {k:10s} max |fast - reference| = {(fast_grads[k] - ref_grads[k]).abs().max():.2e}")
    assert torch.allclose(fast_grads[k], ref_grads[k], rtol=1e-3, atol=1e-3)
assert torch.allclose(fast_out, ref_out, rtol=1e-4, atol=1e-4)

# %% [markdown]
# ## 5. Against mamba-ssm's reference
#
# mamba-ssm (the authors' package) ships a pure-PyTorch `selective_scan_ref` beside its CUDA
# kernel. It was written independently of ours, which makes it a good referee. Without its
# CUDA kernels mamba-ssm does not import as is; the test-suite's `load_mamba_ssm_oracle`
# works around that.

# %%
import sys

import ssmamba_lite

repo = Path(ssmamba_lite.__file__).resolve().parents[1]
oracle = None
if (repo / "tests" / "conftest.py").is_file():
    sys.path.insert(0, str(repo))
    from tests.conftest import load_mamba_ssm_oracle

    oracle = load_mamba_ssm_oracle()
if oracle is None:
    print("mamba-ssm is not installed here: comparison skipped (`make install` installs it)")
else:
    theirs, their_grads = run(oracle.selective_scan_ref, args)
    print(f"output       max |ours - mamba-ssm| = {(ref_out - theirs).abs().max():.2e}")
    for k in their_grads:
        print(f"d loss / d {k:10s} max |ours - mamba-ssm| = {(ref_grads[k] - their_grads[k]).abs().max():.2e}")
    assert torch.allclose(ref_out, theirs, rtol=1e-4, atol=1e-4)

# %% [markdown]
# ## 6. How fast?
#
# Forward + backward time against the sequence length $L$ (log-log: a straight line of slope
# 1 is linear cost). The readable loop pays a fixed price per step; the fused kernels do the
# same arithmetic without leaving their loop.

# %%
import time

import pandas as pd


def timed(fn, args):
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(fn, args)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


impls = {"readable loop (ours)": selective_scan_reference,
         f"fast path: {which_backend(args['u'])}": selective_scan}
if oracle is not None:
    impls["mamba-ssm selective_scan_ref"] = oracle.selective_scan_ref
rows = []
for L_ in lengths:
    a = scan_inputs(batch_size, d_inner, L_, d_state, dev, seed=seed)
    run(selective_scan, a)                                        # warm-up (compilation)
    for name, fn in impls.items():
        rows.append({"implementation": name, "L": L_, "seconds": timed(fn, a)})
speed = pd.DataFrame(rows)
speed.to_csv(out / "scan_speed.csv", index=False)
print(speed.pivot(index="L", columns="implementation", values="seconds").round(4))

# %%
import seaborn as sns

fig, ax = plt.subplots(figsize=(5.5, 3.8))
sns.lineplot(data=speed, x="L", y="seconds", hue="implementation", marker="o", ax=ax)
ax.set_xscale("log"), ax.set_yscale("log")
ax.set_title(f"forward + backward, batch {batch_size}, D={d_inner}, N={d_state}, {dev.type}")
fig.tight_layout()
save_figure(fig, out, "scan_speed")
plt.show()

# %% [markdown]
# **Recap.** The scan is a leaky memory whose leak is chosen token by token. It costs $O(L)$,
# and a fused kernel makes that cost small. But it reads a *1D* sequence; **03** asks how to
# read a 2D tissue image with it (DMS), and what a small convolution adds (LPR).
