"""Building networks by name: SSMamba presets and, as baselines, any timm model.

A trained model is described by a small record (saved as config.json beside its weights):
    model        preset or timm name ("ssmamba_lite_tiny", "resnet18", ...)
    model_args   overrides of SSMambaConfig fields (ablations: use_lpr, directions, ...)
    model_config the resulting SSMambaConfig, for reading (SSMamba models only)
    classes, image_size, mean, std, task
so that `model_from_config(record)` rebuilds the same network (randomly initialised;
`checkpoint.load_weights` then puts the weights in).
"""

from __future__ import annotations

import dataclasses

import timm
import torch

from ssmamba_lite.engine.transforms import MEAN, STD
from ssmamba_lite.mamim import MAMIM
from ssmamba_lite.model import SSMamba, SSMambaConfig
from ssmamba_lite.presets import PRESETS  # (registers the presets with timm)


def is_ssmamba(name: str) -> bool:
    return name in PRESETS


def build_model(name: str, num_classes: int, image_size: int, model_args: dict | None = None
                ) -> torch.nn.Module:
    """An SSMamba preset (with `model_args` overrides) or a timm model, randomly initialised."""
    model_args = dict(model_args or {})
    if is_ssmamba(name):
        known = {f.name for f in dataclasses.fields(SSMambaConfig)}
        unknown = sorted(set(model_args) - known)
        if unknown:
            raise ValueError(f"--model-args: {unknown} are not SSMambaConfig fields; known: "
                             f"{sorted(known)}")
        return timm.create_model(name, num_classes=num_classes, img_size=image_size, **model_args)
    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: use {sorted(PRESETS)} "
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


def model_from_config(record: dict, num_classes: int | None = None) -> torch.nn.Module:
    """The network a record describes, randomly initialised: "model" (+ "model_args") built by
    name, or, in a record without "model", an SSMamba of the "model_config" fields.
    num_classes: default len(record["classes"]); 0 gives an encoder (no head)."""
    if num_classes is None:
        num_classes = len(record.get("classes") or [])
    if not record.get("model"):
        fields = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in record["model_config"].items()}
        return SSMamba(SSMambaConfig(**{**fields, "num_classes": num_classes}))
    return build_model(record["model"], num_classes, record.get("image_size", 224),
                       record.get("model_args"))


def mamim_from_record(record: dict) -> MAMIM:
    """The MAMIM module (encoder, mask token, decoder) a pretraining run's config.json
    describes, randomly initialised. A record from before the decoder choice had the linear
    head, and says so by having no "decoder"."""
    run = record["run"]
    return MAMIM(model_from_config(record, num_classes=0), run["mask_patch_size"] or None,
                 run["mask_ratio"], run["norm_pix_loss"], run.get("decoder", "linear"),
                 run.get("decoder_width", 32), run.get("remask", False))
