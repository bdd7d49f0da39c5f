"""Using a trained classifier: load it back, evaluate it, predict with it.

    load_trained(folder)         (model, config record) of a `finetune` output folder
    evaluate(data, checkpoint)   labelled images -> metrics dict (+ out/metrics.json)
    predict(checkpoint, paths)   images -> class and probability per image
    predict_probabilities(...)   class probabilities (n, K) of any model on samples
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ssmamba_lite.engine import checkpoint as ckpt
from ssmamba_lite.engine.data import Samples, TileDataset, find_labelled, own_split, resolve_data
from ssmamba_lite.engine.device import resolve_device
from ssmamba_lite.engine.factory import model_from_config
from ssmamba_lite.engine.metrics import classification_metrics, format_metrics
from ssmamba_lite.engine.splits import scored_part
from ssmamba_lite.engine.transforms import eval_transform


@torch.no_grad()
def predict_probabilities(model, samples: Samples, image_size: int, view=None,
                          batch_size: int = 64, device="cpu") -> np.ndarray:
    """Class probabilities (n, K) of `model` (put in eval mode) on `samples`, with the
    evaluation transform; `view`, when given, changes each resized uint8 tile (3, H, W) first
    (e.g. a zoom)."""
    model.eval()
    loader = DataLoader(TileDataset(samples, eval_transform(image_size, view)), batch_size)
    return torch.cat([model(x.to(device)).float().softmax(-1).cpu() for x, _ in loader]).numpy()


def evaluate_samples(model, samples: Samples, classes, image_size: int, batch_size: int,
                     device) -> dict:
    """classification_metrics of `model` on labelled `samples`."""
    probs = predict_probabilities(model, samples, image_size, None, batch_size, device)
    return classification_metrics(samples.labels, probs, classes)


def load_trained(checkpoint, device="cpu"):
    """(model in eval mode, config record) from a fine-tuning output folder."""
    folder = Path(checkpoint)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: expected config.json and model.safetensors "
                                f"(the output folder of `ssmamba-lite finetune`)")
    record = ckpt.read_json(folder / "config.json")
    model = model_from_config(record)
    ckpt.load_weights(model, folder / "model.safetensors")
    return model.to(device).eval(), record


def evaluate(data, checkpoint, out=None, batch_size: int = 64, device: str = "auto",
             overwrite: bool = False) -> dict:
    """Metrics of a fine-tuned model on labelled data (its test part, else its val part, when
    it has a split of its own; else the patients the run held out when it was trained on this
    data, else all of it: splits.scored_part); classes are matched by name to the training
    classes. `data`: a path, "sample:NAME" or "data:NAME" (data.resolve_data). `out`: where
    metrics.json goes (an earlier one there is kept unless `overwrite`)."""
    if out is not None:
        ckpt.check_output_files(out, ["metrics.json"], overwrite)
    device = resolve_device(device)
    model, record = load_trained(checkpoint, device)
    root = resolve_data(data)
    parts = own_split(root, classes=record["classes"])
    samples = parts.get("test", parts.get("val")) if parts else \
        scored_part(Path(checkpoint), root, find_labelled(root, classes=record["classes"]))
    metrics = evaluate_samples(model, samples, record["classes"], record["image_size"],
                               batch_size, device)
    print(format_metrics(metrics))
    if out is not None:
        ckpt.save_json(metrics, Path(out) / "metrics.json")
    return metrics


def predict(checkpoint, images, device: str = "auto") -> list[dict]:
    """Class and probability of each image file."""
    device = resolve_device(device)
    model, record = load_trained(checkpoint, device)
    paths = [Path(p) for p in images]
    samples = Samples(paths, [0] * len(paths), [str(p) for p in paths], record["classes"])
    probs = predict_probabilities(model, samples, record["image_size"], device=device)
    return [{"path": str(p), "class": record["classes"][int(q.argmax())],
             "probability": float(q.max())} for p, q in zip(paths, probs)]
