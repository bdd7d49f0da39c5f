"""Data-parallel training under torchrun: the process group, ranks, and the DDP wrapper.

`torchrun --nproc_per_node N ...` starts N processes with RANK / WORLD_SIZE / LOCAL_RANK set;
`setup` then joins them into one process group (NCCL on GPUs, gloo on CPUs). With one process
everything here is a no-op, so the same training code runs on a laptop and on a GPU node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ssmamba_lite.engine.device import resolve_device, seed_everything


@dataclass
class Env:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints and writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of `t` over all processes (in place; `t` itself with one process)."""
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every process. DDP keeps parameters equal,
        but each process updates its running statistics on its own batches."""
        if self.world > 1:
            for b in module.buffers():
                dist.broadcast(b, src=0)

    def gather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every process (picklable objects)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str = "auto", seed: int = 0, distributed: bool = True) -> Env:
    """Device, seeds, and (under torchrun) the process group."""
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1")) if distributed else 1
    rank = 0
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
    seed_everything(seed)
    return Env(dev, rank, world)


def wrap_ddp(module: torch.nn.Module, env: Env) -> torch.nn.Module:
    """DistributedDataParallel around `module` when several processes train together."""
    if env.world == 1:
        return module
    ids = [env.device.index] if env.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)
