"""Registry entries: region-of-interest (tile) datasets published on Zenodo.

Every hash below is quoted from where it was published (named beside it). Where no hash is
published, the file says `NONE_PUBLISHED` and the first download records what it saw.
"""

from __future__ import annotations

from types import MappingProxyType

from data_scripts.registry import NONE_PUBLISHED, Dataset, SourceFile, register

_NCT_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
_NCT_CITATION = (
    "Kather JN, Halama N, Marx A. 100,000 histological images of human colorectal cancer and "
    "healthy tissue. Zenodo 2018. doi:10.5281/zenodo.1214456. Kather JN et al. Predicting "
    "survival from colorectal cancer histology slides using deep learning: a retrospective "
    "multicenter study. PLoS Med 2019;16(1):e1002730."
)
_ZENODO_NCT = "https://zenodo.org/records/1214456/files/"

# md5 of CRC-VAL-HE-7K.zip as recorded in kaiko-ai/eva (src/eva/vision/data/datasets/
# classification/crc.py); its size (800,276,929 bytes) as quoted from the Zenodo record in
# several public download scripts.
_CRC_VAL_7K = SourceFile(
    name="CRC-VAL-HE-7K.zip",
    urls=(_ZENODO_NCT + "CRC-VAL-HE-7K.zip?download=1",),
    size=800_276_929,
    md5="2fd1651b4f94ebd818ebf90ad2b6ce06",
    checksum_source="md5 recorded in kaiko-ai/eva crc.py (listed on Zenodo record 1214456)",
    split="test",
)

register(Dataset(
    name="nct-crc-he-100k",
    title="NCT-CRC-HE-100K (train, Macenko-normalised) + CRC-VAL-HE-7K (test)",
    kind="roi",
    task="9-class colorectal tissue",
    classes=_NCT_CLASSES,
    licence="CC BY 4.0",
    citation=_NCT_CITATION,
    homepage="https://zenodo.org/records/1214456",
    files=(
        # md5 and size as listed on Zenodo record 1214456 and quoted in several public download
        # scripts. Note: kaiko-ai/eva's crc.py gives 035777cf... for this file, the md5 that
        # eva's own crc_he.py (and those scripts) give for NCT-CRC-HE-100K-NONORM.zip.
        SourceFile(
            name="NCT-CRC-HE-100K.zip",
            urls=(_ZENODO_NCT + "NCT-CRC-HE-100K.zip?download=1",),
            size=11_690_284_003,
            md5="6fd702d11df6292bc054397ae038a464",
            checksum_source="md5 listed on Zenodo record 1214456 (quoted in public download scripts)",
            split="train",
        ),
        _CRC_VAL_7K,
    ),
    converter="image_folders",
    checksums="published md5 per archive (Zenodo record 1214456)",
    magnification="20x", mpp=0.5,
    split="train = NCT-CRC-HE-100K (86 slides), test = CRC-VAL-HE-7K (50 other patients)",
    notes="224x224 px tiles of 86 slides (train) and 50 patients (test). Patient ids are not published, so split the train set only with care.",
))

register(Dataset(
    name="nct-crc-he-100k-nonorm",
    title="NCT-CRC-HE-100K-NONORM (train, no colour normalisation) + CRC-VAL-HE-7K (test)",
    kind="roi",
    task="9-class colorectal tissue",
    classes=_NCT_CLASSES,
    licence="CC BY 4.0",
    citation=_NCT_CITATION,
    homepage="https://zenodo.org/records/1214456",
    files=(
        # md5 as recorded in kaiko-ai/eva (src/eva/vision/data/datasets/classification/crc_he.py)
        SourceFile(
            name="NCT-CRC-HE-100K-NONORM.zip",
            urls=(_ZENODO_NCT + "NCT-CRC-HE-100K-NONORM.zip?download=1",),
            md5="035777cf327776a71a05c95da6d6325f",
            checksum_source="md5 recorded in kaiko-ai/eva crc_he.py (listed on Zenodo record 1214456)",
            split="train",
        ),
        _CRC_VAL_7K,
    ),
    converter="image_folders",
    checksums="published md5 per archive (Zenodo record 1214456)",
    magnification="20x", mpp=0.5,
    split="train = NCT-CRC-HE-100K-NONORM, test = CRC-VAL-HE-7K",
    notes="Same tiles as nct-crc-he-100k before Macenko normalisation.",
))

# sha256 and size as recorded in tensorflow/datasets
# (tensorflow_datasets/url_checksums/colorectal_histology.txt).
register(Dataset(
    name="kather2016",
    title="Kather 2016 texture tiles (Kather_texture_2016_image_tiles_5000)",
    kind="roi",
    task="8-class colorectal texture",
    classes=("01_TUMOR", "02_STROMA", "03_COMPLEX", "04_LYMPHO", "05_DEBRIS", "06_MUCOSA",
             "07_ADIPOSE", "08_EMPTY"),
    licence="CC BY 4.0",
    citation=(
        "Kather JN, Weis CA, Bianconi F, Melchers SM, Schad LR, Gaiser T, Marx A, Zoellner FG. "
        "Multi-class texture analysis in colorectal cancer histology. Sci Rep 2016;6:27988. "
        "doi:10.1038/srep27988"
    ),
    homepage="https://zenodo.org/records/53169",
    files=(SourceFile(
        name="Kather_texture_2016_image_tiles_5000.zip",
        urls=("https://zenodo.org/record/53169/files/Kather_texture_2016_image_tiles_5000.zip",),
        size=258_098_431,
        sha256="936d0b95ae0f04f1f7b18a2b7e8c55776c3e887d102f645bcee752d1a6626a32",
        checksum_source="sha256 recorded in tensorflow/datasets url_checksums/colorectal_histology.txt",
    ),),
    converter="image_folders",
    checksums="published sha256 (tensorflow-datasets)",
    split="none (5,000 tiles); everything goes to split 'all'",
    notes="150x150 px tiles, original class folder names kept.",
))

# Sizes and sha256 per Zenodo URL as recorded in tensorflow/datasets
# (tensorflow_datasets/url_checksums/patch_camelyon.txt). The PCam README on GitHub lists md5s
# too, but its valid/test md5s are the other way round from torchvision's pcam.py; the sha256
# keyed by the Zenodo URL is unambiguous for the file at that URL, so we verify with it.
_PCAM = "https://zenodo.org/record/2546921/files/camelyonpatch_level_2_split_"
_PCAM_SRC = "sha256 recorded in tensorflow/datasets url_checksums/patch_camelyon.txt"
_PCAM_FILES = (
    ("train_x", 6_421_353_462, "d619e741468a7ab35c7e4a75e6821b7e7e6c9411705d45708f2a0efc8960656c"),
    ("train_y", 21_378, "b74126d2c01b20d3661f9b46765d29cf4e4fba6faba29c8e0d09d406331ab75a"),
    ("valid_x", 805_965_320, "f82ee1670d027b4ec388048d9eabc2186b77c009655dae76d624c0ecb053ccb2"),
    ("valid_y", 3_038, "ce1ae30f08feb468447971cfd0472e7becd0ad96d877c64120c72571439ae48c"),
    ("test_x", 800_875_929, "79174c2201ad521602a5888be8f36ee10875f37403dd3f2086caf2182ef87245"),
    ("test_y", 3_040, "0a522005fccc8bbd04c5a117bfaf81d8da2676f03a29d7499f71d0a0bd6068ef"),
)
register(Dataset(
    name="pcam",
    title="PatchCamelyon (PCam)",
    kind="roi",
    task="binary: tumour in the patch centre",
    classes=("no_tumor", "tumor"),
    licence="CC0 1.0",
    citation=(
        "Veeling BS, Linmans J, Winkens J, Cohen T, Welling M. Rotation Equivariant CNNs for "
        "Digital Pathology. MICCAI 2018. arXiv:1806.03962. Ehteshami Bejnordi B et al. JAMA "
        "2017;318(22):2199-2210. doi:10.1001/jama.2017.14585"
    ),
    homepage="https://github.com/basveeling/pcam",
    files=tuple(
        SourceFile(name=f"camelyonpatch_level_2_split_{part}.h5.gz",
                   urls=(f"{_PCAM}{part}.h5.gz",), size=size, sha256=sha,
                   checksum_source=_PCAM_SRC, split=part.split("_")[0].replace("valid", "val"))
        for part, size, sha in _PCAM_FILES
    ),
    converter="pcam_h5",
    options=MappingProxyType({"splits": {"train": "train", "val": "valid", "test": "test"}}),
    checksums="published sha256 per file (tensorflow-datasets)",
    magnification="10x (40x scans at 0.243 um/px, undersampled; PCam README)",
    split="official: train 262,144 / val 32,768 / test 32,768 patches, no slide in two splits",
    notes="Label: metastatic tissue in the centre 32x32 px of a 96x96 px lymph-node patch. "
          "Stored in gzipped HDF5; converted to PNG class folders.",
))

# md5 per size as recorded in MedMNIST/MedMNIST medmnist/info.py (v3, Zenodo record 10519652).
_MEDMNIST_MD5 = {
    28: "a8b06965200029087d5bd730944a56c1",
    64: "55aa9c1e0525abe5a6b9d8343a507616",
    128: "ac42d08fb904d92c244187169d1fd1d9",
    224: "2c51a510bcdc9cf8ddb2af93af1eadec",
}
_PATHMNIST_CLASSES = ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth_muscle",
                      "normal_colon_mucosa", "cancer_associated_stroma",
                      "colorectal_adenocarcinoma_epithelium")
for _px, _md5 in _MEDMNIST_MD5.items():
    _file = "pathmnist.npz" if _px == 28 else f"pathmnist_{_px}.npz"
    register(Dataset(
        name="pathmnist" if _px == 28 else f"pathmnist-{_px}",
        title=f"MedMNIST PathMNIST, {_px}x{_px} px",
        kind="roi",
        task="9-class colorectal tissue (resized NCT)",
        classes=_PATHMNIST_CLASSES,
        licence="CC BY 4.0",
        citation=(
            "Yang J, Shi R, Wei D, Liu Z, Zhao L, Ke B, Pfister H, Ni B. MedMNIST v2 - A large-scale "
            "lightweight benchmark for 2D and 3D biomedical image classification. Sci Data "
            "2023;10:41. Source images: " + _NCT_CITATION
        ),
        homepage="https://medmnist.com",
        files=(SourceFile(
            name=_file,
            urls=(f"https://zenodo.org/records/10519652/files/{_file}?download=1",),
            md5=_md5,
            checksum_source="md5 recorded in MedMNIST/MedMNIST medmnist/info.py",
        ),),
        converter="medmnist_npz",
        checksums="published md5 (medmnist info.py)",
        split="official: train 89,996 / val 10,004 (from NCT-CRC-HE-100K) / test 7,180 (CRC-VAL-HE-7K)",
        notes="Arrays in one npz; converted to PNG class folders.",
    ))

register(Dataset(
    name="bach",
    title="BACH (ICIAR 2018) microscopy photos",
    kind="roi",
    task="4-class breast histology",
    classes=("Benign", "InSitu", "Invasive", "Normal"),
    licence="CC BY-NC-ND 4.0",
    citation=(
        "Aresta G, Araujo T, Kwok S, et al. BACH: Grand challenge on breast cancer histology "
        "images. Med Image Anal 2019;56:122-139. doi:10.1016/j.media.2019.05.010"
    ),
    homepage="https://zenodo.org/records/3632035",
    files=(SourceFile(
        name="ICIAR2018_BACH_Challenge.zip",
        urls=("https://zenodo.org/records/3632035/files/ICIAR2018_BACH_Challenge.zip",),
        # No hash published by the authors or Zenodo's record page; an md5 once carried by
        # kaiko-ai/eva's loader was later removed there, so none is trusted: a wrong value
        # would delete a good 10.4 GB download and reject a copy placed by hand.
        checksum_source=NONE_PUBLISHED,
    ),),
    converter="image_folders",
    checksums=NONE_PUBLISHED + " (the first download records its sha256 in the data root)",
    mpp=0.42,
    split="none for the 400 labelled photos (the challenge test set is unlabelled); split 'all'",
    notes="2048x1536 px TIFF photos; the archive's WSI part is not laid out.",
))
