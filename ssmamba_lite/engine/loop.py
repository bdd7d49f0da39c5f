"""The training loop that MAMIM pretraining and fine-tuning share (train.py sets them up).

    optimizer   AdamW in timm's parameter groups: no weight decay for biases, norms and what
                the model lists in no_weight_decay() (Δ biases, A_log, D, fusion logits, the
                mask token). layer_decay < 1: layer-wise lr decay (BEiT, MAE fine-tuning): a
                block k groups below the head learns at lr · layer_decay^k
    schedule    linear warm-up over `warmup_fraction` of all steps, then cosine decay to min_lr
    step        torch.compile when cfg.compile; bf16 autocast on CUDA; the loss is checked
                and averaged over all processes (a non-finite loss on any one stops every
                one, before backward); gradient clipping; an exponential moving average (EMA)
                of the weights when ema_decay > 0
    epoch end   validation on every process (the caller shards it), then, on rank 0, a
                checkpoint pair (weights: safetensors; optimizer, scheduler, counters, EMA:
                a torch file read back with weights_only=True) and the pointer latest.json,
                each written atomically. `resume=True` continues after the last complete epoch.
    record      TensorBoard events (every step's loss and lr; every epoch's loss, lr, img/s
                and validation metrics; a caller's images) and metrics.csv (tracking.py)

Seeds: the global generator (augmentations, MAMIM masks, zoom, drop-path) is seeded per epoch
and per process, so data-parallel processes draw different masks of different images.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ssmamba_lite.engine import checkpoint as ckpt
from ssmamba_lite.engine.distributed import Env, wrap_ddp
from ssmamba_lite.engine.metrics import format_metrics
from ssmamba_lite.engine.tracking import RunLog

RANK_STRIDE = 7919            # seed offset between data-parallel processes (a prime)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of the global generator for one epoch of one process."""
    return seed * 1000 + epoch + RANK_STRIDE * rank


def make_loader(dataset, cfg, env: Env, shuffle: bool, epoch: int = 0) -> DataLoader:
    """Batches of `dataset` for this process: a DistributedSampler shard under torchrun. The
    last incomplete batch is dropped when shuffling, unless it would leave no batch at all."""
    sampler = None
    if env.world > 1:
        sampler = torch.utils.data.DistributedSampler(dataset, env.world, env.rank, shuffle,
                                                      cfg.seed, drop_last=shuffle)
        sampler.set_epoch(epoch)
    mine = len(sampler) if sampler is not None else len(dataset)     # this process's share
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, env.rank))
    return DataLoader(dataset, cfg.batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, drop_last=shuffle and mine > cfg.batch_size,
                      num_workers=cfg.num_workers, generator=gen)


def make_optimizer(module: torch.nn.Module, lr: float, weight_decay: float,
                   layer_decay: float = 1.0) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters in timm's weight-decay (and layer-decay) groups;
    each group's lr is already scaled by its layer-decay factor."""
    opt = create_optimizer_v2(module, "adamw", lr=lr, weight_decay=weight_decay,
                              layer_decay=layer_decay if layer_decay < 1 else None)
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return opt


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to min_ratio: the factor applied to lr."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def mean_loss(loss: torch.Tensor, env: Env, epoch: int, step: int) -> float:
    """The loss averaged over all processes; a FloatingPointError on every process when any
    one has a non-finite loss (raised before backward, so no process waits for the others)."""
    value = loss.detach().float().reshape(1)
    bad = (~torch.isfinite(value)).float()
    both = env.sum(torch.cat([torch.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0), bad]))
    if both[1] > 0:
        where = f"loss is {value.item()}" if bad.item() else \
            f"loss is not finite on {int(both[1])} other process(es)"
        raise FloatingPointError(f"{where} at epoch {epoch + 1}, step {step}: training stopped "
                                 f"(try a lower --lr)")
    return both[0].item() / env.world


def fit(cfg, env: Env, module, dataset, loss_fn, save_weights, validate=None,
        layer_decay: float = 1.0, ema_decay: float = 0.0, train_mode=None, snapshot=None,
        snapshot_every: int = 0) -> list[dict]:
    """Train `module` on `dataset`; loss_fn(module, batch) -> loss. Returns the history.

    validate(module) -> metrics runs on every process after each epoch; save_weights(module)
    writes the run's weights (the EMA's when ema_decay > 0) on rank 0; train_mode(module), when
    given, replaces module.train() (a linear probe keeps its frozen encoder in eval mode);
    snapshot(module) -> {tag: (3, H, W) image in [0, 1]} goes to TensorBoard on rank 0 after
    the first epoch, every `snapshot_every` epochs and the last."""
    out = Path(cfg.out)
    steps = len(make_loader(dataset, cfg, env, True))
    if cfg.max_steps_per_epoch > 0:
        steps = min(steps, cfg.max_steps_per_epoch)
    total = steps * cfg.epochs
    warmup = max(1, round(cfg.warmup_fraction * total))
    opt = make_optimizer(module, cfg.lr, cfg.weight_decay, layer_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, warmup, cfg.min_lr / cfg.lr))
    # the EMA's decay warms up, 1 - (1 + t)^(-2/3) up to ema_decay: a fixed 0.999 over 80 steps
    # would leave the validated and saved weights ~6 % of the way from the start
    ema = ModelEmaV3(module, decay=ema_decay, use_warmup=True) if ema_decay > 0 else None
    start, step, history = 0, 0, []
    if cfg.resume and (out / "latest.json").is_file():
        start, step, history = load_checkpoint(out, module, opt, sched, ema)
        if env.is_main:
            ckpt.remove_stale_temps(out)                    # left by the killed writer
            print(f"resuming {out} after epoch {start} (step {step})")
    log = RunLog(out, env.is_main, step)
    ddp = wrap_ddp(module, env)
    if cfg.compile:
        ddp = torch.compile(ddp)                            # validation stays eager
    final = ema.module if ema is not None else module       # what is validated and saved
    try:
        for epoch in range(start, cfg.epochs):
            torch.manual_seed(epoch_seed(cfg.seed, epoch, env.rank))   # augmentations and masks
            train_mode(module) if train_mode is not None else module.train()
            bar = tqdm(make_loader(dataset, cfg, env, True, epoch), total=steps, leave=False,
                       desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not (cfg.progress and env.is_main))
            seen, done, t0, run_loss = 0, 0, time.perf_counter(), 0.0
            for batch in bar:
                if done >= steps:
                    break
                batch = [b.to(env.device, non_blocking=True) for b in batch]
                with torch.autocast(env.device.type, torch.bfloat16,
                                    enabled=env.device.type == "cuda"):
                    loss = loss_fn(ddp, batch)
                value = mean_loss(loss, env, epoch, step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update(module, step=step)
                step, done, seen = step + 1, done + 1, seen + batch[0].shape[0] * env.world
                run_loss += value
                log.step(step, value, sched.get_last_lr()[-1])
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{sched.get_last_lr()[-1]:.2e}",
                                img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            record = {"epoch": epoch + 1, "step": step, "loss": run_loss / max(1, done),
                      "lr": sched.get_last_lr()[-1],
                      "images_per_s": seen / (time.perf_counter() - t0)}
            if validate is not None:
                env.share_buffers(final)                        # validate what rank 0 saves
                record["val"] = validate(final)
            history.append(record)
            if env.is_main:
                extra = f"  val {format_metrics(record['val'])}" if "val" in record else ""
                print(f"epoch {epoch + 1}/{cfg.epochs}  loss {record['loss']:.4f}  "
                      f"{record['images_per_s']:.0f} img/s{extra}", flush=True)
                log.epoch(record, history)
                if snapshot is not None and snapshot_due(epoch + 1, cfg.epochs, snapshot_every):
                    for tag, image in snapshot(final).items():
                        log.images(tag, image, step)
                save_weights(final)                             # before the mark that the epoch
                save_checkpoint(out, epoch + 1, step, module, opt, sched, history, ema)   # is done
            env.barrier()
    finally:
        log.close()
    return history


def snapshot_due(epoch: int, epochs: int, every: int) -> bool:
    """Whether epoch (from 1) sends images: the first, every `every`-th and the last; never
    when every is 0."""
    return every > 0 and (epoch == 1 or epoch % every == 0 or epoch == epochs)


def save_checkpoint(out: Path, epoch, step, module, opt, sched, history, ema=None) -> None:
    """Weights and trainer state of one epoch, then the pointer to them, each atomically."""
    name = f"checkpoint-{epoch:04d}"
    ckpt.save_weights(module, out / f"{name}.safetensors", {"epoch": epoch})
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
             "step": step, "rng": torch.get_rng_state()}
    if ema is not None:
        state["ema"] = ema.module.state_dict()
    ckpt.save_torch(state, out / f"{name}.pt")
    ckpt.save_json({"checkpoint": name, "epoch": epoch, "step": step, "history": history},
                   out / "latest.json")
    for old in out.glob("checkpoint-*"):                    # keep only the newest pair
        if not old.name.startswith(name):
            old.unlink(missing_ok=True)


def load_checkpoint(out: Path, module, opt, sched, ema=None):
    """Restore what save_checkpoint wrote; returns (epoch, step, history)."""
    latest = ckpt.read_json(out / "latest.json")
    ckpt.load_weights(module, out / f"{latest['checkpoint']}.safetensors")
    state = ckpt.load_torch(out / f"{latest['checkpoint']}.pt")
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.module.load_state_dict(state["ema"])
    return state["epoch"], state["step"], latest["history"]
