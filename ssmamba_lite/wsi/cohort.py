"""A cohort of slides -> one feature file per slide, over any number of processes and machines.

    ssmamba-lite wsi extract --slides cohort.csv --out FEATS ...              one process
    torchrun --nproc-per-node 2 -m ssmamba_lite.cli wsi extract ...           two (GPUs: one each)
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 -m ssmamba_lite.cli wsi extract ...   32, on 4 machines

Every process (rank) walks the same list, largest slide file first, and takes a slide by
creating its claim file `FEATS/.claims/<slide>.json` (O_EXCL: one process wins). So the work is
balanced by what each rank gets through, not by a count fixed in advance: slides differ 100x in
tissue area and ranks in speed (a GPU kind, a busy node), and a static split would leave the
fastest rank idle while the slowest finishes; a claim needs nothing but the shared folder, and
the largest slides go first so that no rank starts a big one at the end. (File size stands in
for tissue area: reading every slide's thumbnail first would cost one pass over the cohort.)

Nothing lost, nothing done twice:
    feature file  written under a temporary name and renamed when whole (features.py); it
                  records its tile count, the encoder's weights fingerprint and the settings'
                  fingerprint. A rerun skips a whole file of the same encoder and settings,
                  refuses (one line, for that slide) a file made with other ones unless
                  --overwrite, and does the rest.
    claim         host, pid, rank, start time. A claim whose process is gone (same host) or
                  older than --stale-after hours is taken over, and the log says so. A rank
                  killed mid-slide leaves its claim and maybe a temporary file, never a
                  feature file; the next run takes the claim over and redoes that slide.
    status        FEATS/status/<slide>.json per slide tried: slide, rank, host, tiles,
                  seconds, tiles/s, error (one line) or null. A failing slide is recorded and
                  the others go on.
    summary       rank 0, when every rank is through: FEATS/cohort_summary.json (done /
                  skipped / failed with reasons, total tiles, slides per hour, each rank's
                  slides, tiles and seconds: imbalance shows) and extract_report.json.

Under torchrun each rank uses cuda:LOCAL_RANK when there are GPUs, else the CPU; the process
group (gloo on CPU) carries only the run's id and the final per-rank numbers.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

import torch.nn as nn
from tqdm.auto import tqdm

from ssmamba_lite.engine.checkpoint import TEMP_SUFFIX, save_json
from ssmamba_lite.engine.device import resolve_device
from ssmamba_lite.engine.distributed import Env
from ssmamba_lite.wsi.features import extract_slide, read_features
from ssmamba_lite.wsi.slide import SlideError
from ssmamba_lite.wsi.tiles import SLIDE_SUFFIXES, list_slides

CLAIMS, STATUS = ".claims", "status"
SUMMARY, REPORT = "cohort_summary.json", "extract_report.json"
STALE_AFTER_HOURS = 24.0


# ---------------------------------------------------------------------------------------------
# The cohort: slide files, folders, or a CSV.
# ---------------------------------------------------------------------------------------------
def cohort_slides(slides) -> list[Path]:
    """Slide files, folders (their slides) and cohort CSVs (a `slide` column of paths,
    relative ones read from the CSV's folder; other columns such as patient_id and label are
    for `mil train`) -> the slide paths. A missing file is one ValueError naming the CSV row."""
    items = [slides] if isinstance(slides, (str, os.PathLike)) else list(slides)
    listed = []
    for item in items:
        listed += read_cohort_csv(item) if Path(item).suffix.lower() == ".csv" else [item]
    out = list_slides(listed)                     # folders opened; two slides of one name refused
    if not out:
        raise ValueError(f"no slide ({', '.join(sorted(SLIDE_SUFFIXES))}) in {slides}")
    return out


def read_cohort_csv(path) -> list[Path]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cohort list {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or "slide" not in rows[0]:
        raise ValueError(f"cohort list {path} needs a 'slide' column (a path per row)")
    out = []
    for i, row in enumerate(rows, start=2):
        name = (row.get("slide") or "").strip()
        if not name:
            raise ValueError(f"{path} line {i}: the slide path is empty")
        slide = Path(name) if Path(name).is_absolute() else path.parent / name
        if not slide.is_file():
            raise ValueError(f"{path} line {i}: slide {name} does not exist ({slide})")
        out.append(slide)
    return out


def by_size(paths: list[Path]) -> list[Path]:
    """Largest file first (ties by name): the order every rank walks."""
    return sorted(paths, key=lambda p: (-p.stat().st_size, p.name))


# ---------------------------------------------------------------------------------------------
# Claims.
# ---------------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                                   # someone else's process
        return True
    return True


def stale_reason(claim: dict, age_s: float, stale_after_h: float) -> str | None:
    """Why a claim can be taken over, or None while its process may still be working."""
    who = f"rank {claim.get('rank', '?')}, pid {claim.get('pid', '?')} on {claim.get('host', '?')}"
    if claim.get("host") == socket.gethostname() and isinstance(claim.get("pid"), int) \
            and not _alive(claim["pid"]):
        return f"{who} is gone"
    if age_s > stale_after_h * 3600:
        return f"{who} started {age_s / 3600:.1f} h ago (--stale-after {stale_after_h:g})"
    return None


def claim(folder: Path, stem: str, me: dict, stale_after_h: float) -> tuple[bool, str | None]:
    """Take slide `stem`: (True, None), or (True, what was taken over), or (False, None) when
    a live process holds it. The claim file is created exclusively, so two ranks never both
    win; a stale one is first renamed aside (one rank wins that rename) and checked to be the
    claim that was read, so a fresh claim made meanwhile is put back, not stolen."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    taken_over = None
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                text, age = path.read_text(), time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue                                      # released meanwhile: try again
            try:
                old = json.loads(text)
            except json.JSONDecodeError:
                old = {}                                      # killed while writing it
            why = stale_reason(old, age, stale_after_h) if old else \
                (f"an unreadable claim {age:.0f} s old" if age > 60 else None)
            if why is None:
                return False, None
            aside = folder / f".{stem}.{socket.gethostname()}.{os.getpid()}.stale"
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            if aside.read_text() != text:                     # not the claim we judged stale
                try:
                    os.link(aside, path)                      # put it back (fails if taken)
                finally:
                    aside.unlink(missing_ok=True)
                continue
            aside.unlink(missing_ok=True)
            taken_over = why
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")
        return True, taken_over
    return False, None


def release(folder: Path, stem: str) -> None:
    (folder / f"{stem}.json").unlink(missing_ok=True)


def sweep_temps(out_dir: Path) -> list[Path]:
    """Delete the half-written files (`.<name>.<random>.tmp`, checkpoint.atomic_write) of
    feature files no process claims: a live writer always holds its slide's claim."""
    swept = []
    for tmp in out_dir.glob(f".*{TEMP_SUFFIX}"):
        target = tmp.name[1:].rsplit(".", 2)[0]               # ".a.h5.x7.tmp" -> "a.h5"
        if target.endswith(".h5") and not (out_dir / CLAIMS / f"{target[:-3]}.json").exists():
            tmp.unlink(missing_ok=True)
            swept.append(tmp)
    return swept


# ---------------------------------------------------------------------------------------------
# The cohort run.
# ---------------------------------------------------------------------------------------------
def existing(target: Path) -> dict | None:
    """The attributes of a whole feature file at `target`, or None when there is none."""
    if not target.is_file():
        return None
    try:
        return read_features(target, arrays=False)
    except ValueError:
        return None                                           # unreadable: redone


def extract_cohort(slides, out_dir, encoder: nn.Module, env: Env | None = None,
                   overwrite: bool = False, stale_after: float = STALE_AFTER_HOURS,
                   run_id: str | None = None, progress: bool = True, **kwargs) -> dict:
    """Every slide of `slides` (cohort_slides) into `<out_dir>/<slide>.h5` (features.extract_slide
    with `kwargs`), shared with every other rank of `env` (see the module's docstring).
    Returns the cohort summary (rank 0 writes it; every rank returns it)."""
    device = kwargs.pop("device", "auto")
    env = env or Env(resolve_device(device) if isinstance(device, str) else device)
    out_dir = Path(out_dir)
    paths = by_size(cohort_slides(slides))
    out_dir.mkdir(parents=True, exist_ok=True)
    claims, status = out_dir / CLAIMS, out_dir / STATUS
    run_id = env.gather(run_id or f"{datetime.datetime.now():%Y%m%d-%H%M%S}-"
                        f"{uuid.uuid4().hex[:8]}")[0]            # rank 0's, on every rank
    fingerprint = settings_fingerprint(encoder, kwargs)
    host = socket.gethostname()
    mine = {"slides": 0, "tiles": 0, "seconds": 0.0, "host": host}
    t_start = time.perf_counter()
    bar = tqdm(paths, desc=f"rank {env.rank} slides", unit="slide", position=env.rank,
               disable=not progress)
    refused = {}
    now = {"encoder_fingerprint": getattr(encoder, "fingerprint", None),   # what a file of
           "tile_size": kwargs.get("tile_size"),                             # this run records
           "target_mpp": None if kwargs.get("magnification") is not None else kwargs.get("mpp"),
           "image_size": kwargs.get("image_size") or getattr(encoder, "input_size", None)
           or kwargs.get("tile_size")}

    def settled(path, target) -> bool:                        # (done_already on its file)
        return done_already(existing(target), fingerprint, run_id, overwrite, refused, path,
                            kwargs.get("slide_mpp"), now)

    for path in bar:
        target = out_dir / f"{path.stem}.h5"
        if settled(path, target):
            continue
        me = {"slide": str(path), "rank": env.rank, "pid": os.getpid(), "host": host,
              "started": datetime.datetime.now().isoformat(timespec="seconds"), "run": run_id}
        won, taken = claim(claims, path.stem, me, stale_after)
        if not won:
            continue
        try:
            if settled(path, target):
                continue                                      # finished while we looked
            if taken:
                tqdm.write(f"rank {env.rank}: took over {path.name} ({taken})", file=sys.stderr)
            for tmp in out_dir.glob(f".{target.name}.*{TEMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)                   # a killed writer's half file
            record = run_slide(path, target, encoder, env, run_id, fingerprint, kwargs)
            record.update(host=host, pid=os.getpid(), run=run_id)
            save_json(record, status / f"{path.stem}.json")
            mine["slides"] += record["error"] is None
            mine["tiles"] += record["tiles"]
            mine["seconds"] += record["seconds"]
            bar.set_postfix(tiles=mine["tiles"])
        finally:
            release(claims, path.stem)
    mine["wall_seconds"] = time.perf_counter() - t_start
    for name, why in refused.items() if env.is_main else ():
        tqdm.write(f"error: {why}", file=sys.stderr)
        save_json({"slide": name, "rank": env.rank, "host": host, "tiles": 0, "seconds": 0,
                   "tiles_per_s": None, "error": why, "run": run_id},
                  status / f"{Path(name).stem}.json")
    per_rank = env.gather(mine)                               # waits for every rank
    summary = summarise(paths, out_dir, run_id, per_rank, refused)
    if env.is_main:
        sweep_temps(out_dir)
        save_json(summary, out_dir / SUMMARY)
        save_json({"done": summary["done"], "skipped": summary["skipped"],
                   "failed": summary["failed"]}, out_dir / REPORT)
    return summary


def done_already(attrs, fingerprint, run_id, overwrite, refused, path, slide_mpp=None,
                 now=None) -> bool:
    """Whether a slide needs no work: its file is whole and of this encoder and settings (or,
    with --overwrite, written by this very run); a file of other ones is refused by name,
    with the fields that differ. --slide-mpp counts only for a slide whose file took its
    level-0 resolution from it."""
    if attrs is None:
        return False
    if attrs.get("run") == run_id:
        return True                                           # another rank just did it
    if overwrite:
        return False
    other_mpp = attrs.get("mpp_source") == "--slide-mpp" and attrs.get("mpp") != slide_mpp
    if attrs.get("fingerprint") not in (None, fingerprint) or other_mpp:
        fields = [f"{k} {attrs.get(k)!r} there, {v!r} now" for k, v in (now or {}).items()
                  if attrs.get(k) != v]
        if other_mpp:
            fields.append(f"--slide-mpp {attrs.get('mpp')!r} there, {slide_mpp!r} now")
        what = "; ".join(fields) or "min_tissue, magnification or thumbnail_size"
        refused[path.name] = (f"{path.stem}.h5 was made with other settings or another "
                              f"encoder ({what}): --overwrite redoes it, or choose another "
                              f"--out")
    return True


def run_slide(path, target, encoder, env, run_id, fingerprint, kwargs) -> dict:
    """One slide, timed; a failure becomes the record's one-line error."""
    t0 = time.perf_counter()
    tiles, error = 0, None
    try:
        tiles = extract_slide(path, target, encoder, device=env.device,
                              progress=False, run=run_id, fingerprint=fingerprint, **kwargs)
    except (SlideError, ValueError, OSError, RuntimeError) as err:   # (RuntimeError: a
        # tile-reading worker's failure) one line per slide; the others still run
        error = str(err) if str(path) in str(err) else f"slide {path}: {err}"
        tqdm.write(f"error: {error}", file=sys.stderr)
    seconds = time.perf_counter() - t0
    return {"slide": str(path), "rank": env.rank, "tiles": tiles, "seconds": round(seconds, 3),
            "tiles_per_s": round(tiles / seconds, 2) if seconds > 0 else None, "error": error}


def summarise(paths, out_dir: Path, run_id: str, per_rank: list[dict], refused: dict) -> dict:
    """The whole cohort after this run: from the feature files and status records."""
    done, failed, skipped, missing = {}, {}, [], []
    for path in paths:
        record_file = out_dir / STATUS / f"{path.stem}.json"
        record = json.loads(record_file.read_text()) if record_file.is_file() else {}
        if path.name in refused:
            failed[path.name] = refused[path.name]
        elif record.get("run") == run_id and record.get("error"):
            failed[path.name] = record["error"]
        elif record.get("run") == run_id:
            done[path.name] = record["tiles"]
        elif existing(out_dir / f"{path.stem}.h5") is not None:
            skipped.append(path.name)
        else:
            missing.append(path.name)                         # held by a live claim elsewhere
    wall = max(r["wall_seconds"] for r in per_rank)
    return {"run": run_id, "ranks": len(per_rank), "slides": len(paths), "done": done,
            "skipped": skipped, "failed": failed, "not_done": missing,
            "tiles": sum(done.values()), "wall_seconds": round(wall, 2),
            "slides_per_hour": round(3600 * len(done) / wall, 1) if wall > 0 else None,
            "tiles_per_s": round(sum(done.values()) / wall, 1) if wall > 0 else None,
            "per_rank": {str(i): {k: round(v, 2) if isinstance(v, float) else v
                                  for k, v in r.items()} for i, r in enumerate(per_rank)}}


def settings_fingerprint(encoder: nn.Module, settings: dict) -> str:
    """sha256 (16 hex digits) of the encoder's weights fingerprint and the tiling settings."""
    import hashlib

    from ssmamba_lite.wsi.features import weights_fingerprint

    weights = getattr(encoder, "fingerprint", None) or weights_fingerprint(encoder)
    keep = {k: v for k, v in settings.items()               # (--slide-mpp: done_already)
            if k not in ("workers", "batch_size", "slide_mpp", "encoder_name")}
    text = json.dumps({"encoder": weights, **keep}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
