"""What a run records: TensorBoard events and metrics.csv from every fit (engine/tracking.py)."""

from __future__ import annotations

import io
import json
import math

import pytest
from PIL import Image

from ssmamba_lite.cli import main
from ssmamba_lite.engine import tracking
from ssmamba_lite.engine.data import find_labelled, sample_dir, write_labels_csv
from ssmamba_lite.engine.loop import snapshot_due

FT = ["--model", "ssmamba_lite_cpu", "--image-size", "32", "--max-steps-per-epoch", "2",
      "--batch-size", "4", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    s = find_labelled(sample_dir("idc-breast"))
    picked = [i for k in (0, 1) for i in [j for j, y in enumerate(s.labels) if y == k][:12]]
    return write_labels_csv(tmp_path_factory.mktemp("d") / "labels.csv", s.subset(picked)).parent


def test_a_finetune_records_every_step_and_every_validation_metric(data, tmp_path):
    run = tmp_path / "ft"
    assert main(["finetune", "--data", str(data), "--out", str(run), "--epochs", "2", *FT]) == 0
    history = json.loads((run / "history.json").read_text())
    scalars = tracking.read_scalars(run)
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in scalars["epoch/loss"]] == [2, 4]
    for metric in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
        assert [v for _, v in scalars[f"val/{metric}"]] == pytest.approx(
            [h["val"][metric] for h in history], abs=1e-6)
    rows = tracking.read_metrics_csv(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["val_auroc"] for r in rows] == pytest.approx([h["val"]["auroc"] for h in history])
    assert [r["loss"] for r in rows] == pytest.approx([h["loss"] for h in history])


def test_a_resumed_run_counts_no_epoch_twice(data, tmp_path):
    run = tmp_path / "ft"
    assert main(["finetune", "--data", str(data), "--out", str(run), "--epochs", "1", *FT]) == 0
    # what a run killed during epoch 2 had already logged past its last checkpoint (step 2)
    from torch.utils.tensorboard import SummaryWriter
    killed = SummaryWriter(str(run))
    killed.add_scalar("train/loss", 999.0, 3)
    killed.close()
    assert main(["finetune", "--data", str(data), "--out", str(run), "--epochs", "2", "--resume",
                 *FT]) == 0
    scalars = tracking.read_scalars(run)
    steps = [s for s, _ in scalars["train/loss"]]
    assert steps == [1, 2, 3, 4], steps
    assert 999.0 not in [v for _, v in scalars["train/loss"]]
    assert [r["epoch"] for r in tracking.read_metrics_csv(run / "metrics.csv")] == [1, 2]


def test_event_files_are_read_in_the_order_they_were_written_not_by_name(tmp_path):
    # two writers one process opens within one second are named ...<second>.<host>.<pid>.9
    # and ...10: by name the later sorts first, and a purge would then hide the wrong steps
    from torch.utils.tensorboard import SummaryWriter
    first = SummaryWriter(str(tmp_path))
    for step in (1, 2, 3):
        first.add_scalar("train/loss", float(step), step)
    first.close()
    resumed = SummaryWriter(str(tmp_path), purge_step=3)
    resumed.add_scalar("train/loss", 30.0, 3)
    resumed.add_scalar("train/loss", 40.0, 4)
    resumed.close()
    old, new = sorted(tmp_path.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    old.rename(tmp_path / "events.out.tfevents.9999999999.host.1.9")   # sorts last by name
    new.rename(tmp_path / "events.out.tfevents.0000000000.host.1.10")
    assert tracking.read_scalars(tmp_path)["train/loss"] == [(1, 1.0), (2, 2.0), (3, 30.0),
                                                             (4, 40.0)]


def test_overwrite_removes_the_earlier_runs_events(data, tmp_path):
    run = tmp_path / "ft"
    assert main(["finetune", "--data", str(data), "--out", str(run), "--epochs", "2", *FT]) == 0
    assert main(["finetune", "--data", str(data), "--out", str(run), "--epochs", "1",
                 "--overwrite", *FT]) == 0
    assert [s for s, _ in tracking.read_scalars(run)["epoch/loss"]] == [2]
    assert len(tracking.read_metrics_csv(run / "metrics.csv")) == 1


def test_pretraining_sends_masked_reconstruction_original_grids(data, tmp_path):
    run = tmp_path / "pt"
    assert main(["pretrain", "--data", str(data), "--out", str(run), "--epochs", "3",
                 "--snapshot-every", "2", "--snapshot-images", "4", *FT]) == 0
    images = tracking.read_images(run)["mamim/masked_reconstruction_original"]
    assert [s for s, _ in images] == [2, 4, 6]          # the first epoch, the 2nd, the last
    grid = Image.open(io.BytesIO(images[-1][1]))
    assert grid.size == (3 * (32 + 2) + 2, 4 * (32 + 2) + 2)   # 3 columns, a row per tile
    # the three columns differ: the masked input is not the original, nor is the result
    import numpy as np
    a = np.asarray(grid.convert("RGB"), dtype=float)[2:34]
    masked, result, original = (a[:, 2 + 34 * c: 34 + 34 * c] for c in range(3))
    assert np.abs(masked - original).mean() > 5
    assert np.abs(result - masked).mean() > 1
    assert [s for s, _ in tracking.read_scalars(run)["epoch/loss"]] == [2, 4, 6]


@pytest.mark.parametrize("every, epochs, due", [
    (0, 5, []), (1, 3, [1, 2, 3]), (5, 12, [1, 5, 10, 12]), (5, 1, [1])])
def test_snapshot_epochs(every, epochs, due):
    assert [e for e in range(1, epochs + 1) if snapshot_due(e, epochs, every)] == due


def test_metrics_csv_keeps_numbers_and_leaves_records_out(tmp_path):
    history = [{"epoch": 1, "step": 3, "loss": 0.5, "lr": 1e-3, "images_per_s": 10.0,
                "val": {"auroc": 0.7, "confusion_matrix": [[1, 0], [0, 1]], "classes": ["a", "b"],
                        "n": 2}},
               {"epoch": 2, "step": 6, "loss": 0.4, "lr": 1e-4, "images_per_s": 11.0}]
    tracking.write_metrics_csv(history, tmp_path / "m.csv")
    rows = tracking.read_metrics_csv(tmp_path / "m.csv")
    assert list(rows[0]) == ["epoch", "step", "loss", "lr", "images_per_s", "val_auroc", "val_n"]
    assert rows[0]["val_auroc"] == 0.7 and math.isnan(rows[1]["val_auroc"])


def test_mil_training_is_recorded_too(tmp_path):
    import numpy as np
    import torch

    from ssmamba_lite.wsi.train import Bag, MILTrainConfig, train_mil
    rng = np.random.default_rng(0)
    bags = [Bag(name=f"s{i}", label=i % 2, patient=f"p{i}", coords=np.zeros((5, 2)),
                features=torch.from_numpy(rng.normal(i % 2, 1, (5, 8)).astype("float32")))
            for i in range(8)]
    train_mil(bags[:6], bags[6:], ["a", "b"], tmp_path / "mil",
              tcfg=MILTrainConfig(epochs=3, device="cpu"))
    scalars = tracking.read_scalars(tmp_path / "mil")
    assert [s for s, _ in scalars["epoch/train_loss"]] == [1, 2, 3]
    assert "val/auroc" in scalars
    assert len(tracking.read_metrics_csv(tmp_path / "mil" / "metrics.csv")) == 3


def test_smoothing_is_tensorboards_debiased_average():
    from ssmamba_lite.course.figures import smoothed
    assert smoothed([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])   # no pull towards 0
    s = smoothed([0.0, 1.0], weight=0.5)
    assert s[0] == 0.0 and s[1] == pytest.approx(0.5 * 1.0 / (1 - 0.25))


def test_the_tensorboard_figure_draws_what_the_events_hold(data, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from ssmamba_lite.course.figures import tensorboard_figure
    run = tmp_path / "ft"
    assert main(["finetune", "--data", str(data), "--out", str(run), "--epochs", "2", *FT]) == 0
    fig = tensorboard_figure({"a run": run}, tags=("train/loss", "val/auroc"))
    raw = fig.axes[1].lines[0].get_ydata()
    assert list(raw) == pytest.approx([v for _, v in tracking.read_scalars(run)["val/auroc"]])
