"""Registry entries: tile datasets published on project pages or as a torrent (no Zenodo).

None of these publishes a checksum, so each file says `NONE_PUBLISHED` and the first
download records the sha256 it saw in the data root (see `checksums.RecordedChecksums`).
"""

from __future__ import annotations

from data_scripts.registry import NONE_PUBLISHED, Dataset, SourceFile, register

register(Dataset(
    name="breakhis",
    title="BreakHis v1 (Breast Cancer Histopathological Database)",
    kind="roi",
    task="8-class breast tumour subtype",
    classes=("adenosis", "fibroadenoma", "phyllodes_tumor", "tubular_adenoma",
             "ductal_carcinoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma"),
    licence="CC BY 4.0 (as recorded by kaiko-ai/eva; see the database page)",
    citation=(
        "Spanhol FA, Oliveira LS, Petitjean C, Heutte L. A Dataset for Breast Cancer "
        "Histopathological Image Classification. IEEE Trans Biomed Eng 2016;63(7):1455-1462."
    ),
    homepage="https://web.inf.ufpr.br/vri/databases/breast-cancer-histopathological-database-breakhis/",
    files=(SourceFile(
        name="BreaKHis_v1.tar.gz",
        urls=("http://www.inf.ufpr.br/vri/databases/BreaKHis_v1.tar.gz",),
        checksum_source=NONE_PUBLISHED,
    ),),
    converter="breakhis",
    checksums=NONE_PUBLISHED + " (the first download records its sha256 in the data root)",
    magnification="40X, 100X, 200X, 400X (column 'magnification' in labels.csv)",
    split="none official; labels.csv carries patient ids for patient-level splits",
    notes="700x460 px PNG; 4 benign and 4 malignant subtypes at 4 magnifications.",
))

register(Dataset(
    name="idc-breast",
    title="Invasive ductal carcinoma (IDC) breast patches, IDC_regular_ps50_idx5",
    kind="roi",
    task="binary: IDC in a 50x50 px patch",
    classes=("idc_negative", "idc_positive"),
    licence="CC0 1.0 per the Kaggle listing; the original distribution states no licence",
    citation=(
        "Janowczyk A, Madabhushi A. Deep learning for digital pathology image analysis: a "
        "comprehensive tutorial with selected use cases. J Pathol Inform 2016;7:29. "
        "doi:10.4103/2153-3539.186902. Cruz-Roa A et al. Proc SPIE 9041, Medical Imaging 2014: "
        "Digital Pathology, 904103. doi:10.1117/12.2043872"
    ),
    homepage="http://www.andrewjanowczyk.com/use-case-6-invasive-ductal-carcinoma-idc-segmentation/",
    files=(SourceFile(
        name="IDC_regular_ps50_idx5.zip",
        urls=("http://andrewjanowczyk.com/wp-static/IDC_regular_ps50_idx5.zip",
              "http://gleason.case.edu/webdata/jpi-dl-tutorial/IDC_regular_ps50_idx5.zip"),
        checksum_source=NONE_PUBLISHED,
        alternatives=("archive.zip",),
    ),),
    converter="idc",
    access_steps=(
        "Both original URLs may be offline. The same patches are on Kaggle "
        "(https://www.kaggle.com/datasets/paultimothymooney/breast-histopathology-images; a "
        "free account): download its archive.zip, put "
        "it in <root>/.downloads/idc-breast/ and run `ssmamba-lite data download idc-breast`: "
        "its layout (patient folders, also nested under IDC_regular_ps50_idx5/) is read and "
        "duplicate patches are laid out once."
    ),
    checksums=NONE_PUBLISHED + " (the first download records its sha256 in the data root)",
    split="none official; labels.csv carries patient ids (162 slides) for patient-level splits",
    notes="Also distributed on Kaggle as archive.zip (paultimothymooney/"
          "breast-histopathology-images), accepted in place of IDC_regular_ps50_idx5.zip.",
))

register(Dataset(
    name="lc25000",
    title="LC25000 lung and colon histopathological images",
    kind="roi",
    task="5-class lung / colon tissue",
    classes=("colon_aca", "colon_n", "lung_aca", "lung_n", "lung_scc"),
    licence="not stated in the authors' README (tampapath/lung_colon_image_set); research use",
    citation=(
        "Borkowski AA, Bui MM, Thomas LB, Wilson CP, DeLand LA, Mastorides SM. Lung and Colon "
        "Cancer Histopathological Image Dataset (LC25000). arXiv:1912.12142, 2019."
    ),
    homepage="https://github.com/tampapath/lung_colon_image_set",
    files=(SourceFile(name="LC25000.zip", checksum_source=NONE_PUBLISHED),),
    converter="image_folders",
    access="manual",
    access_steps=(
        "LC25000.zip (1.85 GB per the authors) is shared as a torrent: "
        "https://academictorrents.com/details/7a638ed187a6180fd6e464b3666a6ea0499af4af "
        "(also on Kaggle as andrewmvd/lung-and-colon-cancer-histopathological-images). "
        "Put LC25000.zip in <root>/.downloads/lc25000/ (or on your SSMAMBA_DATA_MIRROR), "
        "then run: ssmamba-lite data download lc25000"
    ),
    checksums=NONE_PUBLISHED + " (the first download records its sha256 in the data root)",
    split="none official; split 'all' (768x768 px JPEG, 5,000 per class)",
    notes="Augmented: the 25,000 images were generated from about 1,250 originals (750 lung, "
          "500 colon, per arXiv:1912.12142) by rotations and flips, and no original "
          "id is given. A random split puts augmented copies of one original on both sides and "
          "overstates accuracy; treat results on it as optimistic.",
))
