"""Checkpoint files written atomically: a killed run never leaves a half-written file.

Weights go to safetensors (plain tensors, safe to load from anywhere); everything else a run
needs to resume (optimizer, scheduler, step counters, RNG states) goes to a torch file that is
read back only with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TEMP_SUFFIX = ".tmp"        # `_atomic` writes `.<target>.<random>.tmp`; the sweep finds them


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(folder) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder` (SIGKILL skips `finally`).

    Only names `_atomic` makes (`.<target>.<random>.tmp`) are touched. Call it before a run
    resumes in a folder, never while another process writes there. Returns what was removed.
    """
    stale = sorted(Path(folder).glob(f".*{TEMP_SUFFIX}")) if Path(folder).is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def save_state_dict(state: dict, path, metadata: dict | None = None) -> None:
    """Tensors -> safetensors file (contiguous CPU copies; shared storage is fine)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    _atomic(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_state_dict(path, device="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return load_file(str(path), device=str(device))


def save_torch(obj, path) -> None:
    _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def load_torch(path):
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def save_json(obj, path) -> None:
    def write(tmp):
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    _atomic(Path(path), write)
