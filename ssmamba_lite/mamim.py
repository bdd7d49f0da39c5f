"""MAMIM: Mamba Masked Image Modeling, SSMamba's self-supervised pretraining.

Paper name: *MAMIM* (Chai et al. 2026). What the abstract states: self-supervised masked image
modelling on the target ROI dataset itself (no large external data), robust to changes of
magnification. The recipe here is this project's own: SimMIM-style (Xie et al. 2022) with
MambaMIM's point that a scan needs a *full* sequence: masked tokens are not dropped (as MAE
drops them) but replaced by a learned mask token, so every scan direction still walks every
position. The multi-magnification views below are our reading of "robust to magnification".

    image x (batch, 3, H, W), mask M on the stem grid (batch, H/4, W/4), 1 = hidden
    x̃   = x ⊙ (1 - M↑)                          hidden pixels zeroed: no leak through the stem
    t   = stem(x̃)                               (batch, C1, H/4, W/4)
    t̃   = t ⊙ (1 - M) + m ⊙ M                   m: the learned mask token (C1,)
    z_1..z_K = stages(t̃), z_K normed             z_i (batch, C_i, H/s_i, W/s_i), s_i = 4·2^(i-1)
    x̂   = decoder(z_1..z_K)                      (batch, 3, H, W), see below
    y   = (x - μ_p) / σ_p  (per mask patch p, if norm_pix_loss) else x
    L   = Σ M↑ ⊙ (x̂ - y)² / (3 Σ M↑)             loss on hidden pixels only

Two decoders (`decoder=`):

    "hierarchical" (default; after SparK and MambaMIM): every stage, fused top-down, painted
    at the stem's stride, so each 4x4 pixel block has a vector of its own
        f_K = P_K z_K                            P_i: 1x1 conv C_i -> d (lateral)
        f_i = GELU(conv3x3(up2(f_{i+1}) + P_i z_i)),   i = K-1 .. 1
        x̂   = PixelShuffle_4(W f_1)              W: 1x1 conv d -> 3·4²
    "linear" (SimMIM's): the last map alone, x̂ = PixelShuffle_s(W z_K), W: C_K -> 3·s²,
        s = 32. At 64 px z_K is 2x2: each 32x32 quadrant (four 16 px mask patches) is painted
        linearly from one vector, which is why this head learns so little at the course's size.

Hidden positions at the deeper stages: by default the mask token enters once, replacing the
stem's outputs; every stage then computes features at hidden positions too (a scan walks the
whole sequence), and the decoder reads them at every scale. `remask=True` is SparK's choice
instead (its sparse convolutions never compute hidden positions), as an arm to measure:
after every stage the positions wholly inside hidden patches are replaced again, by a learned
token m_i of that stage, before the next stage and the decoder read them

    M_i = minpool_{s_i/4}(M)                     1 where every stem cell under it is hidden
    z_i ← z_i ⊙ (1 - M_i) + m_i ⊙ M_i            i = 1 .. K

(benchmarks/mamim_decoders.py, arm hier-remask, measures both). The pixels under M never
reach the encoder either way: tests hold the prediction fixed when only hidden pixels change.

Masks sized to the image: `default_mask_patch(H)` is the largest of 16, 12, 8, 4 px (multiples
of the stem stride) that divides H and leaves at least 4 x 4 = 16 mask units (16 px at 64 px).

Magnification: pathology tiles arrive at many apparent magnifications (20x, 40x, scanner
differences). `RandomMagnification` shows the encoder each tile at a random zoom z in
[0.5, 2], made from the tile alone, so only one side of it is a change of magnification:

    z > 1   crop and enlarge (`crop_enlarge`): a narrower field of view, enlarged; what a
            higher magnification shows
    z < 1   down- then up-sampling (`down_up_blur`): a blur, the same field of view with less
            detail; NOT a wider field of view (what a lower magnification would add lies
            outside the tile)

Glossary: M = mask, M↑ = mask upsampled to pixels, m = mask_token, z_i = output of stage i
(K stages), M_i, m_i = the mask and token at stage i's grid (remask), f_i = the decoder's map
at stage i's grid, d = decoder_width, μ_p, σ_p = mean and
standard deviation of the pixels of mask patch p, s = encoder stride (32 for SSMamba).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MASK_PATCH_SIZES = (16, 12, 8, 4)   # default_mask_patch's candidates, largest first
MIN_MASK_UNITS = 16                 # mask patches per image that a default must leave
DECODERS = ("hierarchical", "linear")


def default_mask_patch(image_size: int, stem_stride: int = 4) -> int:
    """The largest of MASK_PATCH_SIZES (multiples of the stem stride) that divides image_size
    and leaves at least MIN_MASK_UNITS mask patches; a ValueError where none does."""
    for patch in MASK_PATCH_SIZES:
        units = (image_size // patch) ** 2
        if patch % stem_stride == 0 and image_size % patch == 0 and units >= MIN_MASK_UNITS:
            return patch
    raise ValueError(f"MAMIM: no mask patch size in {MASK_PATCH_SIZES} divides image size "
                     f"{image_size} and leaves at least {MIN_MASK_UNITS} mask patches; use an "
                     f"image size that is a multiple of 32 (e.g. 64)")


class MaskGenerator:
    """Random masks of square blocks of `mask_patch_size` pixels (None: default_mask_patch).

    Exactly round(mask_ratio · number of blocks) blocks are hidden in every image: the
    hidden share is round(r·n)/n, close to the requested ratio r. Returned on the stem grid: (batch, H/4, W/4) bool.
    """

    def __init__(self, image_size: int, mask_patch_size: int | None = 16, stem_stride: int = 4,
                 mask_ratio: float = 0.6):
        if not mask_patch_size:
            mask_patch_size = default_mask_patch(image_size, stem_stride)
        if image_size % mask_patch_size or mask_patch_size % stem_stride:
            raise ValueError(f"MaskGenerator: mask_patch_size {mask_patch_size} must divide "
                             f"image_size {image_size} and be a multiple of {stem_stride}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"MaskGenerator: mask_ratio must be in (0, 1), got {mask_ratio}")
        self.patch = mask_patch_size
        self.blocks = image_size // mask_patch_size          # blocks per side
        self.tokens_per_side = mask_patch_size // stem_stride   # stem tokens per block side
        self.n_masked = round(mask_ratio * self.blocks ** 2)
        if not 0 < self.n_masked < self.blocks ** 2:
            raise ValueError(f"MaskGenerator: mask_ratio {mask_ratio} of {self.blocks ** 2} mask "
                             f"patches hides {self.n_masked}: none or all; use smaller patches")
        self.mask_ratio = mask_ratio

    def __call__(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        scores = torch.rand(batch, self.blocks ** 2, generator=generator)
        hidden = scores.argsort(dim=1)[:, : self.n_masked]   # n_masked random blocks per image
        mask = torch.zeros(batch, self.blocks ** 2, dtype=torch.bool)
        mask.scatter_(1, hidden, True)
        mask = mask.view(batch, self.blocks, self.blocks)
        tokens = self.tokens_per_side
        return mask.repeat_interleave(tokens, 1).repeat_interleave(tokens, 2)


def upsample_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """(batch, h, w) -> (batch, 1, h·factor, w·factor) float."""
    return mask[:, None].float().repeat_interleave(factor, 2).repeat_interleave(factor, 3)


def patch_normalize(x: torch.Tensor, patch: int, eps: float = 1e-6):
    """Per-patch standardisation y = (x - μ_p) / σ_p; returns y, μ and σ at pixel resolution."""
    mean = F.avg_pool2d(x, patch)
    var = (F.avg_pool2d(x * x, patch) - mean ** 2).clamp(min=0)
    up = lambda t: F.interpolate(t, scale_factor=patch, mode="nearest")  # noqa: E731
    mean, std = up(mean), up((var + eps).sqrt())
    return (x - mean) / std, mean, std


class LinearDecoder(nn.Sequential):
    """SimMIM's head on the last stage: x̂ = PixelShuffle_s(W z_K), W a 1x1 conv C_K -> 3·s²
    (an nn.Sequential, so that its weights keep the names decoder.0.* of earlier runs)."""

    def __init__(self, dims: tuple, stride: int):
        super().__init__(nn.Conv2d(dims[-1], 3 * stride ** 2, kernel_size=1),   # W
                         nn.PixelShuffle(stride))

    def forward(self, feats: list) -> torch.Tensor:
        return super().forward(feats[-1])                                 # x̂


class HierarchicalDecoder(nn.Module):
    """Every stage fused top-down, pixels painted at the stem's stride (module docstring)."""

    def __init__(self, dims: tuple, width: int = 32, stem_stride: int = 4):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, kernel_size=1) for c in dims)  # P_i
        self.fuse = nn.ModuleList(                                          # GELU(conv3x3(.))
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU()) for _ in dims[:-1])
        self.proj = nn.Conv2d(width, 3 * stem_stride ** 2, kernel_size=1)    # W
        self.shuffle = nn.PixelShuffle(stem_stride)

    def forward(self, feats: list) -> torch.Tensor:
        f = self.lateral[-1](feats[-1])                                    # f_K = P_K z_K
        for i in reversed(range(len(feats) - 1)):
            up = F.interpolate(f, size=feats[i].shape[-2:], mode="nearest")  # up2(f_{i+1})
            f = self.fuse[i](up + self.lateral[i](feats[i]))                 # f_i
        return self.shuffle(self.proj(f))                                  # x̂


class MAMIM(nn.Module):
    """Masked image modeling around an SSMamba encoder (uses its stem, stages and norm).

    mask_patch_size None: default_mask_patch of each batch's image size. decoder:
    "hierarchical" (default) or "linear" (module docstring); decoder_width: d; remask: a mask
    token per stage after every stage (SparK's choice) instead of at the stem only."""

    def __init__(self, encoder: nn.Module, mask_patch_size: int | None = None,
                 mask_ratio: float = 0.6, norm_pix_loss: bool = True,
                 decoder: str = "hierarchical", decoder_width: int = 32, remask: bool = False):
        super().__init__()
        for part in ("stem", "stages", "norm", "cfg"):
            if not hasattr(encoder, part):
                raise ValueError(f"MAMIM: the encoder must be an SSMamba model (no .{part}); "
                                 f"got {type(encoder).__name__}")
        if decoder not in DECODERS:
            raise ValueError(f"MAMIM: decoder must be one of {DECODERS}, got {decoder!r}")
        self.encoder = encoder
        self.stem_stride = 4
        self.stride = encoder.cfg.stride
        self.mask_patch_size = mask_patch_size or None
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.decoder_kind = decoder
        self.mask_token = nn.Parameter(torch.zeros(1, encoder.cfg.dims[0], 1, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        dims = tuple(encoder.cfg.dims)[: len(encoder.stages)]
        self.remask = remask
        if remask:                                                         # m_1 .. m_K
            self.stage_tokens = nn.ParameterList(
                nn.Parameter(torch.zeros(1, c, 1, 1)) for c in dims)
            for token in self.stage_tokens:
                nn.init.trunc_normal_(token, std=0.02)
        if decoder == "linear":
            self.decoder = LinearDecoder(dims, self.stride)
        else:
            self.decoder = HierarchicalDecoder(dims, decoder_width, self.stem_stride)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """The mask token and what the encoder exempts (its names prefixed with encoder.)."""
        inner = self.encoder.no_weight_decay() if hasattr(self.encoder, "no_weight_decay") \
            else set()
        tokens = {f"stage_tokens.{i}" for i in range(len(self.stage_tokens))} \
            if self.remask else set()
        return {"mask_token"} | tokens | {f"encoder.{n}" for n in inner}

    def patch_size(self, image_size: int) -> int:
        """The mask patch in pixels at this image size."""
        return self.mask_patch_size or default_mask_patch(image_size, self.stem_stride)

    def mask_generator(self, image_size: int) -> MaskGenerator:
        return MaskGenerator(image_size, self.patch_size(image_size), self.stem_stride,
                             self.mask_ratio)

    def features(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> list:
        """z_1 .. z_K: the output of every stage, the last one normed; with remask and a mask
        (batch, H/4, W/4), each re-masked with its stage's token (module docstring)."""
        feats = []
        last = len(self.encoder.stages) - 1
        for i, stage in enumerate(self.encoder.stages):
            tokens = stage(tokens)
            if i == last:
                tokens = self.encoder.norm(tokens)
            if self.remask and mask is not None:
                tokens = self.remasked(tokens, mask, i)
            feats.append(tokens)
        return feats

    def remasked(self, z: torch.Tensor, mask: torch.Tensor, i: int) -> torch.Tensor:
        """z_i ⊙ (1 - M_i) + m_i ⊙ M_i, M_i = 1 where every stem cell under it is hidden."""
        m_i = mask[:, None].float()
        while m_i.shape[-1] > z.shape[-1]:            # each stage halves its grid (floor)
            m_i = -F.max_pool2d(-m_i, 2)                                   # M_i = minpool(M)
        if m_i.shape[-2:] != z.shape[-2:]:
            raise ValueError(f"MAMIM: stage {i + 1}'s grid {tuple(z.shape[-2:])} is not the "
                             f"stem grid halved {i} times ({tuple(mask.shape[-2:])})")
        m_i = m_i.to(z.dtype)
        return z * (1 - m_i) + self.stage_tokens[i].to(z.dtype) * m_i

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None):
        """Returns (loss, prediction (batch, 3, H, W), mask (batch, H/4, W/4))."""
        if mask is None:
            mask = self.mask_generator(images.shape[-1])(images.shape[0]).to(images.device)
        m_px = upsample_mask(mask, self.stem_stride)                      # M↑ (batch, 1, H, W)
        tokens = self.encoder.stem(images * (1 - m_px))                   # t = stem(x̃)
        m = mask[:, None].to(tokens.dtype)
        tokens = tokens * (1 - m) + self.mask_token.to(tokens.dtype) * m  # t̃
        feats = self.features(tokens, mask)                               # z_1 .. z_K
        pred = self.decoder(feats).float()                                # x̂
        target = images.float()
        if self.norm_pix_loss:
            target = patch_normalize(target, self.patch_size(images.shape[-1]))[0]   # y
        err = (pred - target) ** 2 * m_px
        loss = err.sum() / (m_px.sum() * 3).clamp(min=1)                  # L
        return loss, pred, mask

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor | None = None):
        """Prediction in pixel space, visible pixels pasted back: (masked input, result, mask)."""
        _, pred, mask = self(images, mask)
        if self.norm_pix_loss:
            _, mean, std = patch_normalize(images.float(), self.patch_size(images.shape[-1]))
            pred = pred * std + mean
        m_px = upsample_mask(mask, self.stem_stride)
        return images * (1 - m_px), images * (1 - m_px) + pred * m_px, mask


class RandomMagnification(nn.Module):
    """Multi-magnification view: zoom by z, log-uniform in [min_zoom, max_zoom], same size out.
    z > 1: crop a random (H/z)² window and enlarge it; z < 1: a blur (shrink by z and enlarge
    back), the same field of view with less detail (see `magnify`)."""

    def __init__(self, min_zoom: float = 0.5, max_zoom: float = 2.0):
        super().__init__()
        if not 0 < min_zoom <= max_zoom:
            raise ValueError(f"RandomMagnification: need 0 < min_zoom <= max_zoom, "
                             f"got {min_zoom}, {max_zoom}")
        self.min_zoom, self.max_zoom = min_zoom, max_zoom

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        lo, hi = math.log(self.min_zoom), math.log(self.max_zoom)
        zoom = math.exp(lo + (hi - lo) * float(torch.rand(())))
        return magnify(img, zoom, center=False)


def magnify(img: torch.Tensor, zoom: float, center: bool = True) -> torch.Tensor:
    """The tile (3, H, W) at `zoom`, at the same size: z > 1 `crop_enlarge` (a narrower field of
    view, enlarged), z < 1 `down_up_blur` (a blur: the same field of view, less detail; not a
    wider field of view), z = 1 unchanged (up to rounding)."""
    if zoom >= 1:
        return crop_enlarge(img, zoom, center)
    return down_up_blur(img, 1 / zoom)


def crop_enlarge(img: torch.Tensor, factor: float, center: bool = True) -> torch.Tensor:
    """A (H/factor, W/factor) window of the tile (the centre, or a random one), enlarged back to
    (H, W): the view at `factor` times the magnification (factor >= 1)."""
    if factor < 1:
        raise ValueError(f"crop_enlarge: factor must be >= 1, got {factor}")
    H, W = img.shape[-2:]
    h, w = max(1, round(H / factor)), max(1, round(W / factor))
    top = (H - h) // 2 if center else int(torch.randint(H - h + 1, ()))
    left = (W - w) // 2 if center else int(torch.randint(W - w + 1, ()))
    return _resize_back(img.float()[None, :, top:top + h, left:left + w], img)


def down_up_blur(img: torch.Tensor, factor: float) -> torch.Tensor:
    """The tile shrunk by `factor` (antialiased) and enlarged back to its size: a blur that
    keeps the field of view and loses the detail finer than `factor` pixels (factor >= 1)."""
    if factor < 1:
        raise ValueError(f"down_up_blur: factor must be >= 1, got {factor}")
    H, W = img.shape[-2:]
    small = F.interpolate(img.float()[None], size=(max(1, round(H / factor)),
                                                   max(1, round(W / factor))),
                          mode="bilinear", antialias=True, align_corners=False)
    return _resize_back(small, img)


def _resize_back(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """x (1, 3, h, w) float, bilinearly resized to like's (H, W), in like's dtype."""
    x = F.interpolate(x, size=tuple(like.shape[-2:]), mode="bilinear", align_corners=False)[0]
    return x.round().clamp(0, 255).to(like.dtype) if like.dtype == torch.uint8 else x.to(like.dtype)
