"""data_scripts layouts for BreakHis, IDC, MHIST and BACH, from files placed by hand.

This is also the path for institutions with local copies and for form-only datasets: put the
published file in <root>/.downloads/<name>/ and run `data download NAME` (no network).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_scripts import fetch, registry
from data_scripts.checksums import RECORDED_NAME
from data_scripts.install import Options, install


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    arr = np.random.default_rng(seed).integers(0, 255, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def variant(monkeypatch):
    """A copy of a real entry with no checksums (files placed by hand are recorded)."""
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    added = []

    def make(base: str) -> registry.Dataset:
        ds = registry.get(base)
        files = tuple(dataclasses.replace(f, md5=None, sha256=None, size=None,
                                          checksum_source=registry.NONE_PUBLISHED)
                      for f in ds.files)
        new = registry.register(dataclasses.replace(ds, name="t-" + base, files=files),
                                replace=True)
        added.append(new.name)
        return new

    yield make
    for name in added:
        registry.unregister(name)


def labels(root: Path, name: str) -> list[dict]:
    with open(root / name / "labels.csv") as fh:
        return list(csv.DictReader(fh))


def place(root: Path, ds: registry.Dataset, filename: str) -> Path:
    folder = root / ".downloads" / ds.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder / filename


def test_breakhis_tar_gz_gives_patient_ids_and_magnification(tmp_path, variant):
    ds = variant("breakhis")
    members = {
        "BreaKHis_v1/histology_slides/breast/benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/"
        "SOB_B_A-14-22549AB-40-001.png": png(1),
        "BreaKHis_v1/histology_slides/breast/malignant/SOB/ductal_carcinoma/SOB_M_DC_14-2523/"
        "400X/SOB_M_DC-14-2523-400-010.png": png(2),
        "BreaKHis_v1/README.txt": b"not an image",
    }
    with tarfile.open(place(tmp_path, ds, "BreaKHis_v1.tar.gz"), "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    summary = install(ds, tmp_path, Options(progress=False))
    assert "2 images" in summary
    rows = {r["label"]: r for r in labels(tmp_path, ds.name)}
    assert rows["adenosis"]["patient_id"] == "14-22549AB" and rows["adenosis"]["magnification"] == "40X"
    assert rows["ductal_carcinoma"]["tumour"] == "malignant"
    assert rows["ductal_carcinoma"]["path"] == "all/ductal_carcinoma/SOB_M_DC-14-2523-400-010.png"
    assert (tmp_path / RECORDED_NAME).is_file()  # none published: sha256 recorded on first use


def test_idc_zip_dedupes_and_keeps_patient(tmp_path, variant):
    ds = variant("idc-breast")
    with zipfile.ZipFile(place(tmp_path, ds, "IDC_regular_ps50_idx5.zip"), "w") as zf:
        zf.writestr("10253/0/10253_idx5_x1001_y1001_class0.png", png(3))
        zf.writestr("10253/1/10253_idx5_x501_y351_class1.png", png(4))
        zf.writestr("IDC_regular_ps50_idx5/10253/0/10253_idx5_x1001_y1001_class0.png", png(3))
        zf.writestr("8863/1/8863_idx5_x51_y1251_class1.png", png(5))
    install(ds, tmp_path, Options(progress=False))
    rows = labels(tmp_path, ds.name)
    assert sorted((r["label"], r["patient_id"]) for r in rows) == [
        ("idc_negative", "10253"), ("idc_positive", "10253"), ("idc_positive", "8863")]


def test_idc_accepts_the_kaggle_archive_and_records_its_hash(tmp_path, variant, capsys):
    ds = variant("idc-breast")
    with zipfile.ZipFile(place(tmp_path, ds, "archive.zip"), "w") as zf:   # Kaggle's layout
        for top in ("", "IDC_regular_ps50_idx5/"):                          # each patch twice
            zf.writestr(f"{top}10253/0/10253_idx5_x1001_y1001_class0.png", png(3))
            zf.writestr(f"{top}9036/1/9036_idx5_x1051_y2401_class1.png", png(6))
    install(ds, tmp_path, Options(progress=False))
    assert "idc-breast: using archive.zip in place of IDC_regular_ps50_idx5.zip" in \
        capsys.readouterr().out
    rows = labels(tmp_path, ds.name)
    assert sorted((r["label"], r["patient_id"]) for r in rows) == [
        ("idc_negative", "10253"), ("idc_positive", "9036")]
    assert "archive.zip" in (tmp_path / RECORDED_NAME).read_text()


def test_mhist_uses_the_official_partition(tmp_path, variant):
    ds = variant("mhist")
    with zipfile.ZipFile(place(tmp_path, ds, "images.zip"), "w") as zf:
        for i, name in enumerate(("MHIST_aaa.png", "MHIST_aab.png", "MHIST_aac.png")):
            zf.writestr(f"images/{name}", png(10 + i))
    place(tmp_path, ds, "annotations.csv").write_text(
        "Image Name,Majority Vote Label,Number of Annotators who Selected SSA (Out of 7),Partition\n"
        "MHIST_aaa.png,SSA,6,train\nMHIST_aab.png,HP,1,train\nMHIST_aac.png,HP,0,test\n")
    install(ds, tmp_path, Options(progress=False))
    paths = sorted(r["path"] for r in labels(tmp_path, ds.name))
    assert paths == ["test/HP/MHIST_aac.png", "train/HP/MHIST_aab.png", "train/SSA/MHIST_aaa.png"]


def test_bach_photos_only_and_bad_layout_is_a_clear_error(tmp_path, variant):
    ds = variant("bach")
    archive = place(tmp_path, ds, "ICIAR2018_BACH_Challenge.zip")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ICIAR2018_BACH_Challenge/Photos/Benign/b001.tif", png(20))
        zf.writestr("ICIAR2018_BACH_Challenge/Photos/InSitu/is001.tif", png(21))
        zf.writestr("ICIAR2018_BACH_Challenge/WSI/A01.png", png(22))  # not a class folder
    install(ds, tmp_path, Options(progress=False))
    assert sorted(r["label"] for r in labels(tmp_path, ds.name)) == ["Benign", "InSitu"]

    other = variant("kather2016")
    with zipfile.ZipFile(place(tmp_path, other, "Kather_texture_2016_image_tiles_5000.zip"),
                         "w") as zf:
        zf.writestr("tiles/unknown_class/a.png", png(23))
    from data_scripts.install import InstallError

    with pytest.raises(InstallError, match="no image inside a folder named like a class"):
        install(other, tmp_path, Options(progress=False))
    assert not (tmp_path / other.name).exists()
    assert (tmp_path / ".downloads" / other.name).is_dir(), "verified sources are kept on failure"
