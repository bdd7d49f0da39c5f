"""Multiple-instance learning (MIL) aggregators: a bag of tile features -> one slide label.

A slide is a *bag* of n tile feature vectors h_1..h_n (features.py); only the bag has a label.
Both aggregators standardise the features, embed the tiles, weigh them with attention and
classify the weighted mean:

        x̂_k  = (x_k − μ) / σ                                   μ, σ: per feature dimension,
                                                               set from the training tiles
    ABMIL (Ilse et al. 2018, gated attention):
        h_k  = ReLU(W_e x̂_k)                                   tile embedding     (batch, n, E)
        a_k  = softmax_k( w^T (tanh(V h_k) ⊙ sigmoid(U h_k)) ) attention weights  (batch, n)
        z    = Σ_k a_k h_k                                     slide embedding    (batch, E)
        p(y) = softmax(W_c z)                                  slide prediction   (batch, K)
    Tiles are treated as a *set*: ABMIL ignores their order and neighbours.

    Mamba-MIL (after MambaMIL, Yang et al. 2024): Mamba layers run over the tile *sequence*
    (row-major order of the tiles on the slide) before the same attention pooling,
        h ← h + Mamba(LayerNorm(h))          (x layers; with `bidirectional`, plus the same
                                              scan run over the reversed sequence)
    so each tile embedding can carry context from the tiles before (and after) it.
    MambaMIL reorders the sequence in a second branch (SR-Mamba); we scan forward and backward
    instead, which is simpler and also gives every tile context from both sides.

Batches of bags: bags have different lengths n_i. `pad_bags` stacks them right-padded to
n_max with a mask (True = a real tile). Padding is exact, not approximate: attention gives
padded tiles weight 0, and a Mamba scan is causal, so tiles after position n_i never reach
the outputs at positions < n_i; the backward scan reverses each bag *within its length*.

Glossary
    in_dim      C: size of a tile feature (the encoder's num_features)
    hidden      E: size of the tile embedding
    attn_dim    size of the gated-attention hidden layer (V, U: E -> attn_dim, w: attn_dim -> 1)
    layers      number of Mamba layers (Mamba-MIL only); d_state: their N
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ssmamba_lite.mamba import Mamba

AGGREGATORS = ("abmil", "mamba")


@dataclass
class MILConfig:
    """Architecture of a MIL aggregator (training settings live in train.py)."""

    in_dim: int = 384
    num_classes: int = 2
    aggregator: str = "abmil"        # "abmil" | "mamba"
    hidden: int = 128                # E
    attn_dim: int = 64
    dropout: float = 0.25
    layers: int = 2                  # Mamba-MIL: number of Mamba layers
    d_state: int = 16                # Mamba-MIL: N of each scan
    bidirectional: bool = True       # Mamba-MIL: also scan the reversed sequence
    scan_backend: str = "auto"       # Mamba-MIL: see scan.which_backend

    def __post_init__(self):
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"MILConfig: aggregator must be one of {AGGREGATORS}, "
                             f"got {self.aggregator!r}")


def pad_bags(bags: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(n_i, C)] -> x (batch, n_max, C) zero-padded on the right, mask (batch, n_max) bool."""
    if any(b.dim() != 2 or b.shape[0] == 0 for b in bags):
        raise ValueError(f"pad_bags: every bag must be a non-empty (n, C) tensor, got shapes "
                         f"{[tuple(b.shape) for b in bags]}")
    x = nn.utils.rnn.pad_sequence(bags, batch_first=True)
    lengths = torch.tensor([b.shape[0] for b in bags], device=x.device)
    mask = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
    return x, mask


class GatedAttention(nn.Module):
    """a_k = softmax_k( w^T (tanh(V h_k) ⊙ sigmoid(U h_k)) ) over the real tiles of each bag."""

    def __init__(self, dim: int, attn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.V = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.U = nn.Sequential(nn.Linear(dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.w = nn.Linear(attn_dim, 1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h (batch, n, E), mask (batch, n) -> a (batch, n), each row summing to 1."""
        scores = self.w(self.V(h) * self.U(h)).squeeze(-1)       # (batch, n)
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)


def reverse_within(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse each bag's first n_i positions, leave its padding in place. Its own inverse.
    x (batch, n_max, E), mask (batch, n_max)."""
    n = mask.sum(1, keepdim=True)                               # (batch, 1)
    t = torch.arange(x.shape[1], device=x.device)[None]         # (1, n_max)
    idx = torch.where(t < n, n - 1 - t, t)                      # (batch, n_max)
    return x.gather(1, idx[..., None].expand_as(x))


class MambaLayer(nn.Module):
    """h + Mamba(LN(h)) [+ reversed Mamba over each bag's reversed tiles]: (batch, n, E)."""

    def __init__(self, dim: int, d_state: int, bidirectional: bool, scan_backend: str = "auto"):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fwd = Mamba(dim, d_state=d_state, expand=1, scan_backend=scan_backend)
        self.bwd = (Mamba(dim, d_state=d_state, expand=1, scan_backend=scan_backend)
                    if bidirectional else None)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        u = self.norm(h)
        y = self.fwd(u)
        if self.bwd is not None:
            y = y + reverse_within(self.bwd(reverse_within(u, mask)), mask)
        return h + y


class MILAggregator(nn.Module):
    """ABMIL or Mamba-MIL (`cfg.aggregator`): bags (batch, n, C) + mask -> logits (batch, K).

    forward(x, mask=None) returns (logits (batch, K), attention (batch, n)); a single bag may
    be passed as (n, C)."""

    def __init__(self, cfg: MILConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feature_mean", torch.zeros(cfg.in_dim))   # μ
        self.register_buffer("feature_std", torch.ones(cfg.in_dim))     # σ
        self.embed = nn.Sequential(nn.Linear(cfg.in_dim, cfg.hidden), nn.ReLU(),
                                   nn.Dropout(cfg.dropout))
        n_layers = cfg.layers if cfg.aggregator == "mamba" else 0
        self.layers = nn.ModuleList(MambaLayer(cfg.hidden, cfg.d_state, cfg.bidirectional,
                                               cfg.scan_backend) for _ in range(n_layers))
        self.norm = nn.LayerNorm(cfg.hidden) if n_layers else nn.Identity()
        self.attention = GatedAttention(cfg.hidden, cfg.attn_dim, cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden, cfg.num_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        if x.dim() == 2:
            x = x[None]                                          # one bag: (1, n, C)
        if x.dim() != 3 or x.shape[-1] != self.cfg.in_dim:
            raise ValueError(f"MILAggregator: bags must have shape (batch, n, {self.cfg.in_dim}),"
                             f" got {tuple(x.shape)}")
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        h = self.embed((x - self.feature_mean) / self.feature_std)  # (batch, n, E)
        for layer in self.layers:
            h = layer(h, mask)
        h = self.norm(h)
        a = self.attention(h, mask)                              # (batch, n)
        z = torch.einsum("bn,bne->be", a, h)                     # z = Σ_k a_k h_k
        return self.classifier(z), a


    @torch.no_grad()
    def set_feature_stats(self, bags) -> None:
        """μ, σ of the tile features of the training bags (an iterable of (n_i, C) tensors, or
        one (n_tiles, C) tensor), accumulated bag by bag in float64: Σx, Σx², n, so no
        concatenation of every tile is ever held in memory."""
        bags = [bags] if isinstance(bags, torch.Tensor) else bags
        n, s1, s2 = 0, 0.0, 0.0
        for f in bags:
            f = f.double()
            n, s1, s2 = n + len(f), s1 + f.sum(0), s2 + (f * f).sum(0)
        mean = s1 / n
        var = (s2 - n * mean * mean).clamp_min(0) / max(n - 1, 1)   # unbiased, as Tensor.std
        self.feature_mean.copy_(mean.float())
        self.feature_std.copy_(var.sqrt().float().clamp_min(1e-6))
