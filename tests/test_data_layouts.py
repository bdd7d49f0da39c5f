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


# ----------------------------------------------------------------------------- more families
def xlsx(path: Path, rows: list[list], sheet: str = "Sheet1", after: str | None = None) -> Path:
    """A minimal .xlsx (inline strings and numbers); `after`: an empty sheet listed first."""
    def cell(ref: str, v) -> str:
        if isinstance(v, (int, float)):
            return f'<c r="{ref}"><v>{v}</v></c>'
        return f'<c r="{ref}" t="inlineStr"><is><t>{v}</t></is></c>'

    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    body = "".join(f'<row r="{i + 1}">' + "".join(cell(f"{chr(65 + j)}{i + 1}", v)
                                                  for j, v in enumerate(r)) + "</row>"
                   for i, r in enumerate(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        other = f'<sheet name="{after}" sheetId="1" r:id="rId1"/>' if after else ""
        zf.writestr("xl/workbook.xml", f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
                    f'{other}<sheet name="{sheet}" sheetId="2" r:id="rId2"/></sheets></workbook>')
        zf.writestr("xl/_rels/workbook.xml.rels",
                    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/'
                    'relationships"><Relationship Id="rId1" Target="worksheets/sheet1.xml"/>'
                    '<Relationship Id="rId2" Target="worksheets/sheet2.xml"/></Relationships>')
        zf.writestr("xl/worksheets/sheet1.xml", f'<worksheet xmlns="{main}"><sheetData/>'
                    '</worksheet>')
        zf.writestr("xl/worksheets/sheet2.xml", f'<worksheet xmlns="{main}"><sheetData>{body}'
                    '</sheetData></worksheet>')
    return path


SICAP_HEAD = ["image_name", "NC", "G3", "G4", "G5", "G4C"]


def sicap_zip(path: Path, tmp: Path, test_rows: list[list]) -> None:
    a, b, c = ("16B0001851_Block_Region_1_0_0_xini_6803_yini_59786.jpg",
               "16B0001851_Block_Region_2_1_0_xini_100_yini_200.jpg",
               "17B0003971_Block_Region_5_0_1_xini_1_yini_2.jpg")
    train = xlsx(tmp / "Train.xlsx", [SICAP_HEAD, [a, 0, 1, 0, 0, 0], [b, 0, 0, 0, 0, 1]])
    test = xlsx(tmp / "Test.xlsx", [SICAP_HEAD, *test_rows])
    fold = xlsx(tmp / "Val2.xlsx", [SICAP_HEAD, [b, 0, 0, 1, 0, 1]])
    with zipfile.ZipFile(path, "w") as zf:
        for i, name in enumerate((a, b, c)):
            zf.writestr(f"SICAPv2/images/{name}", png(30 + i))
        zf.write(train, "SICAPv2/partition/Test/Train.xlsx")
        zf.write(test, "SICAPv2/partition/Test/Test.xlsx")
        zf.write(fold, "SICAPv2/partition/Validation/Val2/Test.xlsx")


def test_sicapv2_official_partition_slide_ids_and_cribriform(tmp_path, variant):
    ds = variant("sicapv2")
    c = "17B0003971_Block_Region_5_0_1_xini_1_yini_2.jpg"
    sicap_zip(place(tmp_path, ds, "SICAPv2.zip"), tmp_path / "x", [[c, 1, 0, 0, 0, 0]])
    install(ds, tmp_path, Options(progress=False))
    rows = {r["path"]: r for r in labels(tmp_path, ds.name)}
    assert sorted(rows) == [
        f"test/NC/{c}", "train/G3/16B0001851_Block_Region_1_0_0_xini_6803_yini_59786.jpg",
        "train/G4/16B0001851_Block_Region_2_1_0_xini_100_yini_200.jpg"]
    g4 = rows["train/G4/16B0001851_Block_Region_2_1_0_xini_100_yini_200.jpg"]
    assert (g4["patient_id"], g4["cribriform"], g4["cv_fold"]) == ("16B0001851", "1", "2")
    assert rows[f"test/NC/{c}"]["patient_id"] == "17B0003971"


def test_sicapv2_a_row_with_two_grades_is_one_clear_error(tmp_path, variant, capsys):
    from data_scripts.cli import add_parser

    ds = variant("sicapv2")
    c = "17B0003971_Block_Region_5_0_1_xini_1_yini_2.jpg"
    sicap_zip(place(tmp_path, ds, "SICAPv2.zip"), tmp_path / "x", [[c, 0, 1, 0, 1, 0]])
    assert run_cli(add_parser, "download", ds.name, "--root", str(tmp_path), "--no-progress") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "partition/Test/Test.xlsx" in err[0] and "2 grades" in err[0]
    assert not (tmp_path / ds.name).exists()


def run_cli(add_parser, *argv) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="ssmamba-lite")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def chaoyang_zip(path: Path, train: list[dict], test: list[dict] | None) -> None:
    import json

    with zipfile.ZipFile(path, "w") as zf:
        for i, name in enumerate(("train/a.JPG", "train/b.JPG", "test/c.JPG")):
            zf.writestr(f"chaoyang-data/{name}", png(40 + i))
        zf.writestr("chaoyang-data/train.json", json.dumps(train))
        if test is not None:
            zf.writestr("chaoyang-data/test.json", json.dumps(test))


def test_chaoyang_json_lists_give_the_official_split(tmp_path, variant):
    ds = variant("chaoyang")
    chaoyang_zip(place(tmp_path, ds, "chaoyang.zip"),
                 [{"name": "train/a.JPG", "label": 0}, {"name": "train/b.JPG", "label": 3}],
                 [{"name": "test/c.JPG", "label": 2}])
    install(ds, tmp_path, Options(progress=False))
    assert sorted((r["split"], r["label"], r["path"]) for r in labels(tmp_path, ds.name)) == [
        ("test", "adenocarcinoma", "test/adenocarcinoma/c.JPG"),
        ("train", "adenoma", "train/adenoma/b.JPG"), ("train", "normal", "train/normal/a.JPG")]


@pytest.mark.parametrize("test_list, message", [
    (None, "no test.json"), ([{"name": "test/c.JPG", "label": 7}], "test.json: test/c.JPG has "
                                                                  "unknown label 7")])
def test_chaoyang_missing_list_or_unknown_label_is_one_line(tmp_path, variant, capsys,
                                                            test_list, message):
    from data_scripts.cli import add_parser

    ds = variant("chaoyang")
    chaoyang_zip(place(tmp_path, ds, "chaoyang.zip"), [{"name": "train/a.JPG", "label": 0}],
                 test_list)
    assert run_cli(add_parser, "download", ds.name, "--root", str(tmp_path), "--no-progress") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# ----------------------------------------------------------------------------- data layout
def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"fake slide")


def layout_of(tmp_path: Path, name: str, capsys) -> tuple[int, list[dict], str]:
    from data_scripts.cli import add_parser

    rc = run_cli(add_parser, "layout", name, "--root", str(tmp_path))
    out = capsys.readouterr()
    rows = labels(tmp_path, name) if rc == 0 else []
    return rc, rows, out.out if rc == 0 else out.err


def test_camelyon16_layout_uses_evaluation_reference_and_copies_nothing(tmp_path, capsys):
    c16 = tmp_path / "camelyon16"
    touch(c16, "training/normal/normal_001.tif", "training/tumor/tumor_001.tif",
          "testing/images/test_001.tif", "testing/images/test_002.tif",
          "masks/tumor_001_mask.tif")
    (c16 / "testing").mkdir(exist_ok=True)
    (c16 / "testing" / "reference.csv").write_text("test_001,Normal\ntest_002,Normal\n")  # not used
    (c16 / "evaluation").mkdir()
    (c16 / "evaluation" / "reference.csv").write_text(
        "test_001,Tumor,Macro,Primary\ntest_002,Normal\n")
    before = sorted(p for p in c16.rglob("*"))
    rc, rows, out = layout_of(tmp_path, "camelyon16", capsys)
    assert rc == 0 and "4 slides" in out and "nothing copied" in out
    assert [(r["slide"], r["label"], r["split"], r["patient_id"]) for r in rows] == [
        ("normal_001", "normal", "train", "normal_001"), ("tumor_001", "tumor", "train", "tumor_001"),
        ("test_001", "tumor", "test", "test_001"), ("test_002", "normal", "test", "test_002")]
    assert list(csv.DictReader((c16 / "labels.csv").open()))[0].keys() >= {"slide", "path"}
    assert sorted(p for p in c16.rglob("*")) == sorted([*before, c16 / "labels.csv"])


def test_camelyon16_flat_bucket_layout_and_bad_inputs(tmp_path, capsys):
    c16 = tmp_path / "camelyon16"
    touch(c16, "images/normal_002.tif", "images/tumor_009.tif", "images/test_003.tif")
    rc, _, err = layout_of(tmp_path, "camelyon16", capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "evaluation/reference.csv: missing" in err and "testing/reference.csv" in err
    (c16 / "evaluation").mkdir()
    (c16 / "evaluation" / "reference.csv").write_text("image,class\ntest_003,Weird\n")
    rc, _, err = layout_of(tmp_path, "camelyon16", capsys)
    assert rc == 1 and "reference.csv: test_003 has unknown class 'Weird'" in err
    (c16 / "evaluation" / "reference.csv").write_text(
        "image,type\nnormal_002,negative\ntumor_009,macro\ntest_003,micro\n")
    rc, rows, _ = layout_of(tmp_path, "camelyon16", capsys)
    assert rc == 0 and {r["slide"]: (r["label"], r["split"]) for r in rows} == {
        "normal_002": ("normal", "train"), "tumor_009": ("tumor", "train"),
        "test_003": ("tumor", "test")}


def test_camelyon17_stage_labels(tmp_path, capsys):
    c17 = tmp_path / "camelyon17"
    touch(c17, "training/center_0/patient_000_node_0.tif", "training/center_1/patient_020_node_4.tif",
          "testing/patient_100_node_0.tif")
    (c17 / "training" / "stage_labels.csv").write_text(
        "patient,stage\npatient_000.zip,pN1\npatient_000_node_0.tif,macro\n"
        "patient_020.zip,pN0\npatient_020_node_4.tif,negative\n")
    rc, rows, _ = layout_of(tmp_path, "camelyon17", capsys)
    assert rc == 0
    assert [(r["slide"], r["label"], r["patient_id"], r["center"], r["pn_stage"], r["split"])
            for r in rows] == [("patient_000_node_0", "macro", "patient_000", "0", "pN1", ""),
                               ("patient_020_node_4", "negative", "patient_020", "1", "pN0", "")]
    (c17 / "training" / "stage_labels.csv").write_text("patient,stage\npatient_000_node_0.tif,big\n")
    rc, _, err = layout_of(tmp_path, "camelyon17", capsys)
    assert rc == 1 and "stage_labels.csv: patient_000_node_0 has unknown class 'big'" in err


def test_panda_train_csv_without_patient_ids(tmp_path, capsys):
    panda = tmp_path / "panda"
    touch(panda, "train_images/0005f7aa.tiff")
    (panda / "train.csv").write_text("image_id,data_provider,isup_grade,gleason_score\n"
                                     "0005f7aa,karolinska,0,0+0\n0018ae58,radboud,4,4+4\n")
    rc, rows, out = layout_of(tmp_path, "panda", capsys)
    assert rc == 0 and "1 listed slides are not (yet)" in out
    assert [(r["slide"], r["label"], r["patient_id"], r["split"], r["data_provider"]) for r in rows] \
        == [("0005f7aa", "isup0", "0005f7aa", "", "karolinska"),
            ("0018ae58", "isup4", "0018ae58", "", "radboud")]
    (panda / "train.csv").write_text("image_id,data_provider,isup_grade,gleason_score\n"
                                     "0005f7aa,karolinska,9,0+0\n")
    rc, _, err = layout_of(tmp_path, "panda", capsys)
    assert rc == 1 and "train.csv: 0005f7aa has unknown isup_grade '9'" in err
    (panda / "train.csv").unlink()
    rc, _, err = layout_of(tmp_path, "panda", capsys)
    assert rc == 1 and f"{panda / 'train.csv'}: missing" in err


def test_bracs_roi_and_wsi_official_folders_and_patients(tmp_path, capsys):
    roi = tmp_path / "bracs" / "BRACS_RoI" / "latest_version"
    (roi / "train" / "0_N").mkdir(parents=True)
    (roi / "train" / "0_N" / "BRACS_1003_N_1.png").write_bytes(png(50))
    (roi / "test" / "6_IC").mkdir(parents=True)
    (roi / "test" / "6_IC" / "BRACS_1491_IC_3.png").write_bytes(png(51))
    xlsx(tmp_path / "bracs" / "BRACS.xlsx", [["WSI Filename", "Patient Id"], ["BRACS_1003", 7],
                                             ["BRACS_1491", 12]], sheet="WSI_Information", after="Summary")
    rc, rows, _ = layout_of(tmp_path, "bracs", capsys)
    assert rc == 0 and [(r["label"], r["split"], r["patient_id"], r["wsi"]) for r in rows] == [
        ("6_IC", "test", "12", "BRACS_1491"), ("0_N", "train", "7", "BRACS_1003")]
    assert rows[1]["path"] == "BRACS_RoI/latest_version/train/0_N/BRACS_1003_N_1.png"
    (roi / "val" / "7_XX").mkdir(parents=True)
    (roi / "val" / "7_XX" / "BRACS_1_XX_1.png").write_bytes(png(52))
    rc, _, err = layout_of(tmp_path, "bracs", capsys)
    assert rc == 1 and "unknown class folder '7_XX'" in err and "BRACS_1_XX_1.png" in err

    wsi = tmp_path / "bracs-wsi"
    touch(wsi, "BRACS_WSI/train/Group_AT/Type_ADH/BRACS_1003.svs",
          "BRACS_WSI/val/Group_MT/Type_DCIS/BRACS_1491.svs")
    rc, rows, _ = layout_of(tmp_path, "bracs-wsi", capsys)
    assert rc == 0 and [(r["slide"], r["label"], r["split"], r["group"]) for r in rows] == [
        ("BRACS_1003", "ADH", "train", "AT"), ("BRACS_1491", "DCIS", "val", "MT")]


def test_layout_needs_the_folder_and_an_entry_with_a_layout(tmp_path, capsys):
    rc, _, err = layout_of(tmp_path, "camelyon16", capsys)
    assert rc == 1 and "camelyon16: missing; first:" in err and "aws s3 sync" in err
    rc, _, err = layout_of(tmp_path, "kather2016", capsys)
    assert rc == 1 and "no in-place layout" in err and "data download kather2016" in err
