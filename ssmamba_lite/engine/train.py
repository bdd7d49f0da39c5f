"""Training: MAMIM pretraining and supervised fine-tuning (the loop itself is loop.py,
evaluation inference.py, which images a run sees splits.py).

    pretrain(PretrainConfig)   the training images of the target data (labels unused)
                               -> out/encoder.safetensors, config.json, pretrain_patients.json
    finetune(FinetuneConfig)   labelled images -> out/model.safetensors, config.json,
                               history.json

Under `torchrun --nproc_per_node N` the same code runs data-parallel (DDP; gloo on CPU, NCCL on
CUDA): each process trains on its shard with its own augmentation and mask draws, validation
is sharded and gathered, rank 0 alone logs and writes files.

Seeds: `split_seed` decides which patients are held out (and which keep their labels with
label_fraction < 1); `seed` decides everything in training (initialisation, order, masks,
augmentations). Vary `seed` at a fixed `split_seed` to see training noise alone.

After pretraining, the encoder's BatchNorm statistics (those of the convolutional stem) are
re-estimated on clean images: during MAMIM they were running averages over images with 60 %
of their pixels zeroed, which do not describe the unmasked tiles the encoder sees afterwards.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.utils import make_grid

from ssmamba_lite.engine import checkpoint as ckpt
from ssmamba_lite.engine.data import Samples, TileDataset, label_subset, resolve_data
from ssmamba_lite.engine.distributed import Env, setup
from ssmamba_lite.engine.factory import build_model, model_record
from ssmamba_lite.engine.inference import predict_probabilities
from ssmamba_lite.engine.loop import fit
from ssmamba_lite.engine.metrics import classification_metrics
from ssmamba_lite.engine.splits import (
    PRETRAIN_PATIENTS,
    SPLIT_RECORD,
    check_unseen,
    pretraining_samples,
    run_samples,
)
from ssmamba_lite.engine.transforms import (
    MEAN,
    STD,
    eval_transform,
    mamim_transform,
    train_transform,
)
from ssmamba_lite.mamim import MAMIM, MaskGenerator, default_mask_patch


@dataclass
class TrainConfig:
    """Fields shared by both stages; the CLI flags are these names with dashes."""

    data: str = ""                     # a folder, sample:NAME or data:NAME (data.resolve_data)
    out: str = ""                      # empty: runs/<timestamp> (give one under torchrun)
    model: str = "ssmamba_lite_tiny"   # an SSMamba preset or any timm model name
    model_args: dict = field(default_factory=dict)   # SSMambaConfig overrides (ablations)
    image_size: int = 64
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1       # linear warm-up over this share of all steps
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    device: str = "auto"
    seed: int = 0                      # training: initialisation, order, masks, augmentation
    split_seed: int = 0                # which patients are held out (and keep their labels)
    val_fraction: float = 0.2          # held-out patients when the data has no split of its own
    num_workers: int = 0
    compile: bool = False              # torch.compile the training forward and backward
    grad_checkpointing: bool = False   # recompute blocks in backward: less memory, ~1 more forward
    resume: bool = False
    overwrite: bool = False            # replace a run already in `out` (else refused)
    max_steps_per_epoch: int = 0       # > 0: cut epochs short (quick tries and tests)
    skip_bad_images: bool = False      # drop unreadable images (and say how many) instead of failing
    progress: bool = True

    def __post_init__(self):
        if not self.out:
            self.out = str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        if not self.data:
            raise ValueError(f"{type(self).__name__}: data (the image folder) is required")
        for name, ok, what in self.checks():
            if not ok:
                value = getattr(self, name)
                raise ValueError(f"--{name.replace('_', '-')} must be {what}, got {value!r}")

    def checks(self) -> list[tuple[str, bool, str]]:
        """(field, whether its value can work, what it must be): read before any file."""
        positive = lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0  # noqa: E731
        return [("epochs", self.epochs >= 1, "at least 1"),
                ("batch_size", self.batch_size >= 1, "at least 1"),
                ("image_size", self.image_size >= 8, "at least 8 pixels"),
                ("lr", positive(self.lr), "a positive number"),
                ("min_lr", math.isfinite(self.min_lr) and 0 <= self.min_lr <= self.lr,
                 "between 0 and --lr"),
                ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
                ("warmup_fraction", 0 <= self.warmup_fraction < 1, "in [0, 1)"),
                ("max_steps_per_epoch", self.max_steps_per_epoch >= 0, "0 or more"),
                ("num_workers", self.num_workers >= 0, "0 or more")]


@dataclass
class PretrainConfig(TrainConfig):
    lr: float = 1.5e-3
    extra_data: str = ""               # an unlabelled pool added to cfg.data's training images
    mask_ratio: float = 0.6
    mask_patch_size: int = 0           # pixels; 0: mamim.default_mask_patch (16 at 64 px)
    decoder: str = "hierarchical"      # or "linear" (SimMIM's head on the last stage)
    decoder_width: int = 32            # d, the hierarchical decoder's channels
    remask: bool = False               # a mask token per stage after every stage (SparK's)
    norm_pix_loss: bool = True
    min_zoom: float = 0.5              # multi-magnification views: zoom range
    max_zoom: float = 2.0
    bn_recalibration: int = 50         # batches of clean images that re-estimate BatchNorm stats
    snapshot_every: int = 5            # TensorBoard images of fixed tiles every this many epochs
    snapshot_images: int = 8           # how many tiles (masked | reconstruction | original)

    def checks(self):
        return super().checks() + [
            ("snapshot_every", self.snapshot_every >= 0, "0 (never) or more"),
            ("snapshot_images", self.snapshot_images >= 1, "at least 1"),
            ("mask_ratio", 0 < self.mask_ratio < 1, "in (0, 1)"),
            ("min_zoom", 0 < self.min_zoom <= self.max_zoom, "positive and at most --max-zoom"),
            ("decoder", self.decoder in ("hierarchical", "linear"), "hierarchical or linear"),
            ("decoder_width", self.decoder_width >= 1, "at least 1")]


@dataclass
class FinetuneConfig(TrainConfig):
    init: str = "scratch"              # or a MAMIM run folder / its encoder.safetensors
    linear_probe: bool = False         # freeze the encoder (eval mode), train the head only
    label_fraction: float = 1.0        # keep this fraction of the training patients
    stain_jitter: bool = True
    layer_decay: float = 1.0           # < 1: layer-wise lr decay (lr · decay^depth from the head)
    ema_decay: float = 0.0             # > 0: validate and save an EMA of the weights

    def checks(self):
        return super().checks() + [
            ("label_fraction", 0 < self.label_fraction <= 1, "in (0, 1]"),
            ("layer_decay", 0 < self.layer_decay <= 1, "in (0, 1]"),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)")]


# ---------------------------------------------------------------------------------------------
# MAMIM pretraining.
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, loader, device, batches: int) -> int:
    """Re-estimate every BatchNorm's running mean and variance as the plain average over up to
    `batches` batches of `loader` (the rest of the model in eval mode). Returns the number of
    images seen (0 when the model has no BatchNorm)."""
    kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d,
             torch.nn.SyncBatchNorm)
    norms = [m for m in model.modules() if isinstance(m, kinds) and m.track_running_stats]
    if not norms or batches < 1:
        return 0
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                                   # cumulative average
        m.train()
    seen = 0
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        model.forward_features(x.to(device))
        seen += x.shape[0]
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return seen


def pretrain(cfg: PretrainConfig, source=None) -> list[dict]:
    """MAMIM on the training images of cfg.data (labels ignored; see splits.pretraining_samples).
    Writes out/encoder.safetensors, config.json and pretrain_patients.json (the patients whose
    images it saw, which `finetune` checks against the patients it holds out).

    `source`, instead of cfg.data's files: an object with `samples` (Samples: a key per image,
    its group) and `load(key) -> uint8 (3, H, W)`, read on demand and never all held in
    memory (wsi/pretrain.py reads tiles straight from slides this way)."""
    cfg.mask_patch_size = cfg.mask_patch_size or default_mask_patch(cfg.image_size)
    masks = MaskGenerator(cfg.image_size, cfg.mask_patch_size, 4, cfg.mask_ratio)  # checks both
    env = setup(cfg.device, cfg.seed)
    out = Path(cfg.out)
    train = source.samples if source is not None else pretraining_samples(cfg)
    images = dict(cache=False, load=source.load) if source is not None else {}
    encoder = build_model(cfg.model, 0, cfg.image_size, cfg.model_args)
    if cfg.grad_checkpointing:
        encoder.set_grad_checkpointing(True)                # timm's switch (MAMIM runs its stages)
    mamim = MAMIM(encoder, cfg.mask_patch_size, cfg.mask_ratio, cfg.norm_pix_loss, cfg.decoder,
                  cfg.decoder_width, cfg.remask).to(env.device)
    record = model_record(cfg.model, encoder, cfg, None, "mamim")
    ckpt.check_run_folder(out, record, cfg.resume, cfg.overwrite, delete=env.is_main)
    env.barrier()
    if env.is_main:
        ckpt.save_json(record, out / "config.json")
        ckpt.save_json({"images": len(train), "patients": sorted(set(train.patients))},
                       out / PRETRAIN_PATIENTS)
        print(f"MAMIM pretrains on {len(train)} images of {len(set(train.patients))} "
              f"patients (labels unused)")

    def loss_fn(module, batch):
        images = batch[0]
        return module(images, masks(images.shape[0]).to(images.device))[0]

    def save(module):
        ckpt.save_weights(module.encoder, out / "encoder.safetensors")

    snapshot = None                                          # rank 0 alone logs images
    if env.is_main and cfg.snapshot_every > 0:
        few = TileDataset(train.subset(range(min(cfg.snapshot_images, len(train)))),
                          eval_transform(cfg.image_size), cache=False, load=images.get("load"))
        shown = torch.stack([few[i][0] for i in range(len(few))])
        shown_mask = masks(len(shown), torch.Generator().manual_seed(cfg.seed))

        def snapshot(module):
            return {"mamim/masked_reconstruction_original":
                    mamim_grid(module, shown.to(env.device), shown_mask.to(env.device))}

    tf = mamim_transform(cfg.image_size, cfg.min_zoom, cfg.max_zoom)
    history = fit(cfg, env, mamim, TileDataset(train, tf, **images), loss_fn, save,
                  snapshot=snapshot, snapshot_every=cfg.snapshot_every)
    if env.is_main:
        clean = DataLoader(TileDataset(train, eval_transform(cfg.image_size), **images),
                           cfg.batch_size,
                           shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))
        n = recalibrate_batchnorm(encoder, clean, env.device, cfg.bn_recalibration)
        if n:
            ckpt.save_weights(encoder, out / "encoder.safetensors")
            print(f"BatchNorm statistics re-estimated on {n} unmasked images")
    env.barrier()
    env.close()
    return history


@torch.no_grad()
def mamim_grid(mamim: MAMIM, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One image (3, H', W') in [0, 1]: a row per tile, masked input | reconstruction (visible
    pixels pasted back) | original, the same tiles and masks at every epoch."""
    was_training = mamim.training
    mamim.eval()
    masked, result, _ = mamim.reconstruct(images, mask)
    mamim.train(was_training)
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    rows = torch.stack([masked, result, images], 1).flatten(0, 1).float() * std + mean
    return make_grid(rows.clamp(0, 1).cpu(), nrow=3, padding=2, pad_value=1.0)


# ---------------------------------------------------------------------------------------------
# Supervised fine-tuning.
# ---------------------------------------------------------------------------------------------
def encoder_path(init) -> Path:
    """The MAMIM encoder weights `init` names: a .safetensors file, or a pretraining run's
    folder (its encoder.safetensors)."""
    path = Path(init)
    return path / "encoder.safetensors" if path.is_dir() else path


def sharded_metrics(model, samples: Samples, classes, image_size: int, batch_size: int,
                    env: Env) -> dict:
    """classification_metrics of `model` on `samples`, each process predicting every
    env.world-th image and all of them gathering the rest (the same dict everywhere)."""
    mine = list(range(env.rank, len(samples), env.world))
    probs = predict_probabilities(model, samples.subset(mine), image_size, None, batch_size,
                                  env.device) if mine else np.zeros((0, len(classes)))
    merged = np.zeros((len(samples), len(classes)))
    for idx, p in env.gather((mine, probs)):
        merged[idx] = p
    return classification_metrics(samples.labels, merged, classes)


def finetune(cfg: FinetuneConfig) -> list[dict]:
    """Supervised fine-tuning (from scratch or a MAMIM encoder). Writes out/model.safetensors,
    out/config.json and out/history.json; returns the per-epoch history."""
    env = setup(cfg.device, cfg.seed)
    train, val, held_out = run_samples(cfg, labelled=True)
    train = label_subset(train, cfg.label_fraction, cfg.split_seed)
    model = build_model(cfg.model, len(train.classes), cfg.image_size, cfg.model_args)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.init != "scratch":
        check_unseen(encoder_path(cfg.init), held_out)
        fresh = ckpt.load_weights(model, encoder_path(cfg.init), ignore=("head.",))
        if env.is_main:
            print(f"initialised from {encoder_path(cfg.init)}: every encoder weight loaded; "
                  f"{', '.join(fresh)} start fresh")
    head = model.get_classifier()
    if cfg.linear_probe:
        keep = {id(p) for p in head.parameters()}
        for p in model.parameters():
            p.requires_grad = id(p) in keep
    model.to(env.device)
    out = Path(cfg.out)
    record = model_record(cfg.model, model, cfg, train.classes, "classification")
    ckpt.check_run_folder(out, record, cfg.resume, cfg.overwrite, delete=env.is_main)
    env.barrier()
    if env.is_main:
        ckpt.save_json(record, out / "config.json")
        ckpt.save_json({"data": str(resolve_data(cfg.data).resolve()),      # what `evaluate`
                        "held_out_patients": sorted(held_out)}, out / SPLIT_RECORD)  # scores
    crit = torch.nn.CrossEntropyLoss()

    def loss_fn(module, batch):
        return crit(module(batch[0]).float(), batch[1])

    def validate(module):
        return sharded_metrics(module, val, train.classes, cfg.image_size, cfg.batch_size, env)

    def probe_mode(module):                                  # frozen means eval mode,
        module.eval()
        head.train()
        drop = getattr(module, "head_drop", None)               # but the head's dropout
        if drop is not None:                                    # trains with the head
            drop.train()

    history = fit(cfg, env, model, TileDataset(train, train_transform(cfg.image_size,
                                                                      cfg.stain_jitter)),
                  loss_fn, lambda m: ckpt.save_weights(m, out / "model.safetensors"),
                  validate if val is not None and len(val) else None,
                  layer_decay=cfg.layer_decay, ema_decay=cfg.ema_decay,
                  train_mode=probe_mode if cfg.linear_probe else None)
    if env.is_main:
        ckpt.save_json(history, out / "history.json")
    env.close()
    return history


def config_from_dict(cls, values: dict):
    """A config dataclass from a dict, with a clear error for unknown fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**values)
