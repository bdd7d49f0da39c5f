"""Building networks by name: SSMamba presets and, as baselines, any timm model.

A trained model is described by a small record (saved as config.json beside its weights):
    model        preset or timm name ("ssmamba_lite_tiny", "resnet18", ...)
    model_args   overrides of SSMambaConfig fields (ablations: use_lpr, directions, ...)
    model_config the resulting SSMambaConfig, for reading (SSMamba models only)
    classes, image_size, mean, std, task
so that `model_from_config(record)` rebuilds the same network.
"""

from __future__ import annotations

import dataclasses

import timm
import torch

import ssmamba_lite.model  # noqa: F401  (registers the ssmamba_lite_* presets with timm)
from ssmamba_lite.data import MEAN, STD


def is_ssmamba(name: str) -> bool:
    return name in ssmamba_lite.model.PRESETS


def build_model(name: str, num_classes: int, image_size: int, model_args: dict | None = None
                ) -> torch.nn.Module:
    """An SSMamba preset (with `model_args` overrides) or a timm model, randomly initialised."""
    model_args = dict(model_args or {})
    if is_ssmamba(name):
        return timm.create_model(name, num_classes=num_classes, img_size=image_size, **model_args)
    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: use {sorted(ssmamba_lite.model.PRESETS)} "
                         f"or a timm model name such as resnet18 or vit_tiny_patch16_224")
    try:   # ViTs need the image size; CNNs take any size and refuse the argument
        return timm.create_model(name, num_classes=num_classes, img_size=image_size, **model_args)
    except TypeError:
        return timm.create_model(name, num_classes=num_classes, **model_args)


def model_record(name, model, cfg, classes, task: str) -> dict:
    """What config.json holds about a model and the run that made it."""
    record = {"model": name, "model_args": dict(cfg.model_args), "task": task,
              "classes": list(classes) if classes is not None else None,
              "image_size": cfg.image_size, "mean": list(MEAN), "std": list(STD)}
    if hasattr(model, "cfg") and dataclasses.is_dataclass(model.cfg):
        record["model_config"] = dataclasses.asdict(model.cfg)
    record["run"] = dataclasses.asdict(cfg)
    return record


def model_from_config(record: dict) -> torch.nn.Module:
    classes = record.get("classes") or []
    return build_model(record["model"], len(classes), record["image_size"],
                       record.get("model_args"))
