"""Files of a run, written atomically, and the one way weights go into and out of a module.

Weights go to safetensors (plain tensors, safe to load from anywhere); everything else a run
needs to resume (optimizer, scheduler, step counters, RNG states) goes to a torch file that is
read back only with `torch.load(weights_only=True)`.

    atomic_write(path, write)       the one atomic writer: a killed run never leaves a
                                    half-written file under a real name
    save_weights(module, path)      a module's state_dict -> .safetensors
    load_weights(module, path)      the one weight loader: keys and shapes must match, except
                                    for the key prefixes you name in `ignore`
    read_tensors(path)              a .safetensors file -> {name: tensor}, for looking inside
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TEMP_SUFFIX = ".tmp"        # `atomic_write` writes `.<target>.<random>.tmp`; the sweep finds them
ENCODER_PREFIX = "encoder."  # the encoder's weights inside a whole MAMIM checkpoint


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()             # what a plain open() would apply; read once (umask is per process)


def atomic_write(path, write) -> None:
    """`write(tmp)` writes a temporary file in `path`'s folder, then it is renamed over `path`.
    Readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)               # mkstemp's 0600 would hide it from others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(folder) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder` (SIGKILL skips `finally`).

    Only names `atomic_write` makes (`.<target>.<random>.tmp`) are touched. Call it before a
    run resumes in a folder, never while another process writes there. Returns what was removed.
    """
    stale = sorted(Path(folder).glob(f".*{TEMP_SUFFIX}")) if Path(folder).is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


# ---------------------------------------------------------------------------------------------
# Weights.
# ---------------------------------------------------------------------------------------------
def save_weights(module: torch.nn.Module, path, metadata: dict | None = None) -> None:
    """`module.state_dict()` -> a .safetensors file (contiguous CPU copies), atomically."""
    tensors = {k: v.detach().to("cpu").contiguous().clone()
               for k, v in module.state_dict().items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_tensors(path, device="cpu") -> dict:
    """The tensors of a .safetensors file, by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        return load_file(str(path), device=str(device))
    except Exception as e:                                  # safetensors' own error types
        raise ValueError(f"{path} is not a readable .safetensors file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else 'truncated?'})") from None


def load_weights(module: torch.nn.Module, path, ignore: tuple = ()) -> list[str]:
    """Load the .safetensors file `path` into `module`; every weight must fit (load_state).
    Returns the module's keys that were left as they were."""
    return load_state(module, read_tensors(path), path, ignore)


def load_state(module: torch.nn.Module, state: dict, path, ignore: tuple = (),
               hint: str = "") -> list[str]:
    """Put the tensors `state`, read from the file `path`, into `module`; every weight must fit.

    Keys saved from a DistributedDataParallel wrapper lose their "module." prefix. When the
    module has no key starting with "encoder." but the file has (a whole MAMIM checkpoint:
    encoder, mask token, decoder), only the encoder's weights are taken, without the prefix.
    Keys starting with one of the `ignore` prefixes are left out on both sides, e.g.
    ("head.",) to put an encoder into a classifier whose head starts fresh.
    Any other difference (a missing or unexpected key, a different shape) is a ValueError that
    names the file and the keys (and `hint`). Returns the module's keys that were left as they
    were.
    """
    path = Path(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = module.state_dict()
    if not any(k.startswith(ENCODER_PREFIX) for k in own) and \
            any(k.startswith(ENCODER_PREFIX) for k in state):
        state = {k.removeprefix(ENCODER_PREFIX): v for k, v in state.items()
                 if k.startswith(ENCODER_PREFIX)}
    skip = lambda k: k.startswith(tuple(ignore))  # noqa: E731
    state = {k: v for k, v in state.items() if not skip(k)}
    missing = [k for k in own if not skip(k) and k not in state]
    unexpected = [k for k in state if k not in own]
    where = f"{path} does not fit {type(module).__name__}"
    if missing or unexpected:
        raise ValueError(f"{where}: {len(missing)} missing key(s) {missing[:3]}, "
                         f"{len(unexpected)} unexpected {unexpected[:3]}{hint}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ValueError(f"{where}: {k} has shape {tuple(v.shape)} in the file, "
                             f"{tuple(own[k].shape)} in the model{hint}")
    module.load_state_dict(state, strict=False)
    return [k for k in own if skip(k)]


# ---------------------------------------------------------------------------------------------
# Trainer state and records.
# ---------------------------------------------------------------------------------------------
def save_torch(obj, path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path):
    """A trainer-state file (weights_only: no code in it is run); a ValueError naming the file
    when it is truncated or not a torch file."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}); delete the "
                         f"run folder's latest.json to start over, or restore the file") from None


def save_json(obj, path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None


# ---------------------------------------------------------------------------------------------
# A run folder before a run writes into it.
# ---------------------------------------------------------------------------------------------
RUN_FILES = ("model.safetensors", "encoder.safetensors", "latest.json")   # a run was here
SAME_RUN = ("task", "model", "model_args", "image_size", "classes")       # what --resume keeps


def check_run_folder(out, record: dict, resume: bool, overwrite: bool, delete: bool = True
                     ) -> None:
    """Called before a run writes anything into `out` (its config `record` in hand). A
    ValueError naming the folder or flag when `out` is a file or cannot be written; when it
    holds a run and neither --resume nor --overwrite is given (a finished model is never
    replaced silently); when --resume would continue a run of another task, model, model
    arguments, image size or classes. --overwrite deletes the earlier run's files first, so
    that a failed new run cannot leave a mix of old weights and a new config (`delete`: this
    process does that; under torchrun, rank 0)."""
    out = Path(out)                                # (a file: none found, check_writable says so)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not (resume or overwrite):
        raise ValueError(f"--out {out} holds a run ({found[0]}): --resume continues it, "
                         f"--overwrite replaces it, or choose another --out")
    if resume and not overwrite and (out / "config.json").is_file():
        old = read_json(out / "config.json")
        for key in SAME_RUN:
            if key in old and old.get(key) != record.get(key):
                raise ValueError(f"--resume: {out} is a run with {key} {old.get(key)!r}, this "
                                 f"one has {record.get(key)!r}; use another --out")
    check_writable(out)
    if overwrite and found and delete:
        records = (*RUN_FILES, "config.json", "history.json", "metrics.json", "split.json",
                   "metrics.csv")                  # (and the events: tracking.py's records)
        for old in [*out.glob("checkpoint-*"), *out.glob("events.out.tfevents.*"),
                    *(out / n for n in records)]:
            old.unlink(missing_ok=True)


def check_writable(out) -> None:
    """Create folder `out` if needed and prove it can be written; a ValueError naming --out
    when it is a file or cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {out} cannot be written ({e.strerror or e})") from None


def check_output_files(out, names, overwrite: bool) -> None:
    """Before an evaluation writes `names` into `out`: refuse (a ValueError naming the file)
    when one of them is there from an earlier evaluation, unless --overwrite."""
    out = Path(out)
    found = [name for name in names if (out / name).exists()]
    if found and not overwrite:
        raise ValueError(f"--out {out} already holds {found[0]} from an earlier evaluation: "
                         f"--overwrite replaces it, or choose another --out")
    check_writable(out)
