"""Datasets, patient-grouped splits, transforms and the one-line errors for bad input."""

from __future__ import annotations

import shutil

import pytest
import torch

from ssmamba_lite.engine import data, transforms


def copy_classes(src, dst, per_class=6):
    """A small class-folder dataset made of real images."""
    for cls in ("idc_negative", "idc_positive"):
        (dst / cls).mkdir(parents=True)
        for p in sorted((src / cls).glob("*.png"))[:per_class]:
            shutil.copy(p, dst / cls / p.name)
    return dst


def test_labels_csv_with_patients(shared_data):
    s = data.scan_labelled(shared_data / "idc_breast")
    assert s.classes == ["idc_negative", "idc_positive"]
    assert len(s) == 3000 and set(s.labels) == {0, 1}
    assert 200 < len(set(s.patients)) < 300 and s.patients[0] == "10254"


def test_patient_split_is_disjoint_and_near_the_fractions(shared_data):
    s = data.scan_labelled(shared_data / "idc_breast")
    train, val = data.patient_split(s, (0.8, 0.2), seed=3)
    assert not set(train.patients) & set(val.patients)
    assert len(train) + len(val) == len(s)
    assert abs(len(val) / len(s) - 0.2) < 0.05
    again = data.patient_split(s, (0.8, 0.2), seed=3)[1]
    assert again.paths == val.paths, "seeded split must repeat"
    assert data.patient_split(s, (0.8, 0.2), seed=4)[1].paths != val.paths


def test_label_subset_keeps_whole_patients_and_every_class(shared_data):
    s = data.scan_labelled(shared_data / "idc_breast")
    few = data.label_subset(s, 0.1, seed=0)
    assert 0.05 < len(few) / len(s) < 0.2
    assert set(few.labels) == {0, 1}
    kept = set(few.patients)
    assert all((g in kept) == (p in set(few.paths)) for g, p in zip(s.patients, s.paths))


def test_class_folders_and_unlabelled(shared_data, tmp_path):
    root = copy_classes(shared_data / "idc_breast", tmp_path / "ds")
    s = data.scan_labelled(root)
    assert s.classes == ["idc_negative", "idc_positive"] and len(s) == 12
    u = data.scan_unlabelled(shared_data / "idc_breast_unlabeled")
    assert len(u) == 6065 and set(u.labels) == {-1}


def test_transforms_shapes_and_range(shared_data):
    img = data.load_image(next((shared_data / "idc_breast" / "idc_positive").glob("*.png")))
    assert img.dtype == torch.uint8 and img.shape == (3, 50, 50)
    torch.manual_seed(0)
    x = transforms.train_transform(64)(img)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert -1.01 <= x.min() and x.max() <= 1.01
    y = transforms.eval_transform(64)(img)
    assert torch.equal(y, transforms.eval_transform(64)(img)), "evaluation transform is deterministic"


def test_hed_jitter_without_jitter_is_identity():
    img = torch.rand(3, 8, 8) * 0.9 + 0.05
    same = transforms.RandomHEDJitter(sigma=0.0, bias=0.0)(img)
    assert torch.allclose(same, img, atol=1e-4)
    assert not torch.allclose(transforms.RandomHEDJitter(0.3, 0.3)(img), img, atol=1e-3)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(data.DataError, match=f"data folder {tmp_path / 'nope'} does not exist"):
        data.scan_labelled(tmp_path / "nope")


def test_empty_class_folder_is_named(shared_data, tmp_path):
    root = copy_classes(shared_data / "idc_breast", tmp_path / "ds")
    (root / "empty_class").mkdir()
    with pytest.raises(data.DataError, match="class folder .*empty_class holds no images"):
        data.scan_labelled(root)


def test_one_class_is_refused(shared_data, tmp_path):
    root = copy_classes(shared_data / "idc_breast", tmp_path / "ds")
    shutil.rmtree(root / "idc_positive")
    with pytest.raises(data.DataError, match="at least 2 classes"):
        data.scan_labelled(root)


def test_truncated_png_is_named_or_skipped(shared_data, tmp_path):
    root = copy_classes(shared_data / "idc_breast", tmp_path / "ds")
    bad = sorted((root / "idc_positive").glob("*.png"))[0]
    bad.write_bytes(bad.read_bytes()[:60])
    s = data.scan_labelled(root)
    with pytest.raises(data.DataError, match=f"cannot read image {bad}"):
        data.TileDataset(s)
    good, dropped = data.drop_unreadable(s)
    assert len(good) == 11 and [p for p, _ in dropped] == [bad]


def test_unknown_class_at_evaluation_is_named(shared_data, tmp_path):
    root = copy_classes(shared_data / "idc_breast", tmp_path / "ds")
    with pytest.raises(data.DataError, match=r"classes \['idc_positive'\] are not among"):
        data.scan_labelled(root, classes=["idc_negative", "other"])
