"""Where a notebook finds what an earlier notebook made, so that the course runs as a chain:
04 pretrains a MAMIM encoder, 05 fine-tunes from it, 07 explains 05's classifier, 09 can
take 04's encoder for its tile features.

`make tutorial` (runner.py) runs every notebook with output_dir = <run>/<NN_name>/, and a
notebook run alone writes to runs/notebooks/<NN_name>/: either way an earlier notebook's
output lies at Path(output_dir).parent / <NN_name> / .... A notebook looks, in this order:

    retrain=True                    train here, load nothing
    the predecessor's output        e.g. <run>/04_mamim_pretraining/mamim/encoder.safetensors
    the shipped weights             ssmamba_lite/sample_data/weights/ (`ssmamba-lite course
                                    weights` made them; their README says how and how good)
    nothing that fits               train here

A candidate is taken only when it was made for the same data, model, model_args and image size
(and, for a classifier, the same classes): the shipped weights are `ssmamba_lite_cpu` at 64 px
on `sample:idc-breast`, and a notebook run on other tiles trains instead, saying why.

    found = find("mamim_encoder", output_dir, data_dir, model, model_args, image_size, retrain)
    print(found.message)           # one sentence: what was loaded, or why it trains here
    found.path                     # the run folder (config.json, weights), or None: train here
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ssmamba_lite.engine.checkpoint import read_json
from ssmamba_lite.engine.data import SAMPLE_ROOT, find_labelled, resolve_data

SHIPPED = SAMPLE_ROOT / "weights"          # the weights that ship with the package
MAKER = "ssmamba-lite course weights"      # the command that made them


@dataclass(frozen=True)
class Kind:
    """One kind of result a notebook hands on."""
    what: str          # in sentences: "MAMIM encoder"
    producer: str      # the notebook that makes it
    run: str           # its run folder inside the producer's output_dir
    weights: str       # the weights file inside a run folder
    shipped: str       # its folder inside SHIPPED
    classifier: bool   # True: its classes must be the data's


KINDS = {
    "mamim_encoder": Kind("MAMIM encoder", "04_mamim_pretraining", "mamim",
                          "encoder.safetensors", "mamim", False),
    "classifier": Kind("IDC classifier fine-tuned from MAMIM", "05_finetuning", "from_MAMIM",
                       "model.safetensors", "idc_classifier", True),
}


@dataclass(frozen=True)
class Found:
    path: Path | None      # the run folder to load from; None: train here
    source: str            # "retrain", "predecessor", "shipped" or "train"
    message: str           # one sentence for the reader
    kind: str = "mamim_encoder"

    @property
    def weights(self) -> Path | None:
        """The weights file inside `path` (None: train here)."""
        return None if self.path is None else self.path / KINDS[self.kind].weights


def _plain(value):
    """JSON's view of a value: tuples and lists compare equal."""
    return json.loads(json.dumps(value or {}))


def _same_data(a, b) -> bool:
    try:
        return resolve_data(a).resolve() == resolve_data(b).resolve()
    except ValueError:                                 # an unknown sample name: not the same
        return False


def mismatch(folder, kind: str, data_dir, model: str, model_args, image_size: int) -> str:
    """Why the run in `folder` does not fit a notebook with these settings ("" when it fits):
    a missing file, or another model, model_args, image size, data or class list."""
    k, folder = KINDS[kind], Path(folder)
    for name in ("config.json", k.weights):
        if not (folder / name).is_file():
            return f"{folder / name} does not exist"
    record = read_json(folder / "config.json")
    made = record.get("run", {}).get("data", "?")
    if record.get("model") != model:
        return f"it is a {record.get('model')}, this notebook uses {model}"
    if _plain(record.get("model_args")) != _plain(model_args):
        return f"it has model_args {record.get('model_args')}, this notebook {model_args}"
    if record.get("image_size") != image_size:
        return f"it was made at image_size {record.get('image_size')}, this notebook uses " \
               f"{image_size}"
    if not _same_data(made, data_dir):
        return f"it was made on {made}, this notebook uses {data_dir}"
    if k.classifier:
        classes = find_labelled(resolve_data(data_dir)).classes
        if list(record.get("classes") or []) != list(classes):
            return f"its classes are {record.get('classes')}, the data's {classes}"
    return ""


def shipped_folder(kind: str) -> Path:
    return SHIPPED / KINDS[kind].shipped


def predecessor_folder(kind: str, output_dir) -> Path:
    """Where the producing notebook of this run (or of runs/notebooks/) put it."""
    k = KINDS[kind]
    return Path(output_dir).resolve().parent / k.producer / k.run


def shown(path: Path) -> str:
    """A shipped path relative to the repository (the package's parent folder)."""
    try:
        return str(Path(path).relative_to(SAMPLE_ROOT.parents[1]))
    except ValueError:
        return str(path)


def find(kind: str, output_dir, data_dir, model: str, model_args, image_size: int,
         retrain: bool = False, here: str = "") -> Found:
    """What a notebook with these settings loads (see the module docstring for the order).

    `here`: the notebook that asks; a producer asking for its own kind (04 for the encoder)
    skips the predecessor step. Returns a Found whose message the notebook prints."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {sorted(KINDS)}")
    k = KINDS[kind]
    if retrain:
        return Found(None, "retrain", f"retrain=True: training the {k.what} here, nothing "
                                      f"loaded", kind)
    skipped = []
    if here != k.producer:
        folder = predecessor_folder(kind, output_dir)
        why = mismatch(folder, kind, data_dir, model, model_args, image_size)
        if not why:
            return Found(folder, "predecessor", f"loaded the {k.what} made by {k.producer} in "
                                                f"this run: {folder / k.weights}", kind)
        skipped.append(f"{k.producer}'s: {why}")
    folder = shipped_folder(kind)
    why = mismatch(folder, kind, data_dir, model, model_args, image_size)
    if not why:
        return Found(folder, "shipped", f"loaded the shipped {k.what} ({shown(folder / k.weights)}"
                                        f", made by `{MAKER}`, see its README)", kind)
    skipped.append(f"the shipped one: {why}")
    return Found(None, "train", f"training the {k.what} here, as none fits ("
                                f"{'; '.join(skipped)})", kind)
