# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06a · One cell of the ablation grid
#
# This notebook is run by **06_ablations** once per (variant, seed), with papermill; run it
# yourself to redo one cell, e.g. from the notebooks/ folder:
#
# ```bash
# papermill 06a_ablation_cell.ipynb ../runs/cell.ipynb -p variant no_lpr -p seed 1 \
#     -p output_dir ../runs/ablations/cells/no_lpr_seed1
# ```
#
# It pretrains with MAMIM (unless the variant is `no_mamim`), fine-tunes, and writes into
# `output_dir`: `result.json` (the last epoch's validation metrics, and how many MAMIM steps
# ran, of which how many were the learning rate's warm-up) and `predictions.csv` (one row per
# validation tile: its path, patient, label and class probabilities), from which 06 computes
# paired differences with intervals over patients.
#
# | variant | what is removed or changed | SSMambaConfig overrides |
# |---|---|---|
# | `full` | nothing | |
# | `no_mamim` | MAMIM pretraining: fine-tune from scratch | |
# | `no_dms` | DMS reduced to 1 direction, 1 scale | `directions=1, scales=[1]` |
# | `no_lpr` | the Local Perception Residual | `use_lpr=False` |
# | `attention` | DMS replaced by multi-head self-attention | `mixer="attention"` |

# %% tags=["parameters"]
data_dir = "sample:idc-breast"   # labelled tiles: class folders or labels.csv (any classes)
extra_data = ""                   # an unlabelled pool MAMIM sees too ("": only data_dir's training tiles)
output_dir = "runs/notebooks/06_ablations/cells/full_seed0"
image_size = 64
epochs = 3
batch_size = 32
device = "auto"
seed = 0
model = "ssmamba_lite_cpu"      # the laptop-sized preset; on a GPU: "ssmamba_lite_tiny"
model_args = {}                 # the base the variant changes (SSMambaConfig overrides)
variant = "full"
pretrain_epochs = 1
pretrain_max_steps = 0
label_fraction = 0.25
lr = 1e-3
max_steps_per_epoch = 0
progress = True

# %%
import json
import time
from pathlib import Path

from ssmamba_lite.course.analysis import ablation
from ssmamba_lite.course.runner import require_data

data_dir = require_data(data_dir, dataset="idc-breast")
if extra_data:
    require_data(extra_data, labelled=False)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
cell_args, use_mamim = ablation(variant, model_args)
print(f"variant {variant!r}, seed {seed}: model_args {cell_args}, MAMIM {use_mamim}")

# %%
from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig, finetune, pretrain

t0 = time.perf_counter()
init, mamim = "scratch", {"mamim_steps": 0, "mamim_warmup_steps": 0, "mamim_loss": None}
if use_mamim:
    pcfg = PretrainConfig(data=str(data_dir), extra_data=extra_data, out=str(out / "mamim"),
                          overwrite=True,
                          model=model, model_args=cell_args, image_size=image_size,
                          epochs=pretrain_epochs, batch_size=batch_size, seed=seed,
                          device=device, max_steps_per_epoch=pretrain_max_steps,
                          progress=progress)
    steps = pretrain(pcfg)
    total = steps[-1]["step"]
    warmup = max(1, round(pcfg.warmup_fraction * total))     # as engine/loop.py's fit
    mamim = {"mamim_steps": total, "mamim_warmup_steps": warmup,
             "mamim_loss": [round(h["loss"], 4) for h in steps]}
    print(f"MAMIM: {total} steps, the first {warmup} of them the linear warm-up of the "
          f"learning rate, {total - warmup} after it; loss per epoch {mamim['mamim_loss']}")
    init = str(out / "mamim" / "encoder.safetensors")
history = finetune(FinetuneConfig(
    data=str(data_dir), out=str(out / "finetune"), overwrite=True, model=model,
    model_args=cell_args,
    image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
    init=init, label_fraction=label_fraction, max_steps_per_epoch=max_steps_per_epoch,
    progress=progress))

# %% [markdown]
# The validation tiles' probabilities, tile by tile, with their patients: the raw material of
# 06's paired comparisons. The metrics recomputed from them equal the run's last epoch.

# %%
import pandas as pd

from ssmamba_lite.course.analysis import validation_samples
from ssmamba_lite.engine.device import resolve_device
from ssmamba_lite.engine.inference import load_trained, predict_probabilities
from ssmamba_lite.engine.metrics import classification_metrics

dev = resolve_device(device)
val_tiles = validation_samples(out / "finetune")
net, record = load_trained(out / "finetune", dev)
probs = predict_probabilities(net, val_tiles, record["image_size"], None, batch_size, dev)
predictions = pd.DataFrame({"path": [str(p) for p in val_tiles.paths],
                            "patient_id": [str(g) for g in val_tiles.patients],
                            "label": val_tiles.labels})
for k, name in enumerate(val_tiles.classes):
    predictions[f"prob_{name}"] = probs[:, k]
predictions.to_csv(out / "predictions.csv", index=False)
again = classification_metrics(val_tiles.labels, probs, val_tiles.classes)
val = history[-1]["val"]
print(f"{len(predictions)} validation tiles of {predictions['patient_id'].nunique()} patients; "
      f"balanced accuracy {again['balanced_accuracy']:.4f} from predictions.csv, "
      f"{val['balanced_accuracy']:.4f} in the run's history")

# %%
result = {"variant": variant, "seed": seed, "model_args": cell_args, "mamim": use_mamim,
          **{k: val[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "auroc", "n")},
          **mamim, "seconds": time.perf_counter() - t0, "epochs": epochs,
          "image_size": image_size, "label_fraction": label_fraction}
(out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
