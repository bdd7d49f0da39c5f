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
#
# The papers: the selective scan and the Mamba block are from Mamba (Gu & Dao 2023,
# [arXiv:2312.00752](https://arxiv.org/abs/2312.00752)); the continuous state-space layer it
# starts from is S4's (Gu et al. 2021, [arXiv:2111.00396](https://arxiv.org/abs/2111.00396));
# SSMamba ([arXiv:2604.15711](https://arxiv.org/abs/2604.15711)) builds its DMS module on this
# scan (notebook 03).

# %% [markdown]
# ## Learning objectives
#
# After this notebook you can
# - derive the discrete recurrence $h_t = \bar A_t h_{t-1} + \bar B_t u_t$ from the continuous
#   system by zero-order hold, and say where Mamba (and this library) simplifies $\bar B$;
# - write the selective scan as a loop, for one channel by hand and for a batch of channels
#   (graded exercise), and check it against two independent references;
# - explain why a recurrence can still run in parallel (an associative operator, a scan of
#   depth $\lceil \log_2 L \rceil$), and build such a scan;
# - name every step of a Mamba block and the shape of each tensor inside it.

# %% [markdown]
# ## Prerequisites
#
# - [01 · the data](01_data.ipynb) (we scan the grey values of a real tile);
# - linear algebra (a diagonal matrix, $e^{x}$ of one), a first-order linear ODE, and PyTorch
#   tensors with broadcasting.
#
# Next: [03 · LPR and DMS](03_lpr_and_dms.ipynb).

# %% tags=["parameters"]
data_dir = "sample:kather2016"   # a tile row becomes our first sequence
output_dir = "runs/notebooks/02_selective_scan_from_scratch"
image_size = 128          # the tile is resized to this; one row is a sequence this long
batch_size = 2            # sequences per scan in the checks and timings
device = "auto"           # where the speed comparison runs
seed = 0
d_inner = 64              # channels D of the scans we time
d_state = 16              # state size N
lengths = [64, 256, 1024]   # sequence lengths L of the speed plot
repeats = 3               # timings per point (the median is kept)
dc_delta = 0.5            # the step Δ of the DC-gain check (section 2)

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
# A linear state-space model maps an input signal $x(t)$ to an output $y(t)$ through a state
# $h(t) \in \mathbb{R}^N$ (Mamba eq. 1):
#
# $$h'(t) = A\,h(t) + B\,x(t), \qquad y(t) = C\,h(t).$$
#
# (Mamba's block adds a skip $D\,x(t)$ to the output, outside the state-space model; the scan
# functions take it as their argument `D`.)
#
# With a diagonal, negative $A$ the state is a set of $N$ leaky memories with different decay
# rates. Tokens arrive one by one, so we need the state only at the sampling times
# $t, t + \Delta, t + 2\Delta, \dots$ **Zero-order hold (ZOH)** assumes the input is held
# constant over each step. The ODE is linear, so its solution over one step is
# (variation of constants; multiply by $e^{-sA}$ and integrate)
#
# $$h(t+\Delta) = e^{\Delta A} h(t) + \int_0^{\Delta} e^{(\Delta - s)A} B\, x(t+s)\, ds .$$
#
# With $x(t+s) = x$ held constant, the integral is $\int_0^\Delta e^{sA}\,ds\,B x
# = A^{-1}(e^{\Delta A} - I) B x$, and writing $A^{-1} = (\Delta A)^{-1}\Delta$:
#
# $$h(t+\Delta) = \underbrace{e^{\Delta A}}_{\bar A}\, h(t) +
# \underbrace{(\Delta A)^{-1}(e^{\Delta A} - I)\,\Delta B}_{\bar B}\; x .$$
#
# These $\bar A = \exp(\Delta A)$ and $\bar B = (\Delta A)^{-1}(\exp(\Delta A) - I)\,\Delta B$
# are Mamba's eq. 4. Since $e^{\Delta A} - I = \Delta A + (\Delta A)^2/2 + O((\Delta A)^3)$,
# $\bar B = (I + \Delta A/2 + \dots)\,\Delta B \approx \Delta B$: the simplified $\bar B$ that
# Mamba's code uses (below). The two agree to first order in $\Delta$ (their difference is of
# order $\Delta^2$), and their relative gap, $\Delta A/2$, is first order in $\Delta A$. For a
# diagonal $A$ everything is per element: state $n$ with $a_n < 0$ gets
#
# $$\frac{\bar B_n^{\text{exact}}}{\bar B_n^{\text{simplified}}}
# = \frac{e^{\Delta a_n} - 1}{\Delta a_n},$$
#
# which is 1 as $\Delta a_n \to 0$ and smaller than 1 for every $\Delta a_n < 0$: the
# simplified $\bar B$ lets in *more* input than the exact one, the more so the larger the step.
#
# **Selective:** in S4 the parameters $\Delta, B, C$ are fixed; in Mamba's S6 they are computed
# *from each token*, so step $t$ uses its own $\Delta_t, B_t, C_t$ (the input is called $u$,
# as in the code):
#
# $$\bar A_t = e^{\Delta_t A}, \qquad h_t = \bar A_t \odot h_{t-1} + \Delta_t B_t u_t,
# \qquad y_t = \langle C_t, h_t\rangle + D u_t .$$
#
# A large $\Delta_t$ makes $\bar A_t \approx 0$: forget the past, take in this token. A small
# $\Delta_t$ keeps the state and lets the token pass by. Each of the $D$ channels has its own
# state; Mamba finally gates the output, $\mathrm{out}_t = y_t\cdot\mathrm{silu}(z_t)$.

# %%
x_ = np.linspace(-6, -1e-3, 400)                       # Δa: step times a (negative) eigenvalue
ratio = np.expm1(x_) / x_                              # (e^{Δa} - 1) / (Δa)
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(x_, ratio, color="tab:blue")
for point in (-0.5, -1.0, -4.0):
    r = np.expm1(point) / point
    ax.plot(point, r, "o", color="tab:red")
    ax.annotate(f"Δa = {point:g}: {r:.3f}", (point, r), textcoords="offset points",
                xytext=(6, 6), fontsize=8)
ax.axhline(1.0, color="grey", lw=0.8, ls=":")
ax.set_xlabel("Δa  (step × diagonal entry of A)")
ax.set_ylabel("exact B̄ / simplified B̄")
ax.set_title("ZOH's B̄ against Mamba's ΔB: equal only for small steps")
fig.tight_layout()
save_figure(fig, out, "zoh_vs_simplified_b")
plt.show()

# %% [markdown]
# **Which one the library computes.** `selective_scan_reference` (in `ssmamba_lite/scan.py`)
# keeps $\bar A_t = \exp(\Delta_t A)$ exact and uses the simplified input term
# $\Delta_t B_t u_t$; the numba, Triton and chunked kernels are tested equal to it. mamba-ssm
# does the same: its `selective_scan_ref` forms `deltaA = exp(delta * A)` and
# `deltaB_u = delta * B * u`, and its CUDA kernel scans the pairs
# $(\exp(\Delta A), \Delta B u)$. One of Mamba's authors describes it as "a mix of ZOH for A
# and Euler discretization for B" ([state-spaces/mamba#114](https://github.com/state-spaces/mamba/issues/114)).
# The two lines of our loop that say so:

# %%
import inspect

from ssmamba_lite.scan import selective_scan_reference

for line in inspect.getsource(selective_scan_reference).splitlines():
    if "A_bar = " in line or "h = A_bar" in line:
        print(line.strip())

# %% [markdown]
# ## 2. The loop, written by hand
#
# One channel ($D=1$), one state dimension ($N=1$) first, so every quantity is a number. Our
# sequence: the grey values of one row of a real tile.

# %%
from ssmamba_lite.engine.data import find_labelled, load_image


def scan_by_hand(u, delta, A, B, C, D=0.0):
    """One channel: u, delta, B, C are lists over time (B and C: N-vectors), A an N-vector."""
    h = np.zeros_like(A)                              # h_0 = 0
    ys = []
    for u_t, d_t, B_t, C_t in zip(u, delta, B, C):
        A_bar = np.exp(d_t * A)                       # Ā_t = exp(Δ_t A)
        h = A_bar * h + d_t * B_t * u_t               # h_t = Ā_t h_{t-1} + Δ_t B_t u_t
        ys.append(float(C_t @ h) + D * u_t)           # y_t = <C_t, h_t> + D u_t
    return np.array(ys)


samples = find_labelled(data_dir)
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
# **The DC gain: what the simplified $\bar B$ does to a constant input.** Feed the leaky
# average above ($N = 1$, $a = -1$, $B = C = 1$) a constant $u_t = 1$. The state settles where
# it stops changing, $h = \bar A h + \bar B$, so $h_\infty = \bar B / (1 - \bar A)$:
#
# $$\text{simplified } \bar B = \Delta:\quad h_\infty = \frac{\Delta}{1 - e^{-\Delta}},
# \qquad\qquad \text{ZOH } \bar B = 1 - e^{-\Delta}:\quad h_\infty = 1 .$$
#
# The continuous system itself settles at $-B/a = 1$; ZOH reproduces that exactly at every
# step size, the simplified $\bar B$ only as $\Delta \to 0$. Below: the formula, then the
# library's scan run on a long constant input (its last output is $h_\infty$), once with
# $B = 1$ (what Mamba computes) and once with $B$ multiplied by the ZOH factor
# $(e^{\Delta a} - 1)/(\Delta a)$, which turns the library's $\Delta B$ into ZOH's $\bar B$.

# %%
from ssmamba_lite.scan import selective_scan

a_dc = -1.0
gain_formula = dc_delta / (1 - np.exp(a_dc * dc_delta))           # Δ / (1 − e^{−Δ}) for a = −1
zoh_factor = np.expm1(dc_delta * a_dc) / (dc_delta * a_dc)        # (e^{Δa} − 1) / (Δa)
steps = int(np.ceil(40 / dc_delta))                               # e^{−40}: the start is forgotten
ones = torch.ones(1, 1, steps, dtype=torch.float64)                # u_t = 1        (batch, D, L)
const_args = dict(u=ones, delta=dc_delta * ones, A=torch.tensor([[a_dc]], dtype=torch.float64),
                  C=torch.ones(1, 1, dtype=torch.float64))
gain_simplified = selective_scan(**const_args, B=torch.ones(1, 1, dtype=torch.float64))[0, 0, -1]
gain_zoh = selective_scan(**const_args, B=torch.full((1, 1), zoh_factor, dtype=torch.float64))[0, 0, -1]
print(f"Δ = {dc_delta}: formula Δ/(1 − e^(−Δ)) = {gain_formula:.4f}")
print(f"library scan, B̄ = ΔB (Mamba's):  h after {steps} steps of u = 1: {float(gain_simplified):.4f}")
print(f"library scan, B̄ = ZOH's:          h after {steps} steps of u = 1: {float(gain_zoh):.4f}")
assert abs(float(gain_simplified) - gain_formula) < 1e-9 and abs(float(gain_zoh) - 1) < 1e-9
y_dc = scan_by_hand(row, [dc_delta] * L, A, [np.ones(1)] * L, [np.ones(1)] * L)
settled = int(np.ceil(5 / dc_delta))                  # after 5/Δ steps the start weighs e^{-5}
if settled < L:
    level = y_dc[settled:].mean() / row[settled:].mean()
    print(f"the row of section 2 scanned with Δ = {dc_delta}: from step {settled} on, mean y / "
          f"mean u = {level:.3f}, the output runs {'above' if level > 1 else 'below'} the input "
          f"(DC gain {gain_formula:.3f})")
else:
    print(f"the row is too short ({L} steps) for Δ = {dc_delta} to settle ({settled} steps)")

# %% [markdown]
# On the tile row, the output's level relative to the input's, once the state has forgotten
# its start, is printed last: compare it with the DC gain (a slowly varying input is passed on
# with roughly its DC gain; the row is not constant, so the two agree only roughly). In
# Mamba, $B_t$, $C_t$ and $\Delta_t$ are learned, so the network learns around whichever
# $\bar B$ it is given; its authors report that the simplification makes the code simpler
# "without affecting empirical performance" (the issue cited in section 1). Still, with
# $\bar B = \Delta B$ the step $\Delta$ sets both how fast the state forgets and how loud the
# input is.

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
# Checks s6_recurrence against the library's selective_scan_reference on random input. While
# s6_recurrence runs, the library's scans (and those of mamba-ssm and mambapy) raise an error:
# an answer that calls one of them scores 0.
import torch

from ssmamba_lite.course.exercises import assert_close, forbidden
from ssmamba_lite.scan import selective_scan, selective_scan_reference

LIBRARY_SCANS = (selective_scan_reference, selective_scan,
                 "ssmamba_lite.kernels.scan_chunked:selective_scan_chunked",
                 "ssmamba_lite.kernels.scan_cpu:selective_scan_cpu",
                 "ssmamba_lite.kernels.scan_cpu:forward_kernel",
                 "ssmamba_lite.kernels.scan_cuda:selective_scan_cuda",
                 "ssmamba_lite.kernels.scan_triton:selective_scan_triton",
                 "mamba_ssm.ops.selective_scan_interface:selective_scan_ref",
                 "mamba_ssm.ops.selective_scan_interface:selective_scan_fn",
                 "mambapy.pscan:PScan", "mambapy.mamba:MambaBlock")


def random_scan_input(batch, channels, length, states, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return dict(u=r(batch, channels, length), delta=r(batch, channels, length).abs() + 0.05,
                A=-r(channels, states).abs() - 0.2, B=r(batch, states, length),
                C=r(batch, states, length), D=r(channels))


def check_s6(x, what, seed):
    reference = selective_scan_reference(**x)
    with forbidden(*LIBRARY_SCANS, exercise="s6_recurrence"):
        mine = s6_recurrence(**x)
    assert_close(mine, reference, what, seed=seed)


check_s6(random_scan_input(2, 3, 8, 4, seed=0), "s6_recurrence", seed=0)
### BEGIN HIDDEN TESTS
for seed, shape in [(1, (1, 5, 17, 2)), (2, (3, 2, 1, 6)), (3, (2, 4, 33, 16))]:
    check_s6(random_scan_input(*shape, seed=seed), "s6_recurrence", seed=seed)
x = random_scan_input(2, 3, 12, 4, seed=4)
x["delta"] = x["delta"] * 20                                     # large steps: Ā ≈ 0, no blow-up
check_s6(x, "s6_recurrence (large Δ)", seed=4)
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
from ssmamba_lite.kernels.oracle import random_scan_inputs

# random u, Δ (raw: softplus'd by the scan), A, B and C shared by the channels, D, z, Δ's bias
spec = dict(delta=("normal", 0.0, 0.5), bias_std=0.1, device=dev, seed=seed)


def run(fn, args, **kw):
    args = {k: v.detach().clone().requires_grad_(True) for k, v in args.items()}
    out = fn(**args, delta_softplus=True, **kw)
    out.backward(torch.ones_like(out))
    return out.detach(), {k: v.grad for k, v in args.items()}


args = random_scan_inputs(batch_size, 8, 128, d_state, **spec)     # (batch, D = 8, L = 128)
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
# CUDA kernels mamba-ssm does not import as is; `load_mamba_ssm_oracle` (in
# `ssmamba_lite/kernels/oracle.py`, the test-suite's referee too) works around that.

# %%
from ssmamba_lite.kernels.oracle import load_mamba_ssm_oracle

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
# Forward + backward time against the sequence length $L$. What is $O(L)$ is the *work*: every
# implementation does the same arithmetic per step, $L$ steps. What the clock measures can grow
# more slowly (at small $L$ the fixed cost of each call dominates, slope below 1 on log-log
# axes) or faster (memory traffic that grows with $L$, slope above 1). The readable loop pays a
# Python and autograd price per step; the fused kernels do the same arithmetic without leaving
# their loop. (The readable loop takes each step's $B_t, C_t, u_t, \Delta_t$ from one `unbind`
# of the whole sequence: indexing `B[..., t]` at every step instead makes autograd write a
# gradient the size of all of $B$ for every step, $O(L^2)$ memory traffic in the backward for
# $O(L)$ work; mamba-ssm's `selective_scan_ref` indexes `deltaA[:, :, i]` per step, and its
# backward grows that way.) The cell after the table fits the slope of each implementation's
# times.

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
    a = random_scan_inputs(batch_size, d_inner, L_, d_state, **spec)
    run(selective_scan, a)                                        # warm-up (compilation)
    for name, fn in impls.items():
        rows.append({"implementation": name, "L": L_, "seconds": timed(fn, a)})
speed = pd.DataFrame(rows)
speed.to_csv(out / "scan_speed.csv", index=False)
print(speed.pivot(index="L", columns="implementation", values="seconds").round(4))
for name, g in speed.groupby("implementation"):
    slope = np.polyfit(np.log(g["L"]), np.log(g["seconds"]), 1)[0]   # log t = slope log L + c
    print(f"{name}: time grows as L^{slope:.2f} over L = {min(lengths)}..{max(lengths)}")

# %% [markdown]
# The same numbers on log-log axes. Read the slopes rather than the absolute times: they depend
# on this machine, on `batch_size`, `d_inner` and `d_state`, and, at small `lengths`, on the
# fixed cost of each call.

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
# ## 7. Why a recurrence can run in parallel
#
# The loop is sequential: $h_t$ needs $h_{t-1}$. A GPU kernel nevertheless computes it in far
# fewer than $L$ dependent steps. Write one step of the recurrence (per channel and state) as
# an affine map of the state, $h \mapsto a_t h + b_t$ with $a_t = \bar A_t = e^{\Delta_t a}$
# and $b_t = \Delta_t B_t u_t$. Doing step 1 and then step 2 is again an affine map:
#
# $$a_2 (a_1 h + b_1) + b_2 = (a_2 a_1)\, h + (a_2 b_1 + b_2), \qquad\text{so}\qquad
# (a_1, b_1) \circ (a_2, b_2) = (a_2 a_1,\; a_2 b_1 + b_2).$$
#
# This operator is **associative**: $((p \circ q) \circ r) = (p \circ (q \circ r))$ (both are
# "apply p, then q, then r"). And since $h_0 = 0$, the $b$ part of $(a_1, b_1) \circ \dots \circ
# (a_t, b_t)$ is exactly $h_t$. Computing all these prefixes is a *scan*, and an associative
# operator lets us group the work freely, e.g. (Hillis & Steele): in round $k = 0, 1, 2, \dots$
# every position $t \ge 2^k$ combines its pair with the pair $2^k$ places earlier, all positions
# at once. After round $k$, position $t$ holds the combination of the last $2^{k+1}$ steps, so
# $\lceil \log_2 L \rceil$ rounds cover the whole sequence. The rounds are sequential; inside a
# round every position is independent: that is the parallelism.

# %%
def combine(first, second):
    """(a1, b1) ∘ (a2, b2) = (a2 a1, a2 b1 + b2): the affine map of step 1 followed by step 2."""
    (a1, b1), (a2, b2) = first, second
    return a2 * a1, a2 * b1 + b2


def sequential_scan(a, b):
    """h_t = a_t h_{t-1} + b_t, h_0 = 0, along the last axis: L dependent steps."""
    h, hs = torch.zeros_like(b[..., 0]), []
    for t in range(a.shape[-1]):
        h = a[..., t] * h + b[..., t]
        hs.append(h)
    return torch.stack(hs, dim=-1)


def parallel_scan(a, b):
    """The same h by Hillis-Steele: ceil(log2 L) rounds of elementwise work. Returns (h, rounds)."""
    rounds, shift = 0, 1
    while shift < a.shape[-1]:
        # every t >= shift: (pair ending `shift` earlier) ∘ (pair at t), all t at once
        a_new, b_new = combine((a[..., :-shift], b[..., :-shift]), (a[..., shift:], b[..., shift:]))
        a = torch.cat([a[..., :shift], a_new], dim=-1)        # t < shift: already complete
        b = torch.cat([b[..., :shift], b_new], dim=-1)
        shift, rounds = 2 * shift, rounds + 1
    return b, rounds


def check_scan(a, b):
    """The parallel scan against the loop, on the same pairs."""
    h_loop = sequential_scan(a, b)
    h_par, rounds = parallel_scan(a, b)
    err = (h_par - h_loop).abs().max().item()
    assert torch.allclose(h_par, h_loop, rtol=1e-10, atol=1e-12), f"max |difference| {err:.2e}"
    return rounds, err


# 1. the selective leaky average of section 2: a_t = exp(Δ_t a), b_t = Δ_t u_t (B = C = 1)
a_row = torch.exp(torch.tensor(delta_sel) * A[0])
b_row = torch.tensor(delta_sel) * torch.tensor(row)
rounds, err = check_scan(a_row, b_row)
print(f"tile row, L = {L}: {rounds} rounds instead of {L} steps, max |parallel - loop| = {err:.1e}")
print(f"   and equal to scan_by_hand: max |difference| = "
      f"{np.abs(parallel_scan(a_row, b_row)[0].numpy() - y_sel).max():.1e}")
# 2. random pairs of a whole (batch, D, N) state, lengths that are no power of two
g = torch.Generator().manual_seed(seed)
for length in (1, 7, 100, 1000):
    a_rand = torch.rand(2, 3, 4, length, generator=g, dtype=torch.float64)   # 0 < Ā < 1
    b_rand = torch.randn(2, 3, 4, length, generator=g, dtype=torch.float64)
    rounds, err = check_scan(a_rand, b_rand)
    print(f"random (2, 3, 4) states, L = {length:4d}: {rounds:2d} rounds, max |parallel - loop| = {err:.1e}")

# %% [markdown]
# Rounds against $L$, counted by running `parallel_scan`: the loop's $L$ dependent steps
# against $\lceil \log_2 L \rceil$ rounds. The price: each Hillis-Steele round touches almost
# all $L$ positions, so the total work is $O(L \log L)$ instead of $O(L)$. Blelloch's scan
# (an up-sweep and a down-sweep over a tree) needs $O(L)$ work in about $2 \log_2 L$ rounds.
# GPU kernels mix the two ideas: each thread runs the plain loop over a few consecutive
# elements, and a log-depth scan combines the threads' results. mamba-ssm's CUDA kernel runs
# such a block scan (CUB's `BlockScan`) over the pairs $(\exp(\Delta A), \Delta B u)$, chunk by
# chunk, carrying the state across chunks; this library's CPU kernel is the plain loop,
# parallel over sequences and channels instead.

# %%
sizes = [2**k for k in range(1, 13)] + [3, 100, 1000, 3000]
depth = {n: parallel_scan(torch.rand(n, dtype=torch.float64), torch.rand(n, dtype=torch.float64))[1]
         for n in sorted(sizes)}
fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.plot(list(depth), list(depth), "k--", label="loop: L dependent steps")
ax.plot(list(depth), list(depth.values()), "o-", color="tab:green",
        label="parallel scan: rounds (counted)")
ax.set_xscale("log", base=2), ax.set_yscale("log", base=2)
ax.set_xlabel("sequence length L"), ax.set_ylabel("dependent steps")
ax.legend(fontsize=8)
ax.set_title("depth of the scan")
fig.tight_layout()
save_figure(fig, out, "scan_depth")
plt.show()
print("rounds:", {n: r for n, r in depth.items()})

# %% [markdown]
# ## 8. The Mamba block: where the scan sits
#
# A Mamba layer (Mamba's Figure 3, Algorithm 2) wraps the scan with projections, a short
# convolution and a gate. For tokens $x \in \mathbb{R}^{L \times d_\text{model}}$ and
# $D = \text{expand} \cdot d_\text{model}$ channels inside:
#
# | step | equation | code (`ssmamba_lite/mamba.py`) | shape |
# |---|---|---|---|
# | input projection | $[x', z] = x W_\text{in}$ | `in_proj`, then `chunk(2)` | $(b, D, L)$ each |
# | causal depthwise convolution, SiLU | $x'_t \leftarrow \mathrm{silu}(\sum_{k} w_k \odot x'_{t-k} + b)$ | `causal_depthwise_conv1d(x, conv1d.weight, conv1d.bias)` | $(b, D, L)$ |
# | selection: Δ, B, C from each token | $[\delta_t, B_t, C_t] = x'_t W_x$ | `x_proj`, `split([R, N, N])` | $(b, L, R + 2N)$ |
# | step size | $\Delta_t = \mathrm{softplus}(W_\Delta \delta_t + b_\Delta)$ | `dt_proj.weight`; its bias and the softplus inside `selective_scan` | $(b, D, L)$ |
# | the scan (S6) | $h_t = e^{\Delta_t A} h_{t-1} + \Delta_t B_t x'_t$, $y_t = \langle C_t, h_t\rangle$ | `selective_scan(...)`, $A = -\exp(A_\text{log})$ | $(b, D, L)$ |
# | skip | $y_t \leftarrow y_t + D \odot x'_t$ | `D` | $(b, D, L)$ |
# | gate | $y_t \leftarrow y_t \cdot \mathrm{silu}(z_t)$ | `z=z` in `selective_scan` | $(b, D, L)$ |
# | output projection | $\mathrm{out} = y W_\text{out}$ | `out_proj` | $(b, L, d_\text{model})$ |
#
# $R$ (`dt_rank`, $\lceil d_\text{model}/16 \rceil$) is the rank of Δ's projection: Δ gets one
# value per channel but is computed through an $R$-dimensional bottleneck.

# %%
from ssmamba_lite.course.diagrams import mamba_block_figure

fig = mamba_block_figure()
save_figure(fig, out, "mamba_block")
plt.show()

# %% [markdown]
# Now the block of the library, `ssmamba_lite.mamba.Mamba`, taken apart: the cell below runs
# each of the steps of the table by hand, with the block's own weights, prints every shape,
# and checks that the result is what `block(x)` returns.

# %%
import torch.nn.functional as F

from ssmamba_lite.mamba import Mamba, causal_depthwise_conv1d

torch.manual_seed(seed)
block = Mamba(d_model=max(1, d_inner // 2), d_state=d_state, expand=2).eval()
tokens = torch.randn(batch_size, 12, block.d_model)                 # (b, L, d_model)
with torch.no_grad():
    shapes = {"x (input tokens)": tokens.shape}
    xz = block.in_proj(tokens).transpose(1, 2)                          # (b, 2D, L)
    x_in, z = xz.chunk(2, dim=1)
    shapes["in_proj -> x', z"] = x_in.shape
    x_in = causal_depthwise_conv1d(x_in, block.conv1d.weight, block.conv1d.bias)   # conv + SiLU
    shapes["conv1d + SiLU"] = x_in.shape
    x_dbl = block.x_proj(x_in.transpose(1, 2))                          # (b, L, R + 2N)
    shapes["x_proj -> [δ, B, C]"] = x_dbl.shape
    d_raw, B_t, C_t = torch.split(x_dbl, [block.dt_rank, block.d_state, block.d_state], dim=-1)
    shapes["δ (low rank)"], shapes["B_t"], shapes["C_t"] = d_raw.shape, B_t.shape, C_t.shape
    delta = F.softplus(d_raw @ block.dt_proj.weight.T + block.dt_proj.bias).transpose(1, 2)
    shapes["Δ = softplus(dt_proj(δ))"] = delta.shape
    A_blk = -torch.exp(block.A_log)                                     # (D, N)
    shapes["A = -exp(A_log)"] = A_blk.shape
    y = selective_scan_reference(x_in, delta, A_blk, B_t.transpose(1, 2), C_t.transpose(1, 2))
    shapes["scan: y"] = y.shape
    y = (y + block.D[:, None] * x_in) * F.silu(z)                       # skip, then gate
    shapes["+ D x', × silu(z)"] = y.shape
    mine = block.out_proj(y.transpose(1, 2))
    shapes["out_proj"] = mine.shape
    theirs = block(tokens)
for name, shape in shapes.items():
    print(f"{name:26s} {tuple(shape)}")
print(f"d_model {block.d_model}, D = d_inner {block.d_inner}, N = d_state {block.d_state}, "
      f"R = dt_rank {block.dt_rank}")
print(f"by hand vs block(x): max |difference| = {(mine - theirs).abs().max():.1e}")
assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5)
print("parameters:", {name: p.numel() for name, p in block.named_parameters()},
      f"total {sum(p.numel() for p in block.parameters())}")

# %% [markdown]
# ## What you learned
#
# - Zero-order hold turns $h' = Ah + Bx$ into $h_t = \bar A h_{t-1} + \bar B x_t$ with
#   $\bar A = e^{\Delta A}$ and $\bar B = (\Delta A)^{-1}(e^{\Delta A} - I)\Delta B$; Mamba's code,
#   mamba-ssm's kernels and this library keep $\bar A$ exact and use $\bar B \approx \Delta B$,
#   which lets in $\Delta a / (e^{\Delta a} - 1) \ge 1$ times more input (printed above for the
#   leaky average: its DC gain at $\Delta$ = `dc_delta`).
# - *Selective* means $\Delta_t, B_t, C_t$ are computed from each token: a large $\Delta_t$
#   resets the state, a small one keeps it.
# - The scan is a loop of $L$ steps ($O(L)$ work); the library's fast paths compute the same
#   numbers and gradients as the readable loop and as mamba-ssm's reference.
# - One step is an affine map, and composing affine maps is associative, so a parallel scan
#   needs only $\lceil \log_2 L \rceil$ dependent rounds (counted above).
# - A Mamba block is in_proj → causal depthwise conv → SiLU → x_proj (Δ, B, C) → scan → $+Dx'$
#   → gate by SiLU(z) → out_proj.
#
# Next, [03 · LPR and DMS](03_lpr_and_dms.ipynb) reads a 2D tissue image with this 1D scan
# (in several directions and scales: DMS) and adds a small convolution (LPR). The course map is
# in [00 · set-up and tour](00_setup_and_tour.ipynb).

# %% [markdown]
# ## Self-check
#
# **Q1** (1 point). The leaky average of section 2 ($a = -1$, $B = C = 1$) with Mamba's
# $\bar B = \Delta B$ and $\Delta = 0.5$ is fed $u_t = 1$ for a long time. At what value does
# its output settle? Two decimals. Set `q1_dc_gain` in the next cell.

# %% nbgrader={"grade": false, "grade_id": "q1_dc_gain", "locked": false, "schema_version": 3, "solution": true, "task": false}
q1_dc_gain = None     # your answer: a number
### BEGIN SOLUTION
q1_dc_gain = 1.27
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q1_dc_gain_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q1", q1_dc_gain, "628fdfdbae1d24bb", decimals=2)

# %% [markdown]
# **Q2** (1 point). Which discretisation does `ssmamba_lite`'s selective scan (and mamba-ssm's)
# compute? Set `q2_discretisation` to `"a"`, `"b"` or `"c"`.
#
# - (a) exact ZOH: $\bar A = e^{\Delta A}$, $\bar B = (\Delta A)^{-1}(e^{\Delta A} - I)\Delta B$
# - (b) $\bar A = e^{\Delta A}$ exact, $\bar B = \Delta B$
# - (c) Euler for both: $\bar A = I + \Delta A$, $\bar B = \Delta B$

# %% nbgrader={"grade": false, "grade_id": "q2_discretisation", "locked": false, "schema_version": 3, "solution": true, "task": false}
q2_discretisation = None     # your answer: "a", "b" or "c"
### BEGIN SOLUTION
q2_discretisation = "b"
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q2_discretisation_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q2", q2_discretisation, "3e23e8160039594a")

# %% [markdown]
# **Q3** (1 point). How many rounds does the Hillis-Steele scan of section 7 need for a
# sequence of $L = 1024$ tokens? Set `q3_rounds`.

# %% nbgrader={"grade": false, "grade_id": "q3_rounds", "locked": false, "schema_version": 3, "solution": true, "task": false}
q3_rounds = None     # your answer: a whole number
### BEGIN SOLUTION
q3_rounds = 10
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q3_rounds_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q3", q3_rounds, "4a44dc15364204a8", decimals=0)

# %% [markdown]
# **Q4** (not graded). S4 computes its (fixed-parameter) layer as one long convolution of
# the input with a kernel $\bar K = (C\bar B, C\bar A\bar B, C\bar A^2\bar B, \dots)$. Why can
# S6 not do that, and what does it use instead?
#
# <details><summary>Answer</summary>
#
# The convolution needs the same $\bar A, \bar B, C$ at every step, so that the effect of
# $u_s$ on $y_t$ depends only on $t - s$. In S6, $\Delta_t, B_t, C_t$ depend on the token, so the
# effect of $u_s$ on $y_t$ is $C_t (\prod_{r=s+1}^{t} \bar A_r) \bar B_s$, a different weight for
# every pair $(s, t)$: no single kernel exists. What remains is the recurrence itself, run as a
# loop (the CPU kernel) or as a parallel scan over the pairs $(\bar A_t, \bar B_t u_t)$ with the
# associative operator of section 7 (mamba-ssm's CUDA kernel).
#
# </details>

# %% [markdown]
# ## Exercises
#
# 1. **Step size and memory.** Set `dc_delta` to 0.05, 0.5, 2 and 5 and rerun section 2's DC
#    cell: plot the printed gain against Δ with the curve $\Delta/(1-e^{-\Delta})$. At which Δ
#    is the simplified $\bar B$ 10% too loud?
# 2. **ZOH inside the loop.** Change `scan_by_hand` to use ZOH's $\bar B$ (per state:
#    $(e^{\Delta a_n} - 1)/a_n \cdot B_n$) and redraw the selective figure of section 2: where do
#    the two versions differ most, at the nuclei (large Δ) or in between?
# 3. **Blelloch.** Write the work-efficient scan (up-sweep, down-sweep) with `combine`, check it
#    with `check_scan` against `sequential_scan`, and count its rounds and its calls of
#    `combine` against `parallel_scan`'s for `lengths`.
# 4. **Speed.** Set `lengths` to `[64, 256, 1024, 4096]` and `device="cuda"` on a GPU machine:
#    does the fast path's curve stay straight (linear in L)?
# 5. **Shapes.** Set `d_inner` and `d_state` to Mamba's defaults for $d_\text{model} = 768$
#    ($D = 1536$, $N = 16$) and rerun section 8: how many parameters does one block have,
#    and which projection holds most of them?
