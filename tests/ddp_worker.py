"""One process of a two-process run started by tests/test_engine.py with torch.distributed.run.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT

Rank 1 alone produces a non-finite loss at its first step; every process must stop with a
FloatingPointError (none may wait for the others), and each writes what it saw to
OUT/rank<r>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ssmamba_lite.engine.distributed import setup
from ssmamba_lite.engine.loop import fit
from ssmamba_lite.engine.train import FinetuneConfig


def main(out: Path) -> None:
    env = setup("cpu", seed=0)
    cfg = FinetuneConfig(data=str(out), out=str(out / "run"), epochs=1, batch_size=4,
                         progress=False)
    module = torch.nn.Linear(2, 2)
    dataset = torch.utils.data.TensorDataset(torch.randn(32, 2), torch.zeros(32, dtype=torch.long))

    def loss_fn(m, batch):
        loss = m(batch[0]).square().mean()
        return loss * float("nan") if env.rank == 1 else loss

    try:
        fit(cfg, env, module, dataset, loss_fn, lambda m: None)
        seen = {"error": None}
    except FloatingPointError as err:
        seen = {"error": str(err)}
    (out / f"rank{env.rank}.json").write_text(json.dumps(seen))
    env.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
