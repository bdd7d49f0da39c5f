# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: nbgrader,tags,-all
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
# # 05 · Fine-tuning: from MAMIM versus from scratch
#
# *Previous:* [04 · MAMIM pretraining](04_mamim_pretraining.ipynb) · *Next:*
# [06 · Ablations](06_ablations.ipynb)
#
# **What.** Supervised fine-tuning (SFT): put a classification head on the encoder and train
# everything on labelled tiles, minimising the cross-entropy
#
# $$\mathcal L = -\frac{1}{n}\sum_{i=1}^{n} \log \frac{e^{f_{y_i}(x_i)}}{\sum_k e^{f_k(x_i)}} .$$
#
# We do it twice with *everything* equal (data, split, seed, schedule) except the start:
# random weights, or the encoder MAMIM pretrained on the training tiles of the same data
# (labels unused; notebook 04). SSMamba's abstract ([Chai et al. 2026](https://arxiv.org/abs/2604.15711))
# describes exactly this two-stage pipeline, "SSL pretraining on target ROI datasets followed
# by supervised fine-tuning (SFT)"; the schedule, learning rates and data sizes here are this
# project's, sized for a laptop CPU.
#
# **Why.** Labels in pathology cost a pathologist's time, so the interesting regime is few
# labels (`label_fraction` keeps only that share of the training *patients*). If MAMIM taught
# the encoder about tissue, the pretrained start should learn faster and generalise better
# there. We judge on a validation split of *held-out patients*, with accuracy, balanced
# accuracy (mean recall over classes), macro F1 and the area under the ROC curve (AUROC).

# %% [markdown]
# ## Learning objectives
#
# After this notebook you can
#
# - fine-tune a classifier from a MAMIM encoder and from scratch under equal conditions;
# - compute AUROC by hand as a pair probability (graded exercise) and read balanced accuracy,
#   macro F1, confusion matrices and ROC curves;
# - say why the split is by patient, and why MAMIM must not see the validation patients either;
# - tell a single-seed difference from a result (06 repeats it over seeds).

# %% [markdown]
# ## Prerequisites
#
# - [04 · MAMIM pretraining](04_mamim_pretraining.ipynb): where the encoder comes from (this
#   notebook loads 04's encoder of the same run, else the shipped one, else pretrains briefly).
# - [01 · Data](01_data.ipynb): patient-grouped splits; cross-entropy and a training loop in
#   PyTorch.

# %% tags=["parameters"]
data_dir = "sample:idc-breast"  # labelled tiles: class folders or labels.csv (any classes)
extra_data = ""                 # an unlabelled pool MAMIM sees too ("": only data_dir's training tiles)
output_dir = "runs/notebooks/05_finetuning"
image_size = 64
epochs = 4
batch_size = 32
device = "auto"
seed = 0
model = "ssmamba_lite_cpu"      # the laptop-sized preset; on a GPU: "ssmamba_lite_tiny"
model_args = {}                 # overrides of SSMambaConfig fields, e.g. {"use_lpr": False}
mamim_encoder_path = ""   # an encoder.safetensors from notebook 04; empty: pretrain here
pretrain_epochs = 1
pretrain_max_steps = 0    # more than 0: cut pretraining epochs short
label_fraction = 0.25     # share of the training patients whose labels we use
lr = 1e-3
max_steps_per_epoch = 0   # more than 0: cut fine-tuning epochs short
progress = True
retrain = False           # True: pretrain MAMIM here even when an encoder can be loaded

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from ssmamba_lite.course.figures import save_figure
from ssmamba_lite.course.runner import require_data
from ssmamba_lite.engine.device import resolve_device

data_dir = require_data(data_dir, dataset="idc-breast")
if extra_data:
    require_data(extra_data, labelled=False)
out = Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
dev = resolve_device(device)
_ = torch.manual_seed(seed)

# %% [markdown]
# ## 1. How we will judge: AUROC, by hand
#
# Accuracy depends on a threshold (0.5) and on the class balance. The area under the ROC
# curve does not: it is the probability that a randomly drawn positive tile gets a higher
# score than a randomly drawn negative one,
#
# $$\mathrm{AUROC} = \frac{1}{n_+ n_-} \sum_{i:\,y_i = 1}\ \sum_{j:\,y_j = 0}
# \Big( [s_i > s_j] + \tfrac12 [s_i = s_j] \Big),$$
#
# 1 for a perfect ranking, 0.5 for a random one.
#
# ### Exercise 1 (2 points): AUROC
#
# Write `binary_auroc(y_true, scores)` with this formula (ties count one half): `y_true` holds
# 0 and 1 (both present), `scores` the predicted probabilities of class 1; both are NumPy
# arrays of length $n$. Return a Python float. All pairs at once (broadcasting) is fine.

# %% nbgrader={"grade": false, "grade_id": "auroc", "locked": false, "schema_version": 3, "solution": true, "task": false}
import numpy as np


def binary_auroc(y_true, scores):
    """P(score of a random positive > score of a random negative), ties counting 1/2."""
    ### BEGIN SOLUTION
    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=float)
    pos, neg = scores[y_true == 1], scores[y_true == 0]
    higher = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(higher + 0.5 * ties)
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "auroc_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Checks binary_auroc against the library's metrics.auroc (scikit-learn's roc_auc_score). While
# binary_auroc runs, the library's AUROCs and scikit-learn's roc_auc_score and auc raise an
# error: calling them scores 0.
import numpy as np  # noqa: F811  (each test cell imports what it needs)
from sklearn.metrics import auc, roc_auc_score

from ssmamba_lite.course.exercises import assert_close, forbidden
from ssmamba_lite.engine.metrics import auroc, one_vs_rest_auroc


def check_auroc(n, positives, seed, decimals=None):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(positives, int), np.zeros(n - positives, int)])
    scores = np.clip(rng.normal(0.5 + 0.15 * y, 0.25), 0, 1)
    if decimals is not None:
        scores = scores.round(decimals)                     # ties
    reference = auroc(y, np.stack([1 - scores, scores], axis=1))
    with forbidden(auroc, one_vs_rest_auroc, roc_auc_score, auc, exercise="auroc"):
        mine = binary_auroc(y, scores)
    assert isinstance(mine, (float, np.floating)), \
        f"binary_auroc: expected a float, got {type(mine).__name__}"
    assert_close(mine, reference, f"binary_auroc (n={n}, {positives} positives)", seed=seed)


check_auroc(40, 15, seed=0)
### BEGIN HIDDEN TESTS
check_auroc(200, 20, seed=1)
check_auroc(7, 6, seed=2)
check_auroc(300, 150, seed=3, decimals=1)
check_auroc(2, 1, seed=4)
### END HIDDEN TESTS
print("binary_auroc: checks passed")

# %% [markdown]
# ## 2. The MAMIM encoder
#
# Where it comes from, in this order (`ssmamba_lite/course/handoff.py`): `mamim_encoder_path`
# when you give one; else notebook 04's encoder of the same run
# (`<output_dir>/../04_mamim_pretraining/mamim/`); else the encoder that ships with the package
# (`ssmamba_lite_cpu`, 64 px, `sample:idc-breast`); else a short pretraining here. A loaded
# encoder must have been made for the same data, model and image size, or it is not used (the
# next cell says why); `retrain = True` always pretrains here. MAMIM pretrains on the target
# data itself, as the paper does: the *training* tiles of `data_dir`, labels unused (plus
# `extra_data`, if you name a pool, minus its tiles of held-out patients). The validation
# patients stay unseen by both stages; the cell after this one checks it, and `finetune`
# refuses an encoder whose pretraining saw one of them.

# %%
from ssmamba_lite.course.handoff import find
from ssmamba_lite.engine.train import PretrainConfig, pretrain

if mamim_encoder_path:
    encoder = Path(mamim_encoder_path)
    print(f"loaded the MAMIM encoder given as mamim_encoder_path: {encoder}")
else:
    found = find("mamim_encoder", output_dir, data_dir, model, model_args, image_size, retrain)
    print(found.message)
    encoder = found.weights
    if found.path is None:
        encoder = out / "mamim" / "encoder.safetensors"
        pretrain(PretrainConfig(data=str(data_dir), extra_data=extra_data,
                                out=str(out / "mamim"), overwrite=True, model=model,
                                model_args=model_args,
                                image_size=image_size, epochs=pretrain_epochs,
                                batch_size=batch_size, seed=seed, device=device,
                                max_steps_per_epoch=pretrain_max_steps, progress=progress))

# %% [markdown]
# Whom did MAMIM see? The encoder's `pretrain_patients.json` lists its patients; none of them
# may be a validation patient of this split.

# %%
import json

from ssmamba_lite.engine.splits import labelled_parts
from ssmamba_lite.engine.train import FinetuneConfig

_, val_tiles, held_out = labelled_parts(FinetuneConfig(data=str(data_dir)))
seen_file = Path(encoder).parent / "pretrain_patients.json"
seen = json.loads(seen_file.read_text()) if seen_file.is_file() else None
if seen:
    print(f"MAMIM saw {seen['images']} tiles of {len(seen['patients'])} patients (no labels)")
else:
    print(f"{seen_file} is absent: this encoder's pretraining data is not on record")
print(f"validation: {len(val_tiles)} tiles of {len(held_out)} patients, "
      f"{len(held_out & set(seen['patients'])) if seen else 'unknown'} of them seen by MAMIM")

# %% [markdown]
# ## 3. Two fine-tuning runs
#
# `finetune` splits the labelled tiles by patient (80/20, seeded: the same split in both
# runs), keeps `label_fraction` of the training patients, trains, and validates after every
# epoch.

# %%
from ssmamba_lite.engine.train import FinetuneConfig, finetune

runs, histories = {}, {}
for name, init in (("from scratch", "scratch"), ("from MAMIM", str(encoder))):
    runs[name] = out / name.replace(" ", "_")
    print(f"--- {name}")
    histories[name] = finetune(FinetuneConfig(
        data=str(data_dir), out=str(runs[name]), overwrite=True, model=model,
        model_args=model_args,
        image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        device=device, init=init, label_fraction=label_fraction,
        max_steps_per_epoch=max_steps_per_epoch, progress=progress))

# %% [markdown]
# ## 4. Learning curves

# %%
from ssmamba_lite.course.figures import history_figure

fig = history_figure(histories, metrics=("loss", "accuracy", "auroc"))
save_figure(fig, out, "learning_curves")
plt.show()

# %% [markdown]
# ### The same runs in TensorBoard
#
# Every run writes TensorBoard events into its folder (`ssmamba_lite/engine/tracking.py`):
# the loss and learning rate of every optimizer step, and per epoch the mean loss, images per
# second and every validation metric (`val/auroc`, `val/balanced_accuracy`, ...); MAMIM runs
# add a grid of masked input, reconstruction and original tiles (the Images tab). The same
# numbers are in each folder's plain `metrics.csv`. To watch them live in JupyterLab, run in
# a cell
#
#     %load_ext tensorboard
#     %tensorboard --logdir runs/notebooks/05_finetuning
#
# or `tensorboard --logdir runs` in a terminal and open http://localhost:6006: every run
# under `runs/` is listed by its folder, so a whole ablation sits side by side. Below, the
# same events read back from disk and drawn the way the Scalars tab draws them: the per-step
# loss faint, under TensorBoard's default smoothing (0.6, a debiased moving average); it jumps
# by more than the epoch means above suggest, since each step sees one batch of a few
# patients. The validation AUROC is drawn as measured: TensorBoard smooths it too, and over a
# handful of epochs its smoothed curve lags behind the last value (set the slider to 0 to read
# the numbers themselves).

# %%

from ssmamba_lite.course.figures import tensorboard_figure
from ssmamba_lite.engine.tracking import read_scalars

fig = tensorboard_figure(runs, tags=("train/loss", "val/auroc"))
save_figure(fig, out, "tensorboard_scalars")
plt.show()
for name, folder in runs.items():
    logged = [v for _, v in read_scalars(folder)["val/auroc"]]
    kept = [h["val"]["auroc"] for h in histories[name]]
    agree = np.allclose(logged, kept, atol=1e-6)
    print(f"{name}: val/auroc of {len(logged)} epoch(s) in the events, "
          f"{'equal to' if agree else 'DIFFERENT from'} the history finetune returned")

# %% [markdown]
# ## 5. Metrics on the held-out patients (last epoch)
#
# The last epoch is scored: nothing is selected on the validation patients, so these numbers
# are not optimistic. When the classifier that ships with the package fits this data (IDC,
# `ssmamba_lite_cpu`, 64 px), it is scored on the same patients as a third row, for reference
# only: it was trained with *all* training labels and a longer schedule (its
# `history.json` and README say how), so it is not an equal-budget comparison.

# %%
from ssmamba_lite.course.analysis import validation_samples
from ssmamba_lite.engine.inference import evaluate_samples, load_trained

keys = ["accuracy", "balanced_accuracy", "macro_f1", "auroc", "n"]
metrics = {name: h[-1]["val"] for name, h in histories.items()}
shipped = find("classifier", output_dir, data_dir, model, model_args, image_size,
               here="05_finetuning")
if shipped.source == "shipped":
    print(shipped.message)
    ship_net, ship_record = load_trained(shipped.path, dev)
    ship_epochs = len(json.loads((shipped.path / "history.json").read_text()))
    ship_name = f"shipped (MAMIM + SFT, all labels, {ship_epochs} epochs)"
    metrics[ship_name] = evaluate_samples(ship_net, validation_samples(runs["from scratch"]),
                                          ship_record["classes"], image_size, 64, dev)
table = pd.DataFrame({name: {k: m[k] for k in keys} for name, m in metrics.items()}).T
table.to_csv(out / "metrics.csv")
gap = {k: table.loc["from MAMIM", k] - table.loc["from scratch", k]
       for k in ("balanced_accuracy", "auroc")}
print(f"from MAMIM minus from scratch, this run (one seed, {int(table.loc['from MAMIM', 'n'])} "
      f"tiles): balanced accuracy {gap['balanced_accuracy']:+.3f}, AUROC {gap['auroc']:+.3f}")
table.round(3)

# %% [markdown]
# ## 6. Confusion matrices and ROC curves
#
# A confusion matrix counts, for each true class (row), the predicted classes (columns): the
# diagonal is right, the rest shows *which* mistakes are made. The ROC curve plots the true
# positive rate against the false positive rate for every threshold on the predicted
# probability; its area (AUROC) is the chance that a random positive tile scores above a
# random negative one.

# %%
from ssmamba_lite.course.analysis import validation_samples
from ssmamba_lite.course.figures import confusion_figure, roc_figure
from ssmamba_lite.engine.inference import predict_probabilities

val = validation_samples(runs["from scratch"])
probs = {}
for name, folder in runs.items():
    net, record = load_trained(folder, dev)
    probs[name] = predict_probabilities(net, val, record["image_size"], batch_size=64, device=dev)
if shipped.source == "shipped":
    probs[ship_name] = predict_probabilities(ship_net, val, image_size, batch_size=64, device=dev)
fig = confusion_figure({n: h[-1]["val"]["confusion_matrix"] for n, h in histories.items()},
                       val.classes)
save_figure(fig, out, "confusion_matrices")
plt.show()
fig = roc_figure(val.labels, probs, val.classes)
save_figure(fig, out, "roc_curves")
plt.show()

# %% [markdown]
# **Reading the result.** One seed and a short schedule make a noisy comparison: the
# difference printed in section 5 is one draw. Rerun with other seeds (notebook
# [06](06_ablations.ipynb) does it systematically, with intervals), more epochs, or
# `label_fraction = 0.1`. The trained models are in the run folders (`model.safetensors`,
# `config.json`); use them from the command line too: `ssmamba-lite evaluate --data DIR
# --checkpoint FOLDER`. Notebook [07](07_explainability.ipynb) explains the "from MAMIM" model
# of this run.
#
# ## 7. The same question with error bars: a budget curve
#
# `benchmarks/mamim_budget.py` asks this notebook's question over three patient splits of the
# IDC sample: a random encoder (0 epochs) and MAMIM encoders pretrained for longer and longer
# (each budget a full schedule, the course's recipe), each fine-tuned with all labels and with
# 10% of the training patients' labels (at equal optimizer steps), and probed linearly. Its
# results ship with the package (`sample_data/weights/mamim_budget.jsonl`, the command in
# `ssmamba_lite/sample_data/weights/README.md`); the cell below draws them and computes each
# verdict from the paired interval over the splits (`course/budget.py`): budget $E$ minus the
# random encoder, split by split. The interval is the corrected resampled t of Nadeau and Bengio:
# random 80/20 splits share most of their training patients, so their scores are not
# independent and the plain $s/\sqrt{S}$ would be too narrow; it uses $s\sqrt{1/S + 0.2/0.8}$.
# Balanced accuracy reads the classifier at its 0.5 threshold, AUROC its ranking alone.

# %%
from ssmamba_lite.course.budget import METRICS as BUDGET_METRICS
from ssmamba_lite.course.budget import budget_figure, paired
from ssmamba_lite.engine.data import SAMPLE_ROOT

budget_file = SAMPLE_ROOT / "weights" / "mamim_budget.jsonl"
budget_rows = [json.loads(line) for line in budget_file.read_text().splitlines()]
fig = budget_figure(budget_rows)
save_figure(fig, out, "mamim_budget_curve")
plt.show()
for d in paired(budget_rows):
    print(f"{d['arm']}: MAMIM {d['budget']} epochs minus the random encoder, "
          f"{BUDGET_METRICS[d['metric']]} {d['difference']:+.3f} "
          f"[{d['low']:+.3f}, {d['high']:+.3f}] over {d['splits']} splits: {d['verdict']}")

# %% [markdown]
# ## What you learned
#
# - Fine-tuning puts a head on the encoder and trains everything with cross-entropy; from
#   MAMIM and from scratch differ only in the starting weights here.
# - AUROC is the probability that a random positive tile outscores a random negative one
#   (ties count a half); balanced accuracy is the mean recall over classes, robust to class
#   imbalance.
# - The split is by patient, and MAMIM never sees a validation patient either: otherwise the
#   encoder could memorise the very tissue it is judged on, labels or not.
# - One run's difference between two starts (printed in section 5) is not yet a result; 06
#   repeats it over seeds with intervals.
# - The encoder came from notebook 04 of the same run, the shipped weights, or a short
#   pretraining here: the cell of section 2 printed which.

# %% [markdown]
# ## Self-check
#
# **Q1** (1 point). Three positive tiles score 0.9, 0.6 and 0.4; two negative tiles score 0.5
# and 0.4. What is the AUROC? Two decimals; set `q1_auroc`.

# %% nbgrader={"grade": false, "grade_id": "q1_auroc", "locked": false, "schema_version": 3, "solution": true, "task": false}
q1_auroc = None     # your answer: a number between 0 and 1
### BEGIN SOLUTION
q1_auroc = 0.75
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q1_auroc_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q1", q1_auroc, "ce5d3aa79ae56155", decimals=2)

# %% [markdown]
# **Q2** (1 point). A validation set holds 200 negative and 58 positive tiles. A model calls
# every tile negative. What is its balanced accuracy? Two decimals; set
# `q2_balanced_accuracy`. (Its accuracy is 200/258 = 0.78.)

# %% nbgrader={"grade": false, "grade_id": "q2_balanced_accuracy", "locked": false, "schema_version": 3, "solution": true, "task": false}
q2_balanced_accuracy = None     # your answer: a number between 0 and 1
### BEGIN SOLUTION
q2_balanced_accuracy = 0.5
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q2_balanced_accuracy_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q2", q2_balanced_accuracy, "f88afaea4207e3bd", decimals=2)

# %% [markdown]
# **Q3** (1 point). What does `label_fraction = 0.25` keep? Set `q3_label_fraction` to `"a"`,
# `"b"`, `"c"` or `"d"`.
#
# - (a) a random 25% of the training tiles
# - (b) all training tiles of about 25% of the training patients (at least one per class)
# - (c) 25% of the validation patients
# - (d) 25% of the tiles of every class

# %% nbgrader={"grade": false, "grade_id": "q3_label_fraction", "locked": false, "schema_version": 3, "solution": true, "task": false}
q3_label_fraction = None     # your answer: "a", "b", "c" or "d"
### BEGIN SOLUTION
q3_label_fraction = "b"
### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "q3_label_fraction_tests", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from ssmamba_lite.course.quiz import check

assert check("Q3", q3_label_fraction, "3e23e8160039594a")

# %% [markdown]
# **Q4** (not graded). MAMIM uses no labels. Why must it still not see the validation
# patients?
#
# <details><summary>Answer</summary>
#
# Pretraining on a patient's tiles teaches the encoder that patient's tissue, staining and
# scanner: the features of exactly the tiles it is later judged on. The validation score would
# then measure how well the model knows those patients, not how it generalises to new ones.
# Labels are not needed for that leak.
#
# </details>
#
# **Q5** (not graded). Why split by patient and not by tile?
#
# <details><summary>Answer</summary>
#
# Tiles of one patient share tissue, stain and scanner, and often overlap in content. With a
# per-tile split, near-copies of training tiles land in validation, and the score rewards
# memorising patients. A new patient is what the model meets in practice.
#
# </details>

# %% [markdown]
# ## Exercises
#
# 1. **Fewer labels.** Set `label_fraction = 0.1`: does the gap printed in section 5 change
#    sign or size? Run three `seed`s before you believe it.
# 2. **Longer pretraining.** Set `retrain = True` and `pretrain_epochs = 10` (or run 04 with
#    `retrain = True, epochs = 10` first, in the same run folder) and compare with the shipped
#    encoder.
# 3. **An ablation.** `model_args = {"use_lpr": False}`: no encoder fits any more (another
#    model), so MAMIM pretrains here; compare the table with the full model's.
# 4. **Another dataset.** Point `data_dir` at `sample:kather2016` (8 classes): read the
#    multi-class confusion matrix and the per-class ROC curves.
