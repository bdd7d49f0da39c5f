"""The engine: MAMIM pretraining, supervised fine-tuning, evaluation and prediction.

    pretrain(PretrainConfig)   images (labels ignored) -> out/encoder.safetensors
    finetune(FinetuneConfig)   labelled images         -> out/model.safetensors + config.json
    evaluate(data, checkpoint) labelled images         -> metrics dict (+ out/metrics.json)
    predict(checkpoint, paths) images                  -> class and probability per image

One loop (`_fit`) serves both stages: AdamW, linear warm-up then cosine decay of the learning
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

from ssmamba_lite import checkpoint as ckpt
from ssmamba_lite import data as D
from ssmamba_lite.distributed import Env, setup, wrap_ddp
from ssmamba_lite.mamim import MAMIM, RandomMagnification
from ssmamba_lite.metrics import classification_metrics, format_metrics
from ssmamba_lite.models import build_model, model_from_config, model_record


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


def _samples(cfg, labelled: bool, classes=None):
    """Train (and validation) samples of cfg.data, unreadable files handled per config."""
    root = Path(cfg.data)
    scan = (lambda r: D.scan_labelled(r, classes)) if labelled else D.scan_unlabelled
    if labelled and D.has_splits(root):
        train = scan(root / "train")
        val = D.scan_labelled(root / "val", train.classes) if (root / "val").is_dir() else None
    elif labelled:
        train, val = D.patient_split(scan(root), (1 - cfg.val_fraction, cfg.val_fraction), cfg.seed)
    else:
        train, val = scan(root), None
    if cfg.skip_bad_images:
        train, bad = D.drop_unreadable(train)
        if bad:
            print(f"skipped {len(bad)} unreadable image(s), e.g. {bad[0][1]}")
    return train, val


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


def _fit(cfg, env: Env, module, dataset, loss_fn, save_weights, validate=None) -> list[dict]:
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
    ckpt.save_state_dict(module.state_dict(), out / f"{name}.safetensors", {"epoch": epoch})
    ckpt.save_torch({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "epoch": epoch, "step": step, "rng": torch.get_rng_state()}, out / f"{name}.pt")
    ckpt.save_json({"checkpoint": name, "epoch": epoch, "step": step, "history": history},
                   out / "latest.json")
    for old in out.glob("checkpoint-*"):                    # keep only the newest pair
        if not old.name.startswith(name):
            old.unlink(missing_ok=True)


def _load_checkpoint(out: Path, module, opt, sched):
    import json

    latest = json.loads((out / "latest.json").read_text())
    module.load_state_dict(ckpt.load_state_dict(out / f"{latest['checkpoint']}.safetensors"))
    state = ckpt.load_torch(out / f"{latest['checkpoint']}.pt")
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return state["epoch"], state["step"], latest["history"]


# ---------------------------------------------------------------------------------------------
# The two stages.
# ---------------------------------------------------------------------------------------------
def pretrain(cfg: PretrainConfig) -> list[dict]:
    """MAMIM on cfg.data (labels ignored). Writes out/encoder.safetensors and config.json."""
    env = setup(cfg.device, cfg.seed)
    train, _ = _samples(cfg, labelled=False)
    tf = D.v2.Compose([D.v2.Resize((cfg.image_size,) * 2, antialias=True),
                       RandomMagnification(cfg.min_zoom, cfg.max_zoom), D.train_transform(cfg.image_size)])
    encoder = build_model(cfg.model, 0, cfg.image_size, cfg.model_args)
    mamim = MAMIM(encoder, cfg.mask_patch_size, cfg.mask_ratio, cfg.norm_pix_loss).to(env.device)
    masks = mamim.mask_generator(cfg.image_size)
    record = model_record(cfg.model, encoder, cfg, classes=None, task="mamim")
    if env.is_main:
        ckpt.save_json(record, Path(cfg.out) / "config.json")

    def loss_fn(module, batch):
        images = batch[0]
        return module(images, masks(images.shape[0]).to(images.device))[0]

    def save(module):
        ckpt.save_state_dict(module.encoder.state_dict(), Path(cfg.out) / "encoder.safetensors")

    history = _fit(cfg, env, mamim, D.TileDataset(train, tf), loss_fn, save)
    env.close()
    return history


def load_encoder(model: torch.nn.Module, init: str) -> dict:
    """Encoder weights of a MAMIM run into `model`; returns the missing/unexpected keys."""
    path = Path(init)
    path = path / "encoder.safetensors" if path.is_dir() else path
    state = {k: v for k, v in ckpt.load_state_dict(path).items() if not k.startswith("head.")}
    result = model.load_state_dict(state, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
    encoder_missing = [k for k in report["missing"] if not k.startswith("head.")]
    if encoder_missing or report["unexpected"]:
        print(f"warning: {path}: {len(encoder_missing)} encoder weights missing "
              f"{encoder_missing[:3]}, {len(report['unexpected'])} unexpected {report['unexpected'][:3]}")
    return report


def finetune(cfg: FinetuneConfig) -> list[dict]:
    """Supervised fine-tuning (from scratch or a MAMIM encoder). Writes out/model.safetensors,
    out/config.json and out/history.json; returns the per-epoch history."""
    env = setup(cfg.device, cfg.seed)
    train, val = _samples(cfg, labelled=True)
    train = D.label_subset(train, cfg.label_fraction, cfg.seed)
    model = build_model(cfg.model, len(train.classes), cfg.image_size, cfg.model_args)
    if cfg.init != "scratch":
        report = load_encoder(model, cfg.init)
        if env.is_main:
            print(f"initialised from {cfg.init}: {len(report['missing'])} missing key(s) "
                  f"{report['missing'][:4]}, {len(report['unexpected'])} unexpected")
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
        return _evaluate_samples(module, val, train.classes, cfg.image_size, cfg.batch_size, env.device)

    tf = D.train_transform(cfg.image_size, cfg.stain_jitter)
    history = _fit(cfg, env, model, D.TileDataset(train, tf), loss_fn,
                   lambda m: ckpt.save_state_dict(m.state_dict(), out / "model.safetensors"),
                   validate if val is not None and len(val) else None)
    if env.is_main:
        ckpt.save_json(history, out / "history.json")
    env.close()
    return history


# ---------------------------------------------------------------------------------------------
# Using a trained model.
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def _probabilities(model, dataset, batch_size, device) -> torch.Tensor:
    model.eval()
    loader = DataLoader(dataset, batch_size)
    return torch.cat([model(x.to(device)).float().softmax(-1).cpu() for x, _ in loader])


def _evaluate_samples(model, samples, classes, image_size, batch_size, device) -> dict:
    probs = _probabilities(model, D.TileDataset(samples, D.eval_transform(image_size)), batch_size, device)
    return classification_metrics(samples.labels, probs.numpy(), classes)


def load_trained(checkpoint, device="cpu"):
    """(model, config record) from a fine-tuning output folder."""
    import json

    folder = Path(checkpoint)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: expected config.json and model.safetensors "
                                f"(the output folder of `ssmamba-lite finetune`)")
    record = json.loads((folder / "config.json").read_text())
    model = model_from_config(record)
    model.load_state_dict(ckpt.load_state_dict(folder / "model.safetensors"))
    return model.to(device).eval(), record


def evaluate(data, checkpoint, out=None, batch_size: int = 64, device: str = "auto") -> dict:
    """Metrics of a fine-tuned model on labelled data (its test/ or val/ split if it has
    splits); class folders are matched by name to the training classes."""
    env = setup(device, 0, distributed=False)
    model, record = load_trained(checkpoint, env.device)
    root = Path(data)
    if D.has_splits(root):
        root = root / ("test" if (root / "test").is_dir() else "val")
    samples = D.scan_labelled(root, classes=record["classes"])
    metrics = _evaluate_samples(model, samples, record["classes"], record["image_size"],
                                batch_size, env.device)
    print(format_metrics(metrics))
    if out is not None:
        ckpt.save_json(metrics, Path(out) / "metrics.json")
    return metrics


def predict(checkpoint, images, device: str = "auto") -> list[dict]:
    """Class and probability of each image file."""
    env = setup(device, 0, distributed=False)
    model, record = load_trained(checkpoint, env.device)
    paths = [Path(p) for p in images]
    samples = D.Samples(paths, [0] * len(paths), [str(p) for p in paths], record["classes"])
    probs = _probabilities(model, D.TileDataset(samples, D.eval_transform(record["image_size"])),
                           64, env.device)
    return [{"path": str(p), "class": record["classes"][int(q.argmax())],
             "probability": float(q.max())} for p, q in zip(paths, probs)]


def config_from_dict(cls, values: dict):
    """A config dataclass from a dict, with a clear error for unknown fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**values)


__all__ = ["PretrainConfig", "FinetuneConfig", "pretrain", "finetune", "evaluate", "predict",
           "load_trained", "load_encoder", "lr_factor", "config_from_dict"]
