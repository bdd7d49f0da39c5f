"""SSMamba's named sizes, and what timm is told about them.

`import ssmamba_lite` imports this module, which registers three models with timm, so that
`timm.create_model("ssmamba_lite_tiny", num_classes=9)` builds an `SSMamba` (model.py):

    name                 dims                  depths         parameters
    ssmamba_lite_cpu     (32, 64, 96, 128)     (1, 1, 2, 1)   ~0.56M  (a laptop CPU)
    ssmamba_lite_tiny    (48, 96, 192, 384)    (2, 2, 4, 2)   ~6M
    ssmamba_lite_small   (64, 128, 256, 512)   (2, 3, 8, 3)   wider and deeper, same layout

Every other field is `SSMambaConfig`'s default (DMS in the two coarse stages, convolutions
in the two fine ones); keywords of `timm.create_model` override any field.

Glossary
    PRESETS          name -> SSMambaConfig of the network the name builds
    pretrained_cfg   timm's record of a model: input size, normalisation (mean, std), the
                     names of the first convolution and of the classifier, paper, licence
    default_cfgs     timm's registry entries made from those records
"""

from __future__ import annotations

from timm.layers import register_notrace_module
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ssmamba_lite.dms import DirectionalMultiScale
from ssmamba_lite.layers.mixers import Mamba1DMixer
from ssmamba_lite.model import SSMamba, SSMambaConfig

PRESETS = {
    # "I only have a laptop" (0.56M parameters): what the notebooks, the tests and the
    # autograder train on a CPU. Same layout as tiny, narrower and shallower.
    "ssmamba_lite_cpu": SSMambaConfig(dims=(32, 64, 96, 128), depths=(1, 1, 2, 1)),
    "ssmamba_lite_tiny": SSMambaConfig(dims=(48, 96, 192, 384), depths=(2, 2, 4, 2)),
    "ssmamba_lite_small": SSMambaConfig(dims=(64, 128, 256, 512), depths=(2, 3, 8, 3)),
}


def _cfg(**kwargs) -> dict:
    """timm's pretrained_cfg. mean and std are the ones the engine trains with (0.5: H&E
    colours vary by lab); no weights are published (url "")."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "min_input_size": (3, 32, 32),
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": "bilinear",
        "fixed_input_size": False,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "stem.0",
        "classifier": "head",
        "license": "mit",
        "paper_ids": "arXiv:2604.15711",
        "paper_name": "SSMamba: A Self-Supervised Hybrid State Space Model for "
                      "Pathological Image Classification",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in PRESETS})

# torch.fx (timm's feature extractor) treats the scanning mixers as leaves: their scan orders
# and kernels need concrete sizes.
register_notrace_module(DirectionalMultiScale)
register_notrace_module(Mamba1DMixer)


def _create(variant: str, pretrained: bool = False, **kwargs) -> SSMamba:
    """Build preset `variant` through timm (its pretrained_cfg attached, keywords override
    fields of the preset's SSMambaConfig); features_only returns the four stages' outputs."""
    return build_model_with_cfg(
        SSMamba,
        variant,
        pretrained,
        model_cfg=PRESETS[variant],
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


@register_model
def ssmamba_lite_cpu(pretrained: bool = False, **kwargs) -> SSMamba:
    """SSMamba-lite for a laptop CPU (~0.56M parameters): the course's and the tests' model."""
    return _create("ssmamba_lite_cpu", pretrained, **kwargs)


@register_model
def ssmamba_lite_tiny(pretrained: bool = False, **kwargs) -> SSMamba:
    """SSMamba-lite tiny (~6M parameters): DMS in the two coarse stages."""
    return _create("ssmamba_lite_tiny", pretrained, **kwargs)


@register_model
def ssmamba_lite_small(pretrained: bool = False, **kwargs) -> SSMamba:
    """SSMamba-lite small: wider and deeper, same layout."""
    return _create("ssmamba_lite_small", pretrained, **kwargs)
