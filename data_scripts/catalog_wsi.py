"""Registry entries: whole-slide sets, and tile sets whose access needs a form.

These have no scriptable public archive. Each entry spells out the access steps; where the
files can be laid out once you hold them (MHIST, Chaoyang), `data download` does it from
`<root>/.downloads/<name>/` or from your mirror; synced slides (CAMELYON16) get their
labels.csv from `data layout NAME`, in place.
"""

from __future__ import annotations

from types import MappingProxyType

from data_scripts.registry import NONE_PUBLISHED, Dataset, SourceFile, register

register(Dataset(
    name="camelyon16",
    title="CAMELYON16 sentinel lymph-node whole-slide images",
    kind="wsi",
    task="slide-level binary: metastasis or not",
    classes=("normal", "tumor"),
    licence="CC0 1.0",
    citation=(
        "Ehteshami Bejnordi B, Veta M, Johannes van Diest P, et al. Diagnostic Assessment of Deep "
        "Learning Algorithms for Detection of Lymph Node Metastases in Women With Breast Cancer. "
        "JAMA 2017;318(22):2199-2210. doi:10.1001/jama.2017.14585. Litjens G et al. 1399 H&E-"
        "stained sentinel lymph node sections of breast cancer patients: the CAMELYON dataset. "
        "GigaScience 2018;7(6):giy065."
    ),
    homepage="https://camelyon17.grand-challenge.org/Data/",
    layout="camelyon16",
    access="tool",
    access_steps=(
        "Several hundred GB of pyramidal TIFF. Public mirrors: AWS Registry of Open Data (no account): "
        "aws s3 sync --no-sign-request s3://camelyon-dataset/CAMELYON16/ <root>/camelyon16/ ; "
        "GigaScience database; Google Drive and Baidu Pan (links on the homepage). "
        "Then check the slides with the checksums.md5 file shipped with the data: "
        "cd <root>/camelyon16 && md5sum -c checksums.md5 ; and write labels.csv (slide,label,"
        "patient_id,split; nothing copied): ssmamba-lite data layout camelyon16 --root <root>"
    ),
    checksums="checksums.md5 published with the data (see homepage)",
    magnification="40x (0.243 um/px at level 0, per the PCam README)",
    split="official: 270 training slides (normal_*, tumor_*); test slides test_* (129 in "
          "the public S3 bucket)",
    notes="Lymph-node slides: metastasis (tumor) or not (normal). Test labels: "
          "evaluation/reference.csv in the bucket (not testing/reference.csv). `data layout` "
          "reads training/{normal,tumor}/ and testing/images/, or the flat images/ folder that "
          "public scripts list in the bucket; no patient id is published (patient_id = slide).",
))

register(Dataset(
    name="tcga-nsclc",
    title="TCGA-NSCLC diagnostic slides (TCGA-LUAD + TCGA-LUSC) from the NCI GDC",
    kind="wsi",
    task="slide-level binary: LUAD vs LUSC",
    classes=("LUAD", "LUSC"),
    licence="NIH GDC open access (GDC Data Use Agreement and TCGA publication guidelines)",
    citation=(
        "The Cancer Genome Atlas Research Network. Comprehensive molecular profiling of lung "
        "adenocarcinoma. Nature 2014;511:543-550. The Cancer Genome Atlas Research Network. "
        "Comprehensive genomic characterization of squamous cell lung cancers. Nature "
        "2012;489:519-525."
    ),
    homepage="https://portal.gdc.cancer.gov/",
    options=MappingProxyType({"gdc_projects": ("TCGA-LUAD", "TCGA-LUSC")}),
    access="tool",
    access_steps=(
        "1) ssmamba-lite data gdc-manifest --out <root>/tcga-nsclc/gdc_manifest.txt "
        "(queries the GDC API for open-access SVS diagnostic slides of TCGA-LUAD and TCGA-LUSC; "
        "writes the gdc-client manifest and labels.csv with patient ids). "
        "2) gdc-client download -m <root>/tcga-nsclc/gdc_manifest.txt -d <root>/tcga-nsclc/slides "
        "(the GDC Data Transfer Tool checks each file's md5 from the manifest)."
    ),
    checksums="per-file md5 in the GDC manifest (published by the GDC API)",
    magnification="mostly 20x or 40x; read it from each slide's metadata",
    split="none official; split by patient (labels.csv column patient_id)",
    notes="LUAD = lung adenocarcinoma, LUSC = lung squamous cell carcinoma. gdc-manifest "
          "prints the number of slides and their total size: check your disk first.",
))

register(Dataset(
    name="mhist",
    title="MHIST minimalist histopathology image analysis dataset (colorectal polyps)",
    kind="roi",
    task="binary: hyperplastic polyp vs SSA",
    classes=("HP", "SSA"),
    licence="MHIST Dataset Research Use Agreement (signed through the access form)",
    citation=(
        "Wei J, Suriawinata A, Ren B, Liu X, Lisovsky M, Vaickus L, Brown C, Baker M, "
        "Tomita N, Torresani L, Wei J, Hassanpour S. A Petri Dish for Histopathology Image "
        "Analysis. AIME 2021. arXiv:2101.12355"
    ),
    homepage="https://bmirds.github.io/MHIST/",
    files=(SourceFile(name="images.zip", checksum_source=NONE_PUBLISHED),
           SourceFile(name="annotations.csv", checksum_source=NONE_PUBLISHED)),
    converter="mhist",
    options=MappingProxyType({"images": "images.zip", "annotations": "annotations.csv"}),
    access="form",
    access_steps=(
        "Fill in the access form at https://bmirds.github.io/MHIST/#accessing-dataset; the reply "
        "e-mail links images.zip, annotations.csv and MD5SUMs.txt. Put images.zip and "
        "annotations.csv in <root>/.downloads/mhist/ (or on your SSMAMBA_DATA_MIRROR), run "
        "ssmamba-lite data download mhist, and compare the md5 it prints with MD5SUMs.txt."
    ),
    checksums=NONE_PUBLISHED + " publicly (MD5SUMs.txt comes with the access e-mail); the "
    "first download records its sha256 in the data root",
    split="official: annotations.csv column Partition (train 2,175 / test 977)",
    notes="HP = hyperplastic polyp, SSA = sessile serrated adenoma. 224x224 px PNG; labels "
          "are the majority vote of 7 pathologists.",
))

register(Dataset(
    name="chaoyang",
    title="Chaoyang colorectal histopathology dataset",
    kind="roi",
    task="4-class colorectal (noisy labels)",
    classes=("normal", "serrated", "adenocarcinoma", "adenoma"),
    licence="Chaoyang Dataset licence: non-commercial use, no redistribution (see homepage)",
    citation=(
        "Zhu C, Chen W, Peng T, Wang Y, Jin M. Hard Sample Aware Noise Robust Learning for "
        "Histopathology Image Classification. IEEE Trans Med Imaging, 2021."
    ),
    homepage="https://bupt-ai-cz.github.io/HSA-NRL/",
    files=(SourceFile(name="chaoyang.zip", checksum_source=NONE_PUBLISHED,
                      alternatives=("chaoyang.tar.gz", "chaoyang.tar")),),
    converter="chaoyang",
    access="form",
    access_steps=(
        "Request access on https://bupt-ai-cz.github.io/HSA-NRL/ (form). The release holds "
        "512x512 px patches with train/test lists train.json and test.json (entries name, "
        "label: 0 normal, 1 serrated, 2 adenocarcinoma, 3 adenoma). Its file name is not "
        "confirmed here: save the archive as <root>/.downloads/chaoyang/chaoyang.zip (or "
        "chaoyang.tar.gz) and run ssmamba-lite data download chaoyang. Its licence forbids "
        "redistribution, so keep it local."
    ),
    checksums=NONE_PUBLISHED + " (the first run records its sha256 in the data root)",
    split="official: train 4,021 / test 2,139 patches (per the authors)",
    notes="Classes: normal, serrated, adenocarcinoma, adenoma; labels are known to be noisy.",
))
