"""MIL aggregators: their equations, exact padding, and learning on a constructed benchmark.

The benchmark is constructed (wsi/bench.py), not a slide dataset: bags of real IDC breast
patches, each bag from one patient, positive iff it holds >= 1 idc_positive patch, split by
patient. Patch features are colour statistics (12 numbers per patch), so the test measures the
aggregators, not an encoder.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from ssmamba_lite.cli import main
from ssmamba_lite.engine.data import sample_dir
from ssmamba_lite.wsi import bench as mil_bench
from ssmamba_lite.wsi import train as mil_train
from ssmamba_lite.wsi.features import write_features
from ssmamba_lite.wsi.mil import GatedAttention, MILAggregator, MILConfig, pad_bags, reverse_within


def test_gated_attention_equation():
    torch.manual_seed(0)
    att = GatedAttention(8, 4).eval()
    h = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    a = att(h, mask)
    V, U, w = att.V[0], att.U[0], att.w
    for b in range(2):
        n = int(mask[b].sum())
        s = w(torch.tanh(V(h[b, :n])) * torch.sigmoid(U(h[b, :n]))).squeeze(-1)
        torch.testing.assert_close(a[b, :n], torch.softmax(s, 0))
        assert (a[b, n:] == 0).all()


def test_reverse_within_keeps_padding():
    x = torch.arange(10.0).view(2, 5, 1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    r = reverse_within(x, mask)
    assert r[..., 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    assert torch.equal(reverse_within(r, mask), x)


@pytest.mark.parametrize("aggregator", ["abmil", "mamba"])
def test_padded_batch_equals_one_bag_at_a_time(aggregator):
    torch.manual_seed(0)
    model = MILAggregator(MILConfig(in_dim=12, aggregator=aggregator, hidden=16, attn_dim=8,
                                    layers=2, d_state=4)).eval()
    bags = [torch.randn(n, 12) for n in (3, 7, 1, 5)]
    x, mask = pad_bags(bags)
    assert x.shape == (4, 7, 12) and mask.sum(1).tolist() == [3, 7, 1, 5]
    logits, a = model(x, mask)
    for i, bag in enumerate(bags):
        one_logits, one_a = model(bag)
        torch.testing.assert_close(logits[i], one_logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a[i, :len(bag)], one_a[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(batch, n, 12\)"):
        model(torch.randn(1, 3, 10))


@pytest.fixture(scope="module")
def idc_labels():
    return sample_dir("idc-breast") / "labels.csv"


def test_patch_bags_follow_the_rules(idc_labels):
    with idc_labels.open() as f:
        truth = {str(idc_labels.parent / r["path"]): r for r in csv.DictReader(f)}
    bags = mil_bench.make_patch_bags(idc_labels, bag_size=4, seed=0)
    used = [str(p) for b in bags for p in b["paths"]]
    assert len(used) == len(set(used))                       # no patch in two bags
    split_of = {}
    for b in bags:
        rows = [truth[str(p)] for p in b["paths"]]
        assert {r["patient_id"] for r in rows} == {b["patient"]}          # one patient
        has_positive = any(r["label"] == "idc_positive" for r in rows)
        assert b["label"] == ("positive" if has_positive else "negative")
        assert 2 <= len(rows) <= 4
        assert split_of.setdefault(b["patient"], b["split"]) == b["split"]  # patient-level split
    for split in ("train", "val", "test"):
        labels = [b["label"] for b in bags if b["split"] == split]
        assert 0.3 < labels.count("positive") / len(labels) < 0.7, split   # both classes


@pytest.fixture(scope="module")
def bench(idc_labels, tmp_path_factory):
    out = tmp_path_factory.mktemp("idc_bags")
    labels = mil_bench.write_patch_bags(idc_labels, out, "colour", bag_size=4, seed=0,
                                        device="cpu")
    bags, classes = mil_train.load_bags(out / "features", labels)
    return mil_train.split_bags(bags), classes, out


@pytest.mark.parametrize("aggregator,epochs", [("abmil", 20), ("mamba", 6)])
def test_aggregators_learn_above_chance(bench, aggregator, epochs, tmp_path):
    split, classes, _ = bench
    cfg = MILConfig(aggregator=aggregator, hidden=64, attn_dim=32, layers=1, d_state=8)
    tcfg = mil_train.MILTrainConfig(epochs=epochs, lr=1e-3, batch_size=8, seed=0, device="cpu")
    result = mil_train.train_mil(split["train"], split["val"], classes, tmp_path, cfg, tcfg)
    m = mil_train.evaluate_mil(tmp_path, split["test"], classes, tmp_path / "test", device="cpu")
    # Held-out patients' bags; chance is 0.5 for both numbers. Measured: about 0.86 / 0.76.
    assert m["auroc"] > 0.75 and m["balanced_accuracy"] > 0.65, m
    assert result["best"]["epoch"] == json.loads((tmp_path / "config.json").read_text())["epoch"]
    rows = list(csv.DictReader((tmp_path / "test" / "predictions.csv").open()))
    assert len(rows) == len(split["test"]) == m["n"]


def test_cli_train_evaluate_with_heatmaps(tmp_path, capsys):
    """Slides with thumbnails (as wsi extract writes them) -> mil train -> heatmaps."""
    rng = np.random.default_rng(0)
    feats, rows = tmp_path / "features", []
    for i in range(12):
        label = i % 2
        coords = np.stack(np.meshgrid(np.arange(4) * 64, np.arange(3) * 64), -1).reshape(-1, 2)
        x = rng.normal(size=(12, 6)).astype(np.float32)
        x[:label * 3, 0] += 3                                  # positives: 3 marked tiles
        write_features(feats / f"s{i}.h5", x, coords, np.full((48, 64, 3), 230, np.uint8),
                       tile_size0=64, level0_size=[256, 192])
        rows.append(f"s{i},{'tumour' if label else 'normal'},p{i}")
    labels = tmp_path / "labels.csv"
    labels.write_text("slide,label,patient_id\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    common = ["--features", str(feats), "--labels", str(labels), "--device", "cpu"]
    assert main(["mil", "train", *common, "--out", str(run), "--epochs", "2",
                 "--hidden", "16", "--attn-dim", "8"]) == 0
    assert {"model.safetensors", "config.json", "metrics.json"} <= {p.name for p in run.iterdir()}
    out = capsys.readouterr().out
    assert "test (never used to pick)" in out and "picked on validation" in out
    # the same slides again: only those the run neither trained on nor picked with
    test = json.loads((run / "split.json").read_text())["test"]
    assert main(["mil", "evaluate", *common, "--out", str(tmp_path / "ev0"),
                 "--checkpoint", str(run)]) == 0
    assert f"scoring the {len(test)} test slides" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev0" / "eval_metrics.json").read_text())["n"] == len(test)
    assert main(["mil", "evaluate", *common, "--out", str(tmp_path / "ev"),
                 "--checkpoint", str(run), "--split", "all"]) == 0
    assert len(list((tmp_path / "ev" / "heatmaps").glob("s*.png"))) == 12
    labels.write_text("slide,label\ns0,normal\ns1,tumour\nmissing_slide,normal\n")
    assert main(["mil", "evaluate", *common, "--out", str(tmp_path / "ev2"),
                 "--checkpoint", str(run), "--split", "all"]) == 0                 # the others are evaluated
    err = capsys.readouterr().err
    assert "slide missing_slide of" in err and "missing_slide.h5" in err and "left out" in err
    assert json.loads((tmp_path / "ev2" / "eval_metrics.json").read_text())["n"] == 2
    labels.write_text("slide,label\nmissing_slide,normal\n")
    assert main(["mil", "evaluate", *common, "--out", str(tmp_path / "ev3"),
                 "--checkpoint", str(run), "--split", "all"]) == 2
    assert "no slide of" in capsys.readouterr().err
    labels.write_text("name,label\ns0,normal\n")
    with pytest.raises(ValueError, match="labels.csv needs the columns slide,label"):
        mil_train.load_bags(feats, labels)


def _bags(n_patients: int, slides_per_patient: int = 2, splits=None):
    rng = np.random.default_rng(0)
    bags = []
    for p in range(n_patients):
        for k in range(slides_per_patient):
            i = p * slides_per_patient + k
            bags.append(mil_train.Bag(f"s{i}", torch.from_numpy(rng.normal(
                size=(int(rng.integers(3, 9)), 4)).astype(np.float32)), np.zeros((1, 2)),
                label=p % 2, patient=f"p{p}", split=splits[i] if splits else None))
    return bags


def test_drawn_split_is_three_way_patient_disjoint_and_stratified():
    bags = _bags(30)
    split = mil_train.split_bags(bags, val_fraction=0.2, test_fraction=0.2, seed=3)
    patients = {k: {b.patient for b in v} for k, v in split.items()}
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
    assert sum(len(v) for v in split.values()) == len(bags)
    for k in ("val", "test"):
        assert 4 <= len(patients[k]) <= 8, (k, len(patients[k]))       # about 6 of 30
        assert {b.label for b in split[k]} == {0, 1}, k                # both classes


def test_a_drawn_test_share_is_not_rounded_to_one_fold():
    bags = _bags(40)
    for share in (0.3, 0.4):
        split = mil_train.split_bags(bags, val_fraction=0.0, test_fraction=share, seed=0)
        assert len({b.patient for b in split["test"]}) == round(40 * share), share


def test_a_split_column_must_be_whole_valid_and_patient_disjoint():
    with pytest.raises(ValueError, match="filled for 3 of 4 slides"):
        mil_train.split_bags(_bags(2, splits=["train", "train", "val", None]))
    with pytest.raises(ValueError, match="'validation' is not one of train, val, test"):
        mil_train.split_bags(_bags(2, splits=["train", "train", "validation", "validation"]))
    with pytest.raises(ValueError, match="patient p0 has slides in test and train"):
        mil_train.split_bags(_bags(2, splits=["train", "test", "val", "val"]))


def test_feature_statistics_stream_over_bags():
    bags = _bags(5)
    model = MILAggregator(MILConfig(in_dim=4, num_classes=2))
    model.set_feature_stats(b.features for b in bags)             # a generator: one pass
    every = torch.cat([b.features for b in bags])
    torch.testing.assert_close(model.feature_mean, every.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.feature_std, every.std(0), rtol=1e-5, atol=1e-6)
