"""The datasets page of the documentation, docs/datasets.md, rendered from the registry.

    ssmamba-lite data list --page docs/datasets.md      writes it
    ssmamba-lite data list --markdown                   prints the registry's table alone

The page is never edited by hand: its prose is `HEADER` below, its table and its entries come
from the catalogs. tests/test_data_scripts.py fails while the committed page differs from what
`render_page()` returns, so a changed entry means: regenerate the page with the command above.
Like the rest of data_scripts, this module imports neither torch nor the library.
"""

from __future__ import annotations

import re

from data_scripts import registry

GENERATED = ("<!-- Generated from the registry (data_scripts/catalog_*.py) by "
             "`ssmamba-lite data list --page docs/datasets.md`: do not edit by hand. -->")

HEADER = """\
# Datasets

`data_scripts/` fetches public pathology datasets (tile sets and whole slides), checks them
against their published checksums and lays them out the way `ssmamba_lite` reads them. It
needs the `data` extra (pooch, h5py), which `make test` installs. One command per dataset:

```bash
export SSMAMBA_DATA=~/data/pathology              # default data root (or pass --root DIR)
.venv/bin/ssmamba-lite data list                  # the registry as a table
.venv/bin/ssmamba-lite data info pcam             # licence, citation, split, files, hashes
.venv/bin/ssmamba-lite data download kather2016   # download -> verify -> lay out
.venv/bin/ssmamba-lite data verify kather2016     # re-check every file of the layout
```

What lands on disk:

```
$SSMAMBA_DATA/<dataset>/<split>/<class>/<image>   split is 'all' where there is no official one
$SSMAMBA_DATA/<dataset>/labels.csv                path,label,split[,patient_id,...]
$SSMAMBA_DATA/<dataset>/DATASET.json              sources, their hashes, licence, citation
$SSMAMBA_DATA/<dataset>/SHA256SUMS                every file above (`sha256sum -c` works too)
```

- Every download goes to a part file (`.<name>.part` beside it) and is moved into place only
  after its size and hash match; the dataset folder appears in one rename of a finished
  staging folder. An interrupted or corrupted download leaves no half dataset; a second
  `download` only verifies.
- Large files survive real networks: a broken transfer keeps its bytes, and the next try (and
  the next run, after Ctrl-C or a crash) asks only for the rest (HTTP `Range`, with `If-Range`
  so a file changed on the server restarts from byte 0); the progress bar starts at the bytes
  already there. HTTP 429 and 5xx wait (the server's `Retry-After`, else a doubling pause)
  and retry (`--retries`); other 4xx stop that URL. `--connections 4` fetches files of
  64 MiB or more in 4 byte ranges at once, each resumable (for servers that limit speed per
  connection). A checksum mismatch deletes the part file and stops with the file name and
  the expected and actual hashes. Source archives are deleted after the layout unless
  `--keep-archives` (they then live in `$SSMAMBA_DATA/.downloads/<dataset>/`).
- Checksums are the published ones (each entry names its source: Zenodo, tensorflow-datasets,
  MedMNIST, kaiko-ai/eva). Where none is published the table says `no`; the first download
  records the sha256 it saw in `$SSMAMBA_DATA/recorded_sha256.json` and later downloads must
  match it.
- A local copy instead of the internet: `SSMAMBA_DATA_MIRROR=https://mirror.example.org/pathology`
  makes every download `<mirror>/<file name>` (same file names as the published ones), and a
  file you already hold can be put in `$SSMAMBA_DATA/.downloads/<dataset>/` before `download`.
- Facts worth knowing before a long download: BACH's archive has no published hash (one
  that circulated was withdrawn by its source), so its sha256 is recorded on first use; both
  original IDC URLs may be offline, and Kaggle's `archive.zip` of the same patches, placed in
  `.downloads/idc-breast/`, is read instead (duplicates laid out once); LC25000's 25,000
  images are augmentations of about 1,250 originals with no original id, so any split of it
  leaks and overstates accuracy; CAMELYON16's test labels are `evaluation/reference.csv`
  (129 test slides in the public bucket). `data info NAME` prints each entry's notes.
- Behind a form or too large to script (`access` other than `direct`): `data info NAME` prints
  the steps. For TCGA-NSCLC, `ssmamba-lite data gdc-manifest --out DIR/gdc_manifest.txt`
  writes a GDC Data Transfer Tool manifest (md5 per slide) and a labels.csv with patient ids;
  `--dataset tcga-rcc` (label = KIRC/KIRP/KICH) and `--dataset tcga-brca` (IDC vs ILC from
  the GDC field `diagnoses.primary_diagnosis`; other diagnoses left out and counted) likewise.
- Sets already on disk (synced slides, BRACS' RoI tree): `ssmamba-lite data layout NAME`
  reads `$SSMAMBA_DATA/NAME/` as published and writes its `labels.csv` in place, copying
  nothing (`slide,label,patient_id,split` for `mil train`; camelyon16, camelyon17, panda,
  bracs, bracs-wsi). CAMELYON16's test labels come from `evaluation/reference.csv`.
- A new dataset is an entry in one of the catalogs (`data_scripts/catalog_*.py`); then
  `ssmamba-lite data list --page docs/datasets.md` rewrites this page.

## The registry

Size as published, `?` where no size is published. checksum: yes = every file has a published
checksum; no = none published (the first download records its sha256); n/a = no file fetched
here. access: direct = `data download NAME` fetches it; manual/form/tool = the entry's access
steps below (also printed by `data info NAME`).
"""

_URL = re.compile(r"https?://\S+")


def markdown_table(datasets: list[registry.Dataset], links: bool = False) -> str:
    """The registry as a Markdown table; with `links`, every name links to its entry below."""
    lines = ["| name | kind | task | classes | size | licence | checksum | access |",
             "|---|---|---|---|---|---|---|---|"]
    for ds in datasets:
        name = f"[`{ds.name}`](#{ds.name})" if links else f"`{ds.name}`"
        cells = (name, ds.kind, ds.task, str(len(ds.classes)),
                 registry.human_size(ds.total_size), ds.licence, ds.checksum_status(), ds.access)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def _escape(text: str) -> str:
    """Free text as Markdown that shows it as written: code spans and URLs kept, and `*`, `_`,
    `<` outside them escaped (an entry's `<root>` is a placeholder, not an HTML tag)."""
    out = []
    for i, part in enumerate(text.split("`")):
        if i % 2:
            out.append(f"`{part}`")
            continue
        pieces = []
        last = 0
        for url in _URL.finditer(part):
            pieces.append(_escape_plain(part[last:url.start()]))
            pieces.append(url.group(0))
            last = url.end()
        pieces.append(_escape_plain(part[last:]))
        out.append("".join(pieces))
    return "".join(out)


def _escape_plain(text: str) -> str:
    """Markdown's emphasis and tag characters escaped in text that holds no code and no URL."""
    text = text.replace("\\", "\\\\")
    text = text.replace("*", "\\*")
    text = re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", text)   # an underscore inside a word is no emphasis
    return text.replace("<", "&lt;")


def _file_line(f: registry.SourceFile) -> str:
    """One published file: name, size, its hash and where the hash was published."""
    expected = f.expected()
    digest = f"{expected[0]} `{expected[1]}`" if expected else "no published hash"
    split = f", feeds `{f.split}`" if f.split else ""
    source = f"; source: {_escape(f.checksum_source)}" if expected else ""
    return f"  - `{f.name}`: {registry.human_size(f.size)}{split}; {digest}{source}"


def entry_section(ds: registry.Dataset) -> str:
    """One registry entry as a section of the page (what `data info NAME` prints)."""
    mpp = f"{ds.mpp} µm/px" if ds.mpp else "µm/px not recorded"
    fields = [
        ("task", f"{_escape(ds.task)} ({len(ds.classes)} classes: "
                 f"{', '.join(f'`{c}`' for c in ds.classes)})"),
        ("kind", "whole slides (wsi)" if ds.kind == "wsi" else "tiles or crops (roi)"),
        ("licence", _escape(ds.licence)),
        ("homepage", ds.homepage),
        ("official split", _escape(ds.split) if ds.split else ""),
        ("magnification", f"{_escape(ds.magnification or 'not recorded')}; {mpp}"),
        ("access", f"{ds.access}: {_escape(ds.access_steps)}" if ds.access_steps else ds.access),
        ("checksums", _escape(ds.checksums)),
        ("notes", _escape(ds.notes)),
        ("cite", _escape(ds.citation)),
    ]
    lines = [f"### {ds.name}", "", f"**{_escape(ds.title)}**", ""]
    lines += [f"- {key}: {value}" for key, value in fields if value]
    if ds.files:
        lines.append("- files:")
        lines += [_file_line(f) for f in ds.files]
    return "\n".join(lines)


def render_page(datasets: list[registry.Dataset] | None = None) -> str:
    """docs/datasets.md: the prose of `HEADER`, the registry's table, then every entry."""
    datasets = registry.all_datasets() if datasets is None else datasets
    parts = [GENERATED, HEADER + "\n" + markdown_table(datasets, links=True), "## Every entry"]
    parts += [entry_section(ds) for ds in datasets]
    return "\n\n".join(parts) + "\n"
