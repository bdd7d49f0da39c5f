"""Training: MAMIM pretraining and supervised fine-tuning (evaluation is in inference.py).

    pretrain(PretrainConfig)   images (labels ignored) -> out/encoder.safetensors
    finetune(FinetuneConfig)   labelled images         -> out/model.safetensors + config.json

One loop (`fit`) serves both stages: AdamW, linear warm-up then cosine decay of the learning
rate (per step), gradient clipping, bf16 autocast on CUDA, a progress bar, a stop on a
non-finite loss. After every epoch it writes a checkpoint pair atomically (weights as
safetensors, optimizer/scheduler/counters as a torch file read back with weights_only=True)
and then the pointer `latest.json`; `resume=True` continues from the last complete epoch.
Under `torchrun --nproc_per_node N` the same code runs data-parallel (DDP; gloo on CPU, NCCL
on CUDA); rank 0 alone logs and writes files.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ssmamba_lite.engine import checkpoint as ckpt
from ssmamba_lite.engine.data import TileDataset, label_subset
from ssmamba_lite.engine.distributed import Env, setup, wrap_ddp
from ssmamba_lite.engine.factory import build_model, model_record
from ssmamba_lite.engine.inference import evaluate_samples
from ssmamba_lite.engine.metrics import format_metrics
from ssmamba_lite.engine.splits import (
    PRETRAIN_PATIENTS,
    check_unseen,
    pretraining_samples,
    run_samples,
)
from ssmamba_lite.engine.transforms import mamim_transform, train_transform
from ssmamba_lite.mamim import MAMIM


@dataclass
class TrainConfig:
    """Fields shared by both stages; the CLI flags are these names with dashes."""

    data: str = ""
    out: str = ""                      # empty: runs/<timestamp> (give one under torchrun)
    model: str = "ssmamba_lite_tiny"   # an SSMamba preset or any timm model name
    model_args: dict = field(default_factory=dict)   # SSMambaConfig overrides (ablations)
    image_size: int = 64
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    resume: bool = False
    max_steps_per_epoch: int = 0       # > 0: cut epochs short (quick tries and tests)
    skip_bad_images: bool = False      # drop unreadable images (and say how many) instead of failing
    progress: bool = True

    def __post_init__(self):
        if not self.out:
            self.out = str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        if not self.data:
            raise ValueError(f"{type(self).__name__}: data (the image folder) is required")


@dataclass
class PretrainConfig(TrainConfig):
    lr: float = 1.5e-3
    val_fraction: float = 0.2          # labelled data without a split of its own: the patients
                                       # fine-tuning holds out (same seed) are left out here too
    extra_data: str = ""               # an unlabelled pool added to cfg.data's training images
    mask_ratio: float = 0.6
    mask_patch_size: int = 16
    norm_pix_loss: bool = True
    min_zoom: float = 0.5              # multi-magnification views: zoom range
    max_zoom: float = 2.0


@dataclass
class FinetuneConfig(TrainConfig):
    init: str = "scratch"              # or the path of a MAMIM encoder.safetensors (or its folder)
    linear_probe: bool = False         # freeze the encoder, train the head only
    val_fraction: float = 0.2          # patient-grouped validation split when data has none
    label_fraction: float = 1.0        # keep this fraction of the training patients
    stain_jitter: bool = True


def _loader(dataset, cfg, env: Env, shuffle: bool, epoch: int = 0) -> DataLoader:
    sampler = None
    if env.world > 1:
        sampler = torch.utils.data.DistributedSampler(dataset, env.world, env.rank, shuffle,
                                                      cfg.seed, drop_last=shuffle)
        sampler.set_epoch(epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    return DataLoader(dataset, cfg.batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, drop_last=shuffle and len(dataset) > cfg.batch_size,
                      num_workers=cfg.num_workers, generator=gen)


def _optimizer(module: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            quiet = p.ndim <= 1 or getattr(p, "_no_weight_decay", False)
            (no_decay if quiet else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to min_ratio: the factor applied to lr."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def fit(cfg, env: Env, module, dataset, loss_fn, save_weights, validate=None) -> list[dict]:
    """Train `module` on `dataset`; loss_fn(module, batch) -> loss. Returns the history."""
    out = Path(cfg.out)
    steps = len(_loader(dataset, cfg, env, True))
    if cfg.max_steps_per_epoch > 0:
        steps = min(steps, cfg.max_steps_per_epoch)
    total, warmup = steps * cfg.epochs, int(cfg.warmup_epochs * steps)
    opt = _optimizer(module, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, warmup, cfg.min_lr / cfg.lr))
    start, step, history = 0, 0, []
    if cfg.resume and (out / "latest.json").is_file():
        start, step, history = _load_checkpoint(out, module, opt, sched)
        if env.is_main:
            ckpt.remove_stale_temps(out)                    # left by the killed writer
            print(f"resuming {out} after epoch {start} (step {step})")
    ddp = wrap_ddp(module, env)
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)            # augmentations and masks
        module.train()
        bar = tqdm(_loader(dataset, cfg, env, True, epoch), total=steps, leave=False,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and env.is_main))
        seen, done, t0, run_loss = 0, 0, time.perf_counter(), 0.0
        for batch in bar:
            if done >= steps:
                break
            batch = [b.to(env.device, non_blocking=True) for b in batch]
            with torch.autocast(env.device.type, torch.bfloat16, enabled=env.device.type == "cuda"):
                loss = loss_fn(ddp, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step "
                                         f"{step}: training stopped (try a lower --lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step, done, seen = step + 1, done + 1, seen + batch[0].shape[0] * env.world
            run_loss += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{sched.get_last_lr()[0]:.2e}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        record = {"epoch": epoch + 1, "step": step, "loss": run_loss / max(1, done),
                  "images_per_s": seen / (time.perf_counter() - t0)}
        if validate is not None and env.is_main:
            record["val"] = validate(module)
        history.append(record)
        if env.is_main:
            extra = f"  val {format_metrics(record['val'])}" if "val" in record else ""
            print(f"epoch {epoch + 1}/{cfg.epochs}  loss {record['loss']:.4f}  "
                  f"{record['images_per_s']:.0f} img/s{extra}", flush=True)
            _save_checkpoint(out, epoch + 1, step, module, opt, sched, history)
            save_weights(module)
        env.barrier()
    return history


def _save_checkpoint(out: Path, epoch, step, module, opt, sched, history) -> None:
    """Weights and trainer state of one epoch, then the pointer to them, each atomically."""
    name = f"checkpoint-{epoch:04d}"
    ckpt.save_weights(module, out / f"{name}.safetensors", {"epoch": epoch})
    ckpt.save_torch({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "epoch": epoch, "step": step, "rng": torch.get_rng_state()}, out / f"{name}.pt")
    ckpt.save_json({"checkpoint": name, "epoch": epoch, "step": step, "history": history},
                   out / "latest.json")
    for old in out.glob("checkpoint-*"):                    # keep only the newest pair
        if not old.name.startswith(name):
            old.unlink(missing_ok=True)


def _load_checkpoint(out: Path, module, opt, sched):
    latest = ckpt.read_json(out / "latest.json")
    ckpt.load_weights(module, out / f"{latest['checkpoint']}.safetensors")
    state = ckpt.load_torch(out / f"{latest['checkpoint']}.pt")
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return state["epoch"], state["step"], latest["history"]


# ---------------------------------------------------------------------------------------------
# The two stages.
# ---------------------------------------------------------------------------------------------
def pretrain(cfg: PretrainConfig) -> list[dict]:
    """MAMIM on the training images of cfg.data (labels ignored; see `pretraining_samples`).
    Writes out/encoder.safetensors, config.json and pretrain_patients.json (the patients whose
    images it saw, which `finetune` checks against the patients it holds out)."""
    env = setup(cfg.device, cfg.seed)
    train = pretraining_samples(cfg)
    tf = mamim_transform(cfg.image_size, cfg.min_zoom, cfg.max_zoom)
    encoder = build_model(cfg.model, 0, cfg.image_size, cfg.model_args)
    mamim = MAMIM(encoder, cfg.mask_patch_size, cfg.mask_ratio, cfg.norm_pix_loss).to(env.device)
    masks = mamim.mask_generator(cfg.image_size)
    record = model_record(cfg.model, encoder, cfg, classes=None, task="mamim")
    if env.is_main:
        ckpt.save_json(record, Path(cfg.out) / "config.json")
        ckpt.save_json({"images": len(train), "patients": sorted(set(train.patients))},
                       Path(cfg.out) / PRETRAIN_PATIENTS)
        print(f"MAMIM pretrains on {len(train)} images of {len(set(train.patients))} "
              f"patients (labels unused)")

    def loss_fn(module, batch):
        images = batch[0]
        return module(images, masks(images.shape[0]).to(images.device))[0]

    def save(module):
        ckpt.save_weights(module.encoder, Path(cfg.out) / "encoder.safetensors")

    history = fit(cfg, env, mamim, TileDataset(train, tf), loss_fn, save)
    env.close()
    return history


def encoder_path(init) -> Path:
    """The MAMIM encoder weights `init` names: a .safetensors file, or a pretraining run's
    folder (its encoder.safetensors)."""
    path = Path(init)
    return path / "encoder.safetensors" if path.is_dir() else path


def finetune(cfg: FinetuneConfig) -> list[dict]:
    """Supervised fine-tuning (from scratch or a MAMIM encoder). Writes out/model.safetensors,
    out/config.json and out/history.json; returns the per-epoch history."""
    env = setup(cfg.device, cfg.seed)
    train, val, held_out = run_samples(cfg, labelled=True)
    train = label_subset(train, cfg.label_fraction, cfg.seed)
    model = build_model(cfg.model, len(train.classes), cfg.image_size, cfg.model_args)
    if cfg.init != "scratch":
        check_unseen(encoder_path(cfg.init), held_out)
        fresh = ckpt.load_weights(model, encoder_path(cfg.init), ignore=("head.",))
        if env.is_main:
            print(f"initialised from {encoder_path(cfg.init)}: every encoder weight loaded; "
                  f"{', '.join(fresh)} start fresh")
    if cfg.linear_probe:
        head = set(id(p) for p in model.get_classifier().parameters())
        for p in model.parameters():
            p.requires_grad = id(p) in head
    model.to(env.device)
    out = Path(cfg.out)
    if env.is_main:
        ckpt.save_json(model_record(cfg.model, model, cfg, train.classes, "classification"),
                       out / "config.json")
    crit = torch.nn.CrossEntropyLoss()

    def loss_fn(module, batch):
        return crit(module(batch[0]).float(), batch[1])

    def validate(module):
        return evaluate_samples(module, val, train.classes, cfg.image_size, cfg.batch_size,
                                env.device)

    tf = train_transform(cfg.image_size, cfg.stain_jitter)
    history = fit(cfg, env, model, TileDataset(train, tf), loss_fn,
                  lambda m: ckpt.save_weights(m, out / "model.safetensors"),
                  validate if val is not None and len(val) else None)
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
