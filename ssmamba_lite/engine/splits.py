"""Which images a run sees: training, validation, and the patients held out of both stages.

The paper pretrains MAMIM on the target dataset itself; here that means on the *training*
images of the data being fine-tuned, never on a patient that fine-tuning holds out:

    labelled data, own split     train part for both stages; val validates; val and test are
                                 held out (labels.csv `split` column, or train/ val/ test/)
    labelled data, no split      a patient split stratified by class (split_seed, val_fraction):
                                 the same patients held out by pretraining and fine-tuning with
                                 the same values
    unlabelled data              pretraining uses all of it
    extra_data (pretraining)     an unlabelled pool added, minus images of held-out patients

`pretrain` records the patients it saw (pretrain_patients.json beside the encoder);
`finetune` refuses an encoder that saw one of its held-out patients (`check_unseen`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ssmamba_lite.engine import checkpoint as ckpt
from ssmamba_lite.engine.data import (
    DataError,
    Samples,
    drop_unreadable,
    find_labelled,
    find_unlabelled,
    has_patient_ids,
    is_labelled,
    own_split,
    patient_split,
    resolve_data,
)

PRETRAIN_PATIENTS = "pretrain_patients.json"   # beside encoder.safetensors: whom MAMIM saw
SPLIT_RECORD = "split.json"                    # beside model.safetensors: whom it held out


def labelled_parts(cfg, classes=None) -> tuple[Samples, Samples | None, set]:
    """(train, validation, held-out patients) of labelled cfg.data, the same for every run with
    the same data, split_seed and val_fraction: the data's own split (val validates; val and
    test are held out), else a patient split stratified by class with cfg.val_fraction (and a
    one-line warning when the data has no patient ids: then the split is per image)."""
    root = resolve_data(cfg.data)
    parts = own_split(root, classes)
    if parts:
        held = {g for s in ("val", "test") if s in parts for g in parts[s].patients}
        return parts["train"], parts.get("val"), held
    samples = find_labelled(root, classes)
    if not has_patient_ids(samples):
        print(f"warning: {root} gives no patient_id: the validation split is per image, and "
              f"tiles of one patient or slide may land on both sides")
    train, val = patient_split(samples, (1 - cfg.val_fraction, cfg.val_fraction),
                               cfg.split_seed)
    return train, val, set(val.patients)


def run_samples(cfg, labelled: bool, classes=None) -> tuple[Samples, Samples | None, set]:
    """(train, validation, held-out patients) of cfg.data as a run with config `cfg` sees
    them, unreadable training files handled per config. Labelled runs: `labelled_parts`.
    Pretraining (labelled=False): on labelled data the images of the same training part,
    labels dropped, so that MAMIM never sees a patient that fine-tuning holds out; unlabelled
    data whole (nothing held out); validation None."""
    root = resolve_data(cfg.data)
    if labelled:
        train, val, held = labelled_parts(cfg, classes)
    elif is_labelled(root):
        train, _, held = labelled_parts(cfg)
        train, val = Samples(train.paths, [-1] * len(train), train.patients), None
    else:
        train, val, held = find_unlabelled(root), None, set()
    train = readable(train, cfg, "training")
    val = readable(val, cfg, "validation") if val is not None else None
    return train, val, held


def readable(samples: Samples, cfg, part: str) -> Samples:
    """`samples` with every image decoded once before a run writes anything: the unreadable
    ones dropped (and counted) with cfg.skip_bad_images, else a DataError naming the first.
    Training and validation images alike, so that whether a bad file stops a run does not
    depend on which side of the split it falls."""
    kept, bad = drop_unreadable(samples)
    if bad and not cfg.skip_bad_images:
        raise DataError(f"{len(bad)} unreadable {part} image(s), e.g. {bad[0][1]} "
                        f"(--skip-bad-images leaves them out)")
    if bad:
        print(f"skipped {len(bad)} unreadable {part} image(s), e.g. {bad[0][1]}")
    return kept


def pretraining_samples(cfg) -> Samples:
    """The images MAMIM trains on: `run_samples`' training images of cfg.data, plus those of
    the unlabelled pool cfg.extra_data whose patients are not held out of cfg.data."""
    train, _, held = run_samples(cfg, labelled=False)
    if not cfg.extra_data:
        return train
    pool = find_unlabelled(resolve_data(cfg.extra_data))
    keep = [i for i, g in enumerate(pool.patients) if g not in held]
    if len(keep) < len(pool):
        print(f"extra_data: left out {len(pool) - len(keep)} image(s) of patients held out "
              f"of {cfg.data}")
    pool = readable(pool.subset(keep), cfg, "extra_data")
    return Samples(train.paths + pool.paths, [-1] * (len(train) + len(pool)),
                   train.patients + pool.patients)


def check_unseen(init_weights: Path, held_out: set) -> None:
    """A DataError when the MAMIM run that wrote `init_weights` pretrained on images of a
    patient this fine-tuning run holds out (its record: pretrain_patients.json beside it); a
    warning when there is no record to check."""
    record = init_weights.parent / PRETRAIN_PATIENTS
    if not record.is_file():
        print(f"warning: {init_weights} has no {PRETRAIN_PATIENTS} beside it: whether its "
              f"pretraining saw a patient this run holds out cannot be checked", file=sys.stderr)
        return
    seen = sorted(set(ckpt.read_json(record)["patients"]) & held_out)
    if seen:
        raise DataError(f"{init_weights}: MAMIM pretrained on images of {len(seen)} patient(s) "
                        f"this run holds out for validation (e.g. {seen[:3]}); pretrain on the "
                        f"same data with the same --split-seed and --val-fraction, which hold "
                        f"the same patients out")


def scored_part(checkpoint: Path, root: Path, samples: Samples) -> Samples:
    """The images of `samples` (all of `root`, which has no split of its own) that `evaluate`
    scores: when the fine-tuning run in `checkpoint` drew its split from this same data (its
    split.json), only the images of the patients it held out (the rest were trained on);
    all of them, with a warning, when it trained on this data and kept no record."""
    record = checkpoint / SPLIT_RECORD
    if record.is_file() and Path(ckpt.read_json(record)["data"]) == root.resolve():
        held = set(ckpt.read_json(record)["held_out_patients"])
        kept = samples.subset(i for i, g in enumerate(samples.patients) if g in held)
        print(f"scoring the {len(kept)} images of the {len(held)} patients the run held out "
              f"({record}); its other {len(samples) - len(kept)} images were trained on")
        return kept
    run = ckpt.read_json(checkpoint / "config.json").get("run", {}) \
        if (checkpoint / "config.json").is_file() else {}
    if not record.is_file() and run.get("data") and resolve_data(run["data"]).resolve() == \
            root.resolve():
        print(f"warning: {checkpoint} was trained on part of {root} and has no {SPLIT_RECORD}: "
              f"every image is scored, the trained ones included", file=sys.stderr)
    return samples
