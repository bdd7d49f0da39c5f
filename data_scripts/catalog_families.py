"""Registry entries: more of the SSMamba paper's dataset families (prostate, breast, kidney).

Tile sets placed by hand (SICAPv2) are laid out by `data download`; sets too large to pack or
fetched with the provider's tool (BRACS, CAMELYON17, PANDA) are read in place by
`data layout NAME`; TCGA sets go through `data gdc-manifest --dataset NAME`.

Sources for the facts below, besides each homepage: kaiko-ai/eva's dataset pages
(docs/datasets/bracs.md, panda.md, camelyon16.md) for BRACS' licence, split sizes and 0.25 um/px,
PANDA's licence, file layout and 10,616 slides; public loaders of SICAPv2 (partition/Test/
{Train,Test}.xlsx with image_name, NC, G3, G4, G5, G4C) and of BRACS (BRACS.xlsx sheet
WSI_Information with 'WSI Filename' and 'Patient Id'; RoI names BRACS_<wsi>_<class>_<k>.png);
public CAMELYON17 loaders for stage_labels.csv (patient,stage; patient_000_node_0.tif rows);
GDC facet queries for TCGA-BRCA's primary_diagnosis values. What no source confirmed says
"not confirmed" in the entry.
"""

from __future__ import annotations

from types import MappingProxyType

from data_scripts.registry import NONE_PUBLISHED, Dataset, SourceFile, register

_BRACS_CITATION = (
    "Brancati N, Anniciello AM, Pati P, Riccio D, Scognamiglio G, Jaume G, De Pietro G, "
    "Di Bonito M, Foncubierta A, Botti G, Gabrani M, Feroce F, Frucci M. BRACS: A Dataset for "
    "BReAst Carcinoma Subtyping in H&E Histology Images. Database 2022;2022:baac093. "
    "doi:10.1093/database/baac093"
)
_BRACS_STEPS = (
    "Download from https://www.bracs.icar.cnr.it/download/ (FTP histoimage.na.icar.cnr.it; "
    "whether a registration is needed is not confirmed here). Put the {what} tree under "
    "<root>/{name}/ as published ({tree}), with BRACS.xlsx beside it for patient ids, then run "
    "ssmamba-lite data layout {name} --root <root> (writes labels.csv; copies nothing)."
)

register(Dataset(
    name="sicapv2",
    title="SICAPv2 prostate biopsy patches with Gleason patterns",
    kind="roi",
    task="4-class Gleason pattern: non-cancerous, G3, G4, G5",
    classes=("NC", "G3", "G4", "G5"),
    licence="CC BY 4.0 (Mendeley Data listing, as recorded by public loaders; not confirmed here)",
    citation=(
        "Silva-Rodriguez J, Colomer A, Sales MA, Molina R, Naranjo V. Going deeper through the "
        "Gleason scoring scale: An automatic end-to-end system for histology prostate grading "
        "and cribriform pattern detection. Comput Methods Programs Biomed 2020;195:105637. "
        "Data: doi:10.17632/9xxm58dvs3.1"
    ),
    homepage="https://data.mendeley.com/datasets/9xxm58dvs3/1",
    files=(SourceFile(name="SICAPv2.zip", checksum_source=NONE_PUBLISHED),),
    converter="sicapv2",
    access="manual",
    access_steps=(
        "Download the archive from https://data.mendeley.com/datasets/9xxm58dvs3/1 (its file "
        "name and size are not confirmed here; it holds SICAPv2/images/ and partition/), save "
        "it as <root>/.downloads/sicapv2/SICAPv2.zip and run: ssmamba-lite data download sicapv2"
    ),
    checksums=NONE_PUBLISHED + " (the first run records its sha256 in the data root)",
    magnification="10x, 512x512 px patches (per public READMEs; not confirmed here)",
    split="official: partition/Test/Train.xlsx and Test.xlsx (train/test); the four "
          "cross-validation folds of the training part (partition/Validation/Val1-4) are the "
          "labels.csv column cv_fold",
    notes="Labels are one-hot columns NC, G3, G4, G5 and G4C (cribriform, laid out as G4; "
          "column cribriform). patient_id is the slide (biopsy) id that starts each image name; "
          "the slide-to-patient map (wsi_labels.xlsx) is not read here.",
))

_BRACS = dict(licence="CC BY-NC 4.0 (as recorded by kaiko-ai/eva; see the BRACS site)",
              citation=_BRACS_CITATION, homepage="https://www.bracs.icar.cnr.it/")

register(Dataset(
    name="bracs",
    title="BRACS RoI: breast carcinoma subtyping regions of interest",
    kind="roi",
    task="7-class breast lesion subtype (RoI)",
    classes=("0_N", "1_PB", "2_UDH", "3_FEA", "4_ADH", "5_DCIS", "6_IC"),
    **_BRACS,
    layout="bracs_roi",
    access="manual",
    access_steps=_BRACS_STEPS.format(what="RoI", name="bracs",
                                     tree="BRACS_RoI/latest_version/{train,val,test}/<class>/"),
    checksums=NONE_PUBLISHED + " (the RoIs are read in place; nothing is downloaded here)",
    magnification="40x (0.25 um/px, Aperio AT2, per kaiko-ai/eva)",
    mpp=0.25,
    split="official: train 3,657 / val 312 / test 570 RoIs (folders train/, val/, test/)",
    notes="N normal, PB pathological benign, UDH usual ductal hyperplasia, FEA flat epithelial "
          "atypia, ADH atypical ductal hyperplasia, DCIS ductal carcinoma in situ, IC invasive "
          "carcinoma. RoI sizes vary. patient_id from BRACS.xlsx when present, else the WSI id "
          "in the name (BRACS_<n>); previous_version/ is skipped (other class order).",
))

register(Dataset(
    name="bracs-wsi",
    title="BRACS whole-slide images",
    kind="wsi",
    task="slide-level 7-class breast lesion subtype",
    classes=("N", "PB", "UDH", "FEA", "ADH", "DCIS", "IC"),
    **_BRACS,
    layout="bracs_wsi",
    access="manual",
    access_steps=_BRACS_STEPS.format(what="WSI", name="bracs-wsi",
                                     tree="BRACS_WSI/{train,val,test}/Group_*/Type_*/*.svs"),
    checksums=NONE_PUBLISHED,
    magnification="40x (0.25 um/px, per kaiko-ai/eva)",
    mpp=0.25,
    split="official: train/, val/, test/ folders (slide counts not confirmed here)",
    notes="547 WSIs of 189 patients (per kaiko-ai/eva). The folder names Group_BT/AT/MT "
          "(benign/atypical/malignant, column group) and Type_<class> are those of public "
          "loaders, not confirmed against the site here.",
))

register(Dataset(
    name="camelyon17",
    title="CAMELYON17 sentinel lymph-node whole-slide images (training centres)",
    kind="wsi",
    task="slide-level 4-class metastasis size: negative, ITC, micro, macro",
    classes=("negative", "itc", "micro", "macro"),
    licence="CC0 1.0",
    citation=(
        "Bandi P, Geessink O, Manson Q, et al. From Detection of Individual Metastases to "
        "Classification of Lymph Node Status at the Patient Level: The CAMELYON17 Challenge. "
        "IEEE Trans Med Imaging 2019;38(2):550-560. Litjens G et al. GigaScience "
        "2018;7(6):giy065."
    ),
    homepage="https://camelyon17.grand-challenge.org/Data/",
    layout="camelyon17",
    access="tool",
    access_steps=(
        "aws s3 sync --no-sign-request s3://camelyon-dataset/CAMELYON17/ <root>/camelyon17/ "
        "(the bucket prefix is assumed from CAMELYON16's; not confirmed here) or the GigaScience "
        "database (training/center_<k>/patient_<n>.zip: unzip each in place). Then: "
        "ssmamba-lite data layout camelyon17 --root <root>"
    ),
    checksums="none published per slide here (the GigaScience copy's checksums not confirmed)",
    magnification="40x or 20x by centre (not confirmed here); read each slide's metadata",
    split="none official with public labels: only the training centres' 500 slides (100 "
          "patients) are labelled in stage_labels.csv; split empty, the MIL code draws a "
          "patient-grouped one",
    notes="stage_labels.csv rows: patient_<n>_node_<k>.tif with negative/itc/micro/macro, and "
          "patient_<n>.zip with the pN stage (column pn_stage). Its place in the bucket is not "
          "confirmed: the layout takes the first stage_labels.csv under the folder.",
))

register(Dataset(
    name="panda",
    title="PANDA: Prostate cANcer graDe Assessment challenge biopsies (Kaggle)",
    kind="wsi",
    task="slide-level ISUP grade 0-5",
    classes=("isup0", "isup1", "isup2", "isup3", "isup4", "isup5"),
    licence="CC BY-SA-NC 4.0 per kaiko-ai/eva; use is bound by the Kaggle competition rules",
    citation=(
        "Bulten W, Kartasalo K, Chen PHC, et al. Artificial intelligence for diagnosis and "
        "Gleason grading of prostate cancer: the PANDA challenge. Nat Med 2022;28:154-163."
    ),
    homepage="https://www.kaggle.com/competitions/prostate-cancer-grade-assessment",
    layout="panda",
    access="form",
    access_steps=(
        "Sign in to Kaggle and accept the competition rules, then: kaggle competitions download "
        "-c prostate-cancer-grade-assessment -p <root>/.downloads/panda and unzip it into "
        "<root>/panda/ (train.csv, train_images/<image_id>.tiff; about 347 GB per kaiko-ai/eva). "
        "Then: ssmamba-lite data layout panda --root <root>"
    ),
    checksums=NONE_PUBLISHED,
    magnification="level 0 about 0.5 um/px (20x) per kaiko-ai/eva; read each slide's metadata",
    split="none official with public labels (Kaggle's test set is hidden); split empty",
    notes="10,616 training biopsies from Radboud and Karolinska (column data_provider; "
          "gleason_score kept). No patient id is given: each biopsy is its own group "
          "(patient_id = image_id), so biopsies of one patient may fall on both sides of a split.",
))

_TCGA = "The Cancer Genome Atlas Research Network. "

register(Dataset(
    name="tcga-rcc",
    title="TCGA-RCC diagnostic slides (TCGA-KIRC + TCGA-KIRP + TCGA-KICH) from the NCI GDC",
    kind="wsi",
    task="slide-level 3-class renal cell carcinoma subtype",
    classes=("KICH", "KIRC", "KIRP"),
    licence="NIH GDC open access (GDC Data Use Agreement and TCGA publication guidelines)",
    citation=(
        _TCGA + "Comprehensive molecular characterization of clear cell renal cell carcinoma. "
        "Nature 2013;499:43-49. " + _TCGA + "Comprehensive Molecular Characterization of "
        "Papillary Renal-Cell Carcinoma. N Engl J Med 2016;374:135-145. Davis CF et al. The "
        "somatic genomic landscape of chromophobe renal cell carcinoma. Cancer Cell "
        "2014;26:319-330."
    ),
    homepage="https://portal.gdc.cancer.gov/",
    options=MappingProxyType({"gdc_projects": ("TCGA-KIRC", "TCGA-KIRP", "TCGA-KICH")}),
    access="tool",
    access_steps=(
        "1) ssmamba-lite data gdc-manifest --dataset tcga-rcc --out <root>/tcga-rcc/"
        "gdc_manifest.txt (label = project: KIRC clear cell, KIRP papillary, KICH chromophobe). "
        "2) gdc-client download -m <root>/tcga-rcc/gdc_manifest.txt -d <root>/tcga-rcc/slides"
    ),
    checksums="per-file md5 in the GDC manifest (published by the GDC API)",
    magnification="mostly 20x or 40x; read it from each slide's metadata",
    split="none official; split by patient (labels.csv column patient_id)",
))

register(Dataset(
    name="tcga-brca",
    title="TCGA-BRCA diagnostic slides, invasive ductal vs lobular carcinoma, from the NCI GDC",
    kind="wsi",
    task="slide-level binary: IDC vs ILC",
    classes=("IDC", "ILC"),
    licence="NIH GDC open access (GDC Data Use Agreement and TCGA publication guidelines)",
    citation=(
        _TCGA + "Comprehensive molecular portraits of human breast tumours. Nature "
        "2012;490:61-70. Ciriello G et al. Comprehensive Molecular Portraits of Invasive Lobular "
        "Breast Cancer. Cell 2015;163:506-519."
    ),
    homepage="https://portal.gdc.cancer.gov/",
    options=MappingProxyType({
        "gdc_projects": ("TCGA-BRCA",),
        "gdc_diagnoses": MappingProxyType({"Infiltrating duct carcinoma, NOS": "IDC",
                                           "Lobular carcinoma, NOS": "ILC"}),
    }),
    access="tool",
    access_steps=(
        "1) ssmamba-lite data gdc-manifest --dataset tcga-brca --out <root>/tcga-brca/"
        "gdc_manifest.txt (label from the GDC clinical field diagnoses.primary_diagnosis; "
        "the slides of other diagnoses are left out and counted). "
        "2) gdc-client download -m <root>/tcga-brca/gdc_manifest.txt -d <root>/tcga-brca/slides"
    ),
    checksums="per-file md5 in the GDC manifest (published by the GDC API)",
    magnification="mostly 20x or 40x; read it from each slide's metadata",
    split="none official; split by patient (labels.csv column patient_id)",
    notes="IDC = 'Infiltrating duct carcinoma, NOS', ILC = 'Lobular carcinoma, NOS' (GDC "
          "primary_diagnosis values). Mixed ductal/lobular, other types and cases with several "
          "diagnoses are left out; the summary counts them per diagnosis.",
))
