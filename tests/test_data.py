"""Datasets, patient-grouped splits, transforms and the one-line errors for bad input."""

from __future__ import annotations

import shutil

import pytest
import torch

from ssmamba_lite.engine import data, transforms
from ssmamba_lite.engine.data import sample_dir


def copy_classes(src, dst, per_class=6):
    """A small class-folder dataset made of real images."""
    for cls in ("idc_negative", "idc_positive"):
        (dst / cls).mkdir(parents=True)
        for p in sorted((src / cls).glob("*.png"))[:per_class]:
            shutil.copy(p, dst / cls / p.name)
    return dst


def test_labels_csv_with_patients():
    s = data.find_labelled(sample_dir("idc-breast"))
    assert s.classes == ["idc_negative", "idc_positive"]
    assert len(s) == 955 and set(s.labels) == {0, 1}
    assert len(set(s.patients)) == 160 and s.patients[0] == "10255"


def test_patient_split_is_disjoint_and_near_the_fractions():
    s = data.find_labelled(sample_dir("idc-breast"))
    train, val = data.patient_split(s, (0.8, 0.2), seed=3)
    assert not set(train.patients) & set(val.patients)
    assert len(train) + len(val) == len(s)
    assert abs(len(val) / len(s) - 0.2) < 0.05
    again = data.patient_split(s, (0.8, 0.2), seed=3)[1]
    assert again.paths == val.paths, "seeded split must repeat"
    assert data.patient_split(s, (0.8, 0.2), seed=4)[1].paths != val.paths


def test_label_subset_keeps_whole_patients_and_every_class():
    s = data.find_labelled(sample_dir("idc-breast"))
    few = data.label_subset(s, 0.1, seed=0)
    assert 0.05 < len(few) / len(s) < 0.2
    assert set(few.labels) == {0, 1}
    kept = set(few.patients)
    assert all((g in kept) == (p in set(few.paths)) for g, p in zip(s.patients, s.paths))


def _patients(n):
    """n patients of four images each, both classes on every patient (as in IDC)."""
    paths, labels, patients = [], [], []
    for p in range(n):
        for j in range(4):
            paths.append(f"/tiles/{p}_{j}.png")
            labels.append(p % 2 if j < 3 else 1 - p % 2)
            patients.append(f"p{p}")
    return data.Samples(paths, labels, patients, ["a", "b"])


@pytest.mark.parametrize("fraction", [0.3, 0.4, 0.5, 0.6, 0.7])
def test_fractions_are_not_rounded_to_one_fold(fraction):
    # one fold of round(1 / f) made 0.4, 0.5 and 0.6 all one half of the patients
    s = _patients(100)
    kept = len(set(data.label_subset(s, fraction, seed=1).patients))
    held = len(set(data.patient_split(s, (1 - fraction, fraction), seed=1)[1].patients))
    assert kept == held == round(100 * fraction)


def test_class_folders_and_unlabelled(tmp_path):
    root = copy_classes(sample_dir("idc-breast"), tmp_path / "ds")
    s = data.find_labelled(root)
    assert s.classes == ["idc_negative", "idc_positive"] and len(s) == 12
    u = data.find_unlabelled(sample_dir("idc-breast-unlabeled"))
    assert len(u) == 464 and set(u.labels) == {-1}


def test_transforms_shapes_and_range():
    img = data.load_image(next((sample_dir("idc-breast") / "idc_positive").glob("*.png")))
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
        data.find_labelled(tmp_path / "nope")


def test_empty_class_folder_is_named(tmp_path):
    root = copy_classes(sample_dir("idc-breast"), tmp_path / "ds")
    (root / "empty_class").mkdir()
    with pytest.raises(data.DataError, match="class folder .*empty_class holds no images"):
        data.find_labelled(root)


def test_one_class_is_refused(tmp_path):
    root = copy_classes(sample_dir("idc-breast"), tmp_path / "ds")
    shutil.rmtree(root / "idc_positive")
    with pytest.raises(data.DataError, match="at least 2 classes"):
        data.find_labelled(root)


def test_truncated_png_is_named_or_skipped(tmp_path):
    root = copy_classes(sample_dir("idc-breast"), tmp_path / "ds")
    bad = sorted((root / "idc_positive").glob("*.png"))[0]
    bad.write_bytes(bad.read_bytes()[:60])
    s = data.find_labelled(root)
    with pytest.raises(data.DataError, match=f"cannot read image {bad}"):
        data.TileDataset(s)
    good, dropped = data.drop_unreadable(s)
    assert len(good) == 11 and [p for p, _ in dropped] == [bad]


def test_unknown_class_at_evaluation_is_named(tmp_path):
    root = copy_classes(sample_dir("idc-breast"), tmp_path / "ds")
    with pytest.raises(data.DataError, match=r"classes \['idc_positive'\] are not among"):
        data.find_labelled(root, classes=["idc_negative", "other"])


# ---------------------------------------------------------------------------------------------
# The sample sets, data names, a data folder's own split.
# ---------------------------------------------------------------------------------------------
def test_sample_sets_and_their_names(tmp_path, monkeypatch):
    assert data.sample_names() == ["cmu-small-region", "idc-breast", "idc-breast-unlabeled",
                                   "kather2016", "nct-crc-he"]
    assert data.resolve_data("sample:kather2016") == sample_dir("kather2016")
    assert len(data.find_labelled(data.resolve_data("sample:kather2016")).classes) == 8
    assert len(data.find_labelled(sample_dir("nct-crc-he")).classes) == 9
    assert (sample_dir("cmu-small-region") / "cmu_small_region.svs").is_file()
    with pytest.raises(data.DataError, match=r"no sample set 'idc'; the samples are \["):
        data.resolve_data("sample:idc")
    monkeypatch.delenv("SSMAMBA_DATA", raising=False)
    with pytest.raises(data.DataError, match="data:pcam: set SSMAMBA_DATA"):
        data.resolve_data("data:pcam")
    monkeypatch.setenv("SSMAMBA_DATA", str(tmp_path))
    assert data.resolve_data("data:pcam") == tmp_path / "pcam"
    assert data.resolve_data("some/folder") == data.Path("some/folder")


def test_the_idc_sample_carries_a_patient_disjoint_split():
    parts = data.own_split(sample_dir("idc-breast"))
    assert set(parts) == {"train", "val"}
    assert (len(parts["train"]), len(parts["val"])) == (697, 258)
    assert not set(parts["train"].patients) & set(parts["val"].patients)
    assert len(set(parts["val"].patients)) == 40 and set(parts["val"].labels) == {0, 1}
    pool = data.find_unlabelled(sample_dir("idc-breast-unlabeled"))
    assert set(pool.patients) <= set(parts["train"].patients), "the pool has no val patient"
    assert not set(pool.paths) & set(parts["train"].paths)


def test_own_split_layouts_and_what_is_labelled(tmp_path):
    root = copy_classes(sample_dir("idc-breast"), tmp_path / "plain")
    assert data.own_split(root) is None and data.is_labelled(root)
    images = sorted(root.rglob("*.png"))
    (root / "labels.csv").write_text("path,label,split\n" + "".join(
        f"{p.relative_to(root)},{p.parent.name},{('train', 'val')[i % 2]}\n"
        for i, p in enumerate(images)))
    parts = data.own_split(root)
    assert (len(parts["train"]), len(parts["val"])) == (6, 6)
    folders = tmp_path / "folders"
    for split in ("train", "test"):
        copy_classes(sample_dir("idc-breast"), folders / split, per_class=2)
    assert set(data.own_split(folders)) == {"train", "test"} and data.is_labelled(folders)
    assert not data.is_labelled(sample_dir("idc-breast-unlabeled"))
    only_all = tmp_path / "all"
    copy_classes(sample_dir("idc-breast"), only_all, per_class=2)
    (only_all / "labels.csv").write_text("path,label,split\n" + "".join(
        f"{p.relative_to(only_all)},{p.parent.name},all\n" for p in only_all.rglob("*.png")))
    assert data.own_split(only_all) is None, "a split column without train is no split"
