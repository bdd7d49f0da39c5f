"""Transforms of H&E tiles (torchvision v2, on uint8 tensors (3, H, W)).

    train_transform   resize, flips, 90° rotations, colour and H&E stain jitter, normalise
    eval_transform    resize, normalise
    mamim_transform   MAMIM's multi-magnification views, then the training augmentations
    MEAN, STD         the normalisation every model of the engine is trained with
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from ssmamba_lite.mamim import RandomMagnification

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)   # H&E colours vary by lab: a neutral normalisation

# Ruifrok & Johnston stain vectors: optical density OD = -log(I) = [H, E, D] @ RGB_FROM_HED
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)


class RandomHEDJitter(torch.nn.Module):
    """Stain augmentation: in HED space each stain s becomes s·(1 + α) + β,
    α ~ U(-sigma, sigma), β ~ U(-bias, bias); then back to RGB. Input/output float in [0, 1]."""

    def __init__(self, sigma: float = 0.05, bias: float = 0.05):
        super().__init__()
        self.sigma, self.bias = sigma, bias

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        od = -torch.log(img.clamp(min=1e-6)).permute(1, 2, 0)          # (H, W, 3)
        hed = od @ HED_FROM_RGB                                         # stain concentrations
        alpha = 1 + (torch.rand(3) * 2 - 1) * self.sigma
        beta = (torch.rand(3) * 2 - 1) * self.bias
        od = (hed * alpha + beta) @ RGB_FROM_HED
        return torch.exp(-od).clamp(0, 1).permute(2, 0, 1)


class RandomRot90(torch.nn.Module):
    """Rotate by k·90°, k uniform in {0, 1, 2, 3}: tissue has no 'up'."""

    def forward(self, img):
        return torch.rot90(img, int(torch.randint(4, ())), dims=(-2, -1))


def train_transform(image_size: int, stain: bool = True) -> v2.Compose:
    """Resize, flips, 90° rotations, colour + H&E stain jitter, normalise."""
    ops = [v2.Resize((image_size, image_size), antialias=True), v2.RandomHorizontalFlip(),
           v2.RandomVerticalFlip(), RandomRot90(), v2.ToDtype(torch.float32, scale=True)]
    if stain:
        ops += [v2.ColorJitter(0.1, 0.1, 0.1, 0.02), RandomHEDJitter()]
    return v2.Compose(ops + [v2.Normalize(MEAN, STD)])


def eval_transform(image_size: int, view=None) -> v2.Compose:
    """Resize, then `view` (when given: a change of the resized uint8 tile, e.g. a zoom),
    then normalise."""
    ops = [v2.Resize((image_size, image_size), antialias=True)]
    ops += [view] if view is not None else []
    return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def mamim_transform(image_size: int, min_zoom: float = 0.5, max_zoom: float = 2.0) -> v2.Compose:
    """MAMIM's views: resize, a random magnification in [min_zoom, max_zoom], then the
    training augmentations."""
    return v2.Compose([v2.Resize((image_size, image_size), antialias=True),
                       RandomMagnification(min_zoom, max_zoom), train_transform(image_size)])
