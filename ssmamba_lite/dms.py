"""Directional Multi-scale (DMS): selective scans of an image along several paths and scales.

Paper name: *Directional Multi-scale* module (SSMamba, Chai et al. 2026). What the abstract
states: DMS answers "inadequate local-global modeling" by scanning in several directions and at
several scales. Everything below (which orders, which scales, how channels are shared, how the
results are fused) is this project's own design, built from VMamba (SS2D), LocalMamba
(windowed scans) and GroupMamba (split channels).

Why several directions: a selective scan (scan.py) reads a 1D sequence; an image is 2D.
Flatten it one way (row by row) and each token sees only the tokens before it on that path:
the pixel above is W steps back, the one below is not seen by the scan at all (it reaches the
token only through the 3x3 depthwise convolution DMS runs before its scans, which widens every
token's view by one pixel: one row below counts, two rows below do not). So DMS scans the same
map along several paths, each with its own selective-scan parameters (VMamba's SS2D, Liu et
al. 2024), puts every result back in image order and fuses them. It does the same on copies of the
map pooled by 2, 4, ... (coarser scales: short sequences that see far, cheaply), then upsamples
them, so that tissue architecture and cell detail both reach the classifier.

Scan orders (`scan_order(h, w, direction)`; see notebooks for pictures):
    0  row-major             left to right, top to bottom
    1  column-major          top to bottom, left to right
    2, 3                     0 and 1 reversed
    4  windowed row-major    row-major inside `window` x `window` tiles, tiles row-major
    5  windowed column-major column-major inside tiles, tiles column-major  (LocalMamba, Huang
    6, 7                     4 and 5 reversed                                 et al. 2024)

Two ways to share channels between directions (`split_channels`):
    split_channels=False  every direction scans all D channels, outputs summed (VMamba's SS2D): K times
                 the work and the scan parameters of one direction
    split_channels=True   direction k scans only its slice of D_k = D / K channels, outputs concatenated
                 (GroupMamba, Shaker et al. 2024): the work of one direction, whatever K is

Glossary (code name -> math; shapes in brackets; Δ, A, B, C, N, R mean what they mean in
scan.py and mamba.py, Mamba's Algorithm 2, with one set per direction and scale)
    C            channels of the input map x                        (batch, C, H, W)
    D            d_inner = expand * C: channels inside the module
    K            number of directions (scan orders)
    D_k          channels each direction scans: D, or D / K when split_channels
    N            d_state: state size per channel
    R            dt_rank: rank of the projection that makes Δ
    s            a scale: the map is average-pooled by s before the scan
    order_k      scan_order(h, w, k): token indices in visiting order  (L,) with L = h * w
    x_proj_weight  W_x[k]: x_t -> [δ_t (R), B_t (N), C_t (N)]        (K, R + 2N, D_k)
    dt_proj_weight W_Δ[k], dt_proj_bias b_Δ[k]                       (K, D_k, R), (K, D_k)
    A_log        A = -exp(A_log), one row per (direction, channel)   (K * D_k, N)
    D            skip weights of the scan                            (K * D_k,)
    fuse_logits  a_{s,k}: fusion weights w = softmax(a) over all (scale, direction) pairs

    x, z    = in_proj(x_in)                                   two (batch, D, H, W) maps
    x       = silu(DWConv(x))
    x_k     = x, or its k-th slice of D_k channels when split_channels
    y_{s,k} = order_k^{-1}( S6_k( order_k( pool_s(x_k) ) ) )  each scan with its own Δ, B, C, A
    y       = Σ_s up_s( Σ_k w_{s,k} y_{s,k} )                 (batch, D, H, W)
              split_channels: Σ_s up_s( concat_k w_{s,k} y_{s,k} )
              (fuse="concat": a 1x1 convolution of all maps concatenated)
    out     = out_proj( norm(y) · silu(z) )                   (batch, C, H, W)
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from ssmamba_lite.scan import selective_scan
from ssmamba_lite.ssm_init import dt_bias, s4d_real_a_log
from ssmamba_lite.tracing import tracing

NUM_ORDERS = 8  # scan orders 0..7 (see the module docstring)


# ---------------------------------------------------------------------------------------------
# Scan orders: which token of the (h, w) map is visited at each step.
# ---------------------------------------------------------------------------------------------
def scan_order(h: int, w: int, direction: int, window: int = 4) -> torch.Tensor:
    """LongTensor (h * w,): order[i] = row-major index (r * w + c) of the token visited at step i.

    direction: 0 row-major, 1 column-major, 2 and 3 their reverses, 4 and 5 windowed row- and
    column-major (tiles of `window` x `window`, cut short at the border), 6 and 7 their reverses.
    """
    if not 0 <= direction < NUM_ORDERS:
        raise ValueError(f"scan_order: direction must be in 0..{NUM_ORDERS - 1}, got {direction}")
    if h < 1 or w < 1 or window < 1:
        raise ValueError(f"scan_order: h, w and window must be >= 1, got {h}, {w}, {window}")
    r = torch.arange(h).view(h, 1).expand(h, w)                 # row of each token    (h, w)
    c = torch.arange(w).view(1, w).expand(h, w)                 # column of each token (h, w)
    base = direction - 2 if direction in (2, 3, 6, 7) else direction
    if base == 0:
        key = r * w + c                                         # row by row
    elif base == 1:
        key = c * h + r                                         # column by column
    elif base == 4:                                             # tile (r//win, c//win), then inside
        tile = (r // window) * math.ceil(w / window) + c // window
        key = tile * window**2 + (r % window) * window + c % window
    else:                                                       # base == 5: the transpose of 4
        tile = (c // window) * math.ceil(h / window) + r // window
        key = tile * window**2 + (c % window) * window + r % window
    order = torch.argsort(key.reshape(-1))                      # smallest key first
    return order.flip(0) if base != direction else order


def inverse_scan_order(h: int, w: int, direction: int, window: int = 4) -> torch.Tensor:
    """LongTensor (h * w,): inv[j] = step at which token j is visited, so that for a row-major
    sequence x: x[order][inv] == x (puts scan outputs back in image order)."""
    order = scan_order(h, w, direction, window)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel())
    return inv


@functools.lru_cache(maxsize=256)
def _orders(h: int, w: int, directions: tuple, window: int, device: torch.device):
    """Stacked orders and inverses (K, L) for a set of directions, cached per size and device.
    Made outside inference mode even when first asked for under it (feature extraction): the
    cache serves later training too, and inference tensors cannot be saved for backward."""
    with torch.inference_mode(False):
        order = torch.stack([scan_order(h, w, k, window) for k in directions])
        inv = torch.stack([inverse_scan_order(h, w, k, window) for k in directions])
        return order.to(device), inv.to(device)


def upsample(y: torch.Tensor, size: tuple) -> torch.Tensor:
    """Bilinear upsampling of a coarse scale's map back to `size`. A 1x1 map (a small map
    pooled by a large scale) is its one value everywhere: broadcast, which is exact and whose
    backward is a sum (torch.compile's CPU backend fails on the scatter of interpolate's)."""
    if tuple(y.shape[-2:]) == (1, 1):
        return y.expand(*y.shape[:-2], *size)
    return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def resolve_directions(directions) -> tuple:
    """An int K means orders 0..K-1; a sequence names the orders. Returns a tuple of ints."""
    dirs = tuple(range(directions)) if isinstance(directions, int) else tuple(directions)
    if not dirs or len(set(dirs)) != len(dirs) or not all(0 <= k < NUM_ORDERS for k in dirs):
        raise ValueError(f"directions must be an int in 1..{NUM_ORDERS} or distinct orders in "
                         f"0..{NUM_ORDERS - 1}, got {directions!r}")
    return dirs


# ---------------------------------------------------------------------------------------------
# One scale: K selective scans, each direction with its own parameters, in one kernel call.
# ---------------------------------------------------------------------------------------------
class DirectionalScan(nn.Module):
    """(batch, D, h, w) -> (batch, K, D_k, h, w): K scans along K orders, back in image order.

    The K directions are stacked along channels, as in VMamba's SS2D: one kernel call scans
    K * D_k channels, and channel k * D_k + d reads B, C of group k (scan.py's grouped layout).
    split_channels=False: every direction scans all D channels (D_k = D, SS2D).
    split_channels=True: direction k scans only its own slice of D_k = D / K channels
    (GroupMamba, Shaker et al. 2024): K times less scanning, and the directions' outputs are concatenated instead of summed.
    """

    def __init__(self, d_inner: int, directions=4, d_state: int = 8, dt_rank: int = 4,
                 window: int = 4, split_channels: bool = True, dt_min: float = 1e-3,
                 dt_max: float = 0.1, scan_backend: str = "auto"):
        super().__init__()
        self.directions = resolve_directions(directions)
        K, N, R = len(self.directions), d_state, dt_rank
        if split_channels and d_inner % K:
            raise ValueError(f"DirectionalScan: split_channels needs d_inner ({d_inner}) "
                             f"divisible by the number of directions ({K})")
        Dk = d_inner // K if split_channels else d_inner
        self.d_inner = d_inner
        self.d_k = Dk                           # D_k: channels one direction scans
        self.d_state = N
        self.dt_rank = R
        self.window = window
        self.split_channels = split_channels
        self.scan_backend = scan_backend
        self.x_proj_weight = nn.Parameter(torch.randn(K, R + 2 * N, Dk) * Dk**-0.5)   # W_x[k]
        self.dt_proj_weight = nn.Parameter(torch.empty(K, Dk, R).uniform_(-R**-0.5, R**-0.5))
        # Δ starts log-uniform in [dt_min, dt_max], A as S4D-real: as in mamba.py (ssm_init.py).
        self.dt_proj_bias = nn.Parameter(dt_bias(K, Dk, dt_min=dt_min, dt_max=dt_max))  # b_Δ[k]
        self.A_log = nn.Parameter(s4d_real_a_log(K * Dk, N))                     # A = -exp(A_log)
        self.D = nn.Parameter(torch.ones(K * Dk))
        for p in (self.dt_proj_bias, self.A_log, self.D):            # as Mamba: no weight decay
            p._no_weight_decay = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        K, Dk, L, N, R = len(self.directions), self.d_k, h * w, self.d_state, self.dt_rank
        order, inv = _orders(h, w, self.directions, self.window, x.device)         # (K, L)
        groups = K if self.split_channels else 1         # channel slices: one per direction, or one for all
        xs = x.reshape(b, groups, Dk, L).expand(b, K, Dk, L)
        xs = xs.gather(3, order.view(1, K, 1, L).expand(b, K, Dk, L))   # (b, K, Dk, L), scan order
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)             # (b, K, R+2N, L)
        dt, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
        dt = torch.einsum("bkrl,kdr->bkdl", dt, self.dt_proj_weight)               # W_Δ δ
        A = -torch.exp(self.A_log.float())                                         # (K*Dk, N)
        y = selective_scan(
            xs.reshape(b, K * Dk, L), dt.reshape(b, K * Dk, L), A,
            Bs.contiguous(), Cs.contiguous(),                          # groups: (b, K, N, L)
            self.D.float(), delta_bias=self.dt_proj_bias.reshape(-1).float(),
            delta_softplus=True, backend=self.scan_backend)                        # (b, K*Dk, L)
        y = y.view(b, K, Dk, L).gather(3, inv.view(1, K, 1, L).expand(b, K, Dk, L))  # image order
        return y.view(b, K, Dk, h, w)


# ---------------------------------------------------------------------------------------------
# The DMS module: in_proj -> DWConv -> scans at every scale -> fuse -> gate -> out_proj.
# ---------------------------------------------------------------------------------------------
class DirectionalMultiScale(nn.Module):
    """DMS token mixer: (batch, C, H, W) -> (batch, C, H, W), any H and W.

    directions: K (orders 0..K-1) or a tuple of scan orders. scales: pooling factors, 1 = full
    resolution (each scale has its own scan parameters). d_state: N. expand: D = expand * C.
    split_channels: direction k scans only channels [k D/K, (k+1) D/K) (K times cheaper; directions
    concatenated) instead of all D channels (SS2D; directions summed). fuse: "weights" (learned
    softmax weights w_{s,k}, see `fusion_weights()`) or "concat" (concatenate every map, 1x1
    convolution). window: tile size of orders 4..7. d_conv: kernel of the depthwise convolution
    before the scans (1: none, the scans see the map as it is). The defaults (4 directions,
    scales 1 and 2, d_state 8, split channels) are those of SSMambaConfig.
    """

    def __init__(self, dim: int, directions=4, scales=(1, 2), d_state: int = 8,
                 expand: float = 1.0, dt_rank="auto", d_conv: int = 3, window: int = 4,
                 split_channels: bool = True, fuse: str = "weights", scan_backend: str = "auto"):
        super().__init__()
        self.directions = resolve_directions(directions)
        self.scales = tuple(int(s) for s in scales)
        if not self.scales or min(self.scales) < 1 or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"DirectionalMultiScale: scales must be distinct ints >= 1, "
                             f"got {scales!r}")
        if fuse not in ("weights", "concat"):
            raise ValueError(f"DirectionalMultiScale: fuse must be 'weights' or 'concat', "
                             f"got {fuse!r}")
        D = int(expand * dim)
        R = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        K, S = len(self.directions), len(self.scales)
        self.dim = dim
        self.d_inner = D
        self.split_channels = split_channels
        self.fuse = fuse
        self.in_proj = nn.Conv2d(dim, 2 * D, 1)                               # x -> [x, z]
        self.conv = nn.Conv2d(D, D, d_conv, padding=d_conv // 2, groups=D)    # local mixing
        self.scans = nn.ModuleList(
            DirectionalScan(D, self.directions, d_state, R, window, split_channels,
                            scan_backend=scan_backend) for _ in self.scales)
        if fuse == "weights":
            self.fuse_logits = nn.Parameter(torch.zeros(S, K))                 # a_{s,k}
            self.fuse_logits._no_weight_decay = True
        else:
            self.fuse_proj = nn.Conv2d(S * (D if split_channels else K * D), D, 1)
        self.out_norm = LayerNorm2d(D)
        self.out_proj = nn.Conv2d(D, dim, 1)

    def fusion_weights(self) -> torch.Tensor:
        """w_{s,k} = softmax over all (scale, direction) pairs of a_{s,k}: (S, K), sums to 1."""
        return self.fuse_logits.flatten().softmax(0).view_as(self.fuse_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not tracing() and (x.dim() != 4 or x.shape[1] != self.dim):
            raise ValueError(f"DirectionalMultiScale: input must have shape (batch, {self.dim}, "
                             f"H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        x, z = self.in_proj(x).chunk(2, dim=1)                 # (batch, D, H, W) each
        x = F.silu(self.conv(x))
        w = self.fusion_weights() if self.fuse == "weights" else None
        maps = []
        for i, (s, scan) in enumerate(zip(self.scales, self.scans)):
            xs = x if s == 1 else F.adaptive_avg_pool2d(x, (math.ceil(H / s), math.ceil(W / s)))
            ys = scan(xs)                                      # (batch, K, D_k, H/s, W/s)
            if w is not None and not self.split_channels:
                ys = torch.einsum("bkdhw,k->bdhw", ys, w[i])   # Σ_k w_{s,k} y_{s,k}
            else:
                if w is not None:
                    ys = ys * w[i].view(1, -1, 1, 1, 1)        # w_{s,k} y_{s,k}
                ys = ys.flatten(1, 2)                          # concat: (batch, K*D_k, H/s, W/s)
            if s != 1:
                ys = upsample(ys, (H, W))
            maps.append(ys)
        y = sum(maps) if w is not None else self.fuse_proj(torch.cat(maps, dim=1))  # (b, D, H, W)
        y = self.out_norm(y) * F.silu(z)                       # gate
        return self.out_proj(y)                                # (batch, C, H, W)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, d_inner={self.d_inner}, directions={self.directions}, "
                f"scales={self.scales}, split_channels={self.split_channels}, fuse={self.fuse!r}")
