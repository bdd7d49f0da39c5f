"""SSMamba: a hierarchical hybrid of convolutions and directional state-space mixing.

Paper name: *SSMamba* (Chai et al. 2026). What the abstract states: a hybrid state space model
with DMS and LPR, pretrained by MAMIM, then fine-tuned. The layout below (stem, stages, where
convolutions and where scans run, widths and depths) is this project's own design.

    image (batch, 3, H, W)
    stem: two 3x3 convolutions, stride 2 each              -> (batch, C1, H/4, W/4)
    stage i = 1..4: [patch merging from stage 2 on: norm, 2x2 conv stride 2], depth_i x Block
    norm, global average pool, linear head                 -> (batch, num_classes)

    Block(x):  x = LPR(x)                                  Local Perception Residual (lpr.py)
               x = x + DropPath(Mixer(Norm(x)))            token mixer of the stage (layers/mixers.py)
               x = x + DropPath(MLP(Norm(x)))              per-token MLP (layers/mlp.py)

Mixers: "conv" in the first `conv_stages` stages (high resolution, many tokens), "dms" in the
others (few tokens): a scan costs batch x D x L x N per direction, so scans go where L is small,
as in MambaVision. Defaults (d_state 8, split channels) were set by benchmarks/bench_model.py.

Input sizes: any H, W that the network stride (4 * 2^(stages - 1) = 32) divides; else a
ValueError naming the nearest valid sizes. Grad-CAM target layer: `model.stages[-1]` (output
(batch, C4, H/32, W/32), before the final norm); `model.stages[-2]` gives a map twice as fine.
timm: `import ssmamba_lite` registers `ssmamba_lite_cpu` (a laptop-sized model),
`ssmamba_lite_tiny` and `ssmamba_lite_small` (presets.py holds them).

Glossary (config field -> meaning; what switching it changes)
    dims, depths    C_i and number of blocks of each stage
    mixer           "dms" | "mamba1d" | "attention" for the stages after `conv_stages`, or one
                    name per stage, "conv" included (then `conv_stages` is not used)
    conv_stages     how many leading stages use the "conv" mixer
    d_state         N of the scans: one int, or one per stage
    directions      K scan orders of DMS (1, 2, 4; or a tuple of orders, see dms.scan_order).
                    With split_channels, K changes only what each channel sees (and adds K
                    fusion weights per scale); without, each direction adds its own scan
                    parameters and K times the scanning work
    scales          pooling factors of DMS (1 = full resolution); each adds a set of scan
                    parameters and a scan of L / s^2 tokens
    split_channels  DMS direction k scans its own D/K channels (True) or all D (False, SS2D)
    use_lpr         LPR in front of every block; False removes C(k^2 + 1) parameters per block
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerNorm2d
from timm.models import checkpoint_seq

from ssmamba_lite.dms import resolve_directions
from ssmamba_lite.layers.mixers import MIXERS, make_mixer
from ssmamba_lite.layers.mlp import Mlp, fused_applies, norm_mlp
from ssmamba_lite.lpr import LocalPerceptionResidual
from ssmamba_lite.tracing import tracing

POOLS = ("avg", "max", "")          # global pooling before the head; "" keeps the maps


@dataclass
class SSMambaConfig:
    """Architecture of an SSMamba network (nothing about training lives here)."""

    num_classes: int = 1000
    in_chans: int = 3
    img_size: int = 224              # nominal size (pretrained_cfg); any multiple of `stride` works
    dims: tuple = (48, 96, 192, 384)
    depths: tuple = (2, 2, 4, 2)
    mixer: str | tuple = "dms"
    conv_stages: int = 2
    d_state: int | tuple = 8
    directions: int | tuple = 4
    scales: tuple = (1, 2)
    use_lpr: bool = True
    lpr_kernel: int = 3
    lpr_zero_init: bool = True       # LPR starts as the identity (False: PyTorch's default init)
    ssm_expand: float = 1.0          # D = ssm_expand * C inside DMS and mamba1d
    split_channels: bool = True      # DMS: direction k scans its own D/K channels
    conv_kernel: int = 7             # kernel of the "conv" mixer
    head_dim: int = 32               # attention heads = C // head_dim
    mlp_ratio: float = 4.0
    drop_rate: float = 0.0           # dropout before the head
    drop_path_rate: float = 0.1      # stochastic depth, rising linearly to this value
    global_pool: str = "avg"         # "avg", "max", or "" (no pooling: maps out, timm's way)
    scan_backend: str = "auto"       # see scan.which_backend

    def __post_init__(self):
        n = len(self.depths)
        if len(self.dims) != n or n < 1:
            raise ValueError(f"SSMambaConfig: dims {self.dims} and depths {self.depths} must "
                             f"have the same, non-zero length")
        for name in self.stage_mixers():
            if name not in MIXERS:
                raise ValueError(f"SSMambaConfig: mixer must be one of {MIXERS}, got {name!r}")
        if isinstance(self.d_state, (tuple, list)) and len(self.d_state) != n:
            raise ValueError(f"SSMambaConfig: d_state needs one value per stage ({n}), "
                             f"got {self.d_state}")
        resolve_directions(self.directions)
        if self.global_pool not in POOLS:
            raise ValueError(f"SSMambaConfig: global_pool must be one of {POOLS}, "
                             f"got {self.global_pool!r}")

    @property
    def stride(self) -> int:
        """Total downsampling of the network: the stem's 4, then 2 per patch merging."""
        return 4 * 2 ** (len(self.depths) - 1)

    def stage_mixers(self) -> tuple:
        n = len(self.depths)
        if isinstance(self.mixer, str):
            k = min(max(self.conv_stages, 0), n)
            return ("conv",) * k + (self.mixer,) * (n - k)
        if len(self.mixer) != n:
            raise ValueError(f"SSMambaConfig: mixer needs one name per stage ({n}), "
                             f"got {self.mixer}")
        return tuple(self.mixer)

    def stage_d_states(self) -> tuple:
        n = len(self.depths)
        if isinstance(self.d_state, (tuple, list)):
            return tuple(self.d_state)
        return (self.d_state,) * n


# ---------------------------------------------------------------------------------------------
# Blocks, stages, the network.
# ---------------------------------------------------------------------------------------------
class Block(nn.Module):
    """[LPR -> norm -> mixer -> residual -> norm -> MLP -> residual] on (batch, C, H, W)."""

    def __init__(self, dim: int, mixer: str, cfg: SSMambaConfig, d_state: int, drop_path: float):
        super().__init__()
        self.lpr = (LocalPerceptionResidual(dim, cfg.lpr_kernel, zero_init=cfg.lpr_zero_init)
                    if cfg.use_lpr else nn.Identity())
        self.norm1 = LayerNorm2d(dim)
        self.mixer = make_mixer(mixer, dim, d_state, directions=cfg.directions, scales=cfg.scales,
                                expand=cfg.ssm_expand, split_channels=cfg.split_channels,
                                conv_kernel=cfg.conv_kernel, head_dim=cfg.head_dim,
                                scan_backend=cfg.scan_backend)
        self.norm2 = LayerNorm2d(dim)
        self.mlp = Mlp(dim, cfg.mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = self.lpr(x)                                        # x + DWConv(x)
        x = x + self.drop_path(self.mixer(self.norm1(x)))      # token mixing
        return x + self.drop_path(self.channel_mlp(x))         # channel mixing

    def channel_mlp(self, x):
        """MLP(Norm(x)). Training on a CPU, as one autograd step that keeps less for the
        backward pass (layers/mlp.py: norm_mlp); the same function, to float rounding."""
        if fused_applies(x, self.norm2, self.mlp):
            return norm_mlp(x, self.norm2, self.mlp)
        return self.mlp(self.norm2(x))


class Stem(nn.Sequential):
    """Two 3x3 convolutions, stride 2 each: (batch, 3, H, W) -> (batch, C1, H/4, W/4).

    The image enters in channels-last memory order (still indexed (batch, C, H, W)), and every
    map after it stays so: on CPUs the 1x1 and depthwise convolutions, and the norms, which
    work on the channels of each position, run faster on it (benchmarks/bench_model.py)."""

    def forward(self, x):
        return super().forward(x.contiguous(memory_format=torch.channels_last))


class Stage(nn.Module):
    """Optional patch merging (norm, 2x2 conv stride 2: (C_in, H, W) -> (C, H/2, W/2)), blocks."""

    def __init__(self, in_dim: int, dim: int, depth: int, mixer: str, cfg: SSMambaConfig,
                 d_state: int, drop_paths: list, downsample: bool):
        super().__init__()
        self.downsample = (nn.Sequential(LayerNorm2d(in_dim), nn.Conv2d(in_dim, dim, 2, stride=2))
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*(Block(dim, mixer, cfg, d_state, p)
                                      for p in drop_paths[:depth]))
        self.grad_checkpointing = False

    def forward(self, x):
        x = self.downsample(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not tracing():
            return checkpoint_seq(self.blocks, x, use_reentrant=False)   # RNG replayed
        return self.blocks(x)


def stage_indices(n: int, indices) -> tuple[list, int]:
    """timm's convention for which of n stages to return: None all, an int k the last k, a
    list those (negative ones from the end). Returns (sorted indices, the largest)."""
    if indices is None:
        take = list(range(n))
    elif isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"SSMamba: indices must be in 1..{n}, got {indices}")
        take = list(range(n - indices, n))
    else:
        take = sorted(i % n for i in indices)
        if any(not -n <= i < n for i in indices):
            raise ValueError(f"SSMamba: stage indices must be in -{n}..{n - 1}, got {indices}")
    return take, max(take)


def nearest_valid_sizes(h: int, w: int, stride: int) -> list:
    """Sizes (H', W') closest to (h, w) with both a positive multiple of `stride`."""
    def near(n):
        lo = max(stride, n // stride * stride)
        hi = max(stride, -(-n // stride) * stride)
        return sorted({lo, hi})
    return [(a, b) for a in near(h) for b in near(w)]


class SSMamba(nn.Module):
    """SSMamba classifier with timm's interface: (batch, in_chans, H, W) -> (batch, num_classes).

    SSMamba(cfg, **overrides): fields of `SSMambaConfig`; keywords override fields of cfg.
    """

    def __init__(self, cfg: SSMambaConfig | None = None, **overrides):
        super().__init__()
        cfg = dataclasses.replace(cfg or SSMambaConfig(), **overrides)
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.global_pool = cfg.global_pool
        self.num_features = cfg.dims[-1]
        self.head_hidden_size = cfg.dims[-1]
        self.drop_rate = cfg.drop_rate
        c0 = cfg.dims[0]
        self.stem = Stem(                           # (batch, 3, H, W) -> (batch, C1, H/4, W/4)
            # no conv bias before a BatchNorm: the norm removes it, its gradient is rounding noise
            nn.Conv2d(cfg.in_chans, c0 // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c0 // 2),
            nn.GELU(),
            nn.Conv2d(c0 // 2, c0, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c0),
        )
        # stochastic depth rises linearly over all blocks of the network
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        stages = []
        start = 0                                   # index of the stage's first block
        in_dim = c0
        layout = zip(cfg.dims, cfg.depths, cfg.stage_mixers(), cfg.stage_d_states())
        for i, (dim, depth, mixer, d_state) in enumerate(layout):
            stages.append(Stage(in_dim, dim, depth, mixer, cfg, d_state, dpr[start:], i > 0))
            start = start + depth
            in_dim = dim
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=d, reduction=4 * 2**i, module=f"stages.{i}")
                             for i, d in enumerate(cfg.dims)]
        self.norm = LayerNorm2d(self.num_features)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Identity()
        self.reset_classifier(cfg.num_classes)

    # -- timm interface -----------------------------------------------------------------------
    def check_input_size(self, h: int, w: int) -> None:
        s = self.cfg.stride
        if h < s or w < s or h % s or w % s:
            sizes = " or ".join(f"{a}x{b}" for a, b in nearest_valid_sizes(h, w, s))
            raise ValueError(f"SSMamba: input size {h}x{w} (HxW) does not work: H and W must be "
                             f"positive multiples of the network stride {s}; nearest valid "
                             f"sizes: {sizes}")

    def check_input(self, x: torch.Tensor) -> None:
        """A ValueError unless x is (batch, in_chans, H, W) with H, W multiples of the stride
        (skipped while torch.fx traces: it cannot branch on shapes)."""
        if tracing():
            return
        if x.dim() != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"SSMamba: input must have shape (batch, {self.cfg.in_chans}, H, W), "
                             f"got {tuple(x.shape)}")
        self.check_input_size(*x.shape[-2:])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_chans, H, W) -> (batch, C4, H/32, W/32)."""
        self.check_input(x)
        return self.norm(self.stages(self.stem(x)))

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's feature API: (final features, [the outputs of the stages in `indices`]).
        indices: an int n (the last n stages) or a list of stage indices; norm: apply the
        final norm to the last stage's output too; stop_early: skip stages after the last
        index; intermediates_only: return the list alone."""
        if output_fmt != "NCHW":
            raise ValueError(f"SSMamba: output_fmt must be 'NCHW', got {output_fmt!r}")
        self.check_input(x)
        take, last = stage_indices(len(self.stages), indices)
        stages = self.stages[:last + 1] if stop_early or intermediates_only else self.stages
        x = self.stem(x)
        out = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                out.append(self.norm(x) if norm and i == len(self.stages) - 1 else x)
        if intermediates_only:
            return out
        return (self.norm(x) if len(stages) == len(self.stages) else x), out

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list:
        """Drop the stages after the last of `indices` (and the final norm, which only fits the
        last stage's width, when a stage goes or prune_norm; and the head); returns the stage
        indices kept."""
        take, last = stage_indices(len(self.stages), indices)
        if prune_norm or last < len(self.stages) - 1:
            self.norm = nn.Identity()
        self.stages = self.stages[:last + 1]
        self.num_features = self.cfg.dims[last]
        self.head_hidden_size = self.cfg.dims[last]
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(batch, C4, h, w) -> pooled (batch, C4) if pre_logits else logits (batch, classes).
        global_pool "": no pooling, maps out (the head, if any, applied at every position)."""
        if self.global_pool == "":
            x = self.head_drop(x)
            if pre_logits or isinstance(self.head, nn.Identity):
                return x
            return self.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)   # (batch, K, h, w)
        x = x.mean((2, 3)) if self.global_pool == "avg" else x.amax((2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in POOLS:
                raise ValueError(f"SSMamba: global_pool must be one of {POOLS}, "
                                 f"got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch: in training each stage keeps only its blocks' inputs, recomputing them
        in backward (less memory, one more forward); never the stem (BatchNorm: counted twice)."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameters weight decay must not pull to 0 beyond biases and norms (timm's groups
        exempt 1-D ones): those marked `_no_weight_decay` (Δ biases, A_log, D, fusion logits)."""
        return {n for n, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's layer grouping (layer-wise lr decay): the stem first, then every block in
        order (a stage's patch merging with its first block), the final norm last."""
        if coarse:
            return dict(stem=r"^stem", blocks=r"^stages\.(\d+)")
        blocks = [
            (r"^stages\.(\d+)\.downsample", (0,)),
            (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            (r"^norm", (99999,)),
        ]
        return dict(stem=r"^stem", blocks=blocks)
