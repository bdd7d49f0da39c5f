"""The dataset registry: what each public pathology dataset is, where it lives, how to check it.

One `Dataset` per entry, each made of `SourceFile`s (the archives as published). Every
checksum here is a *published* one, with a comment or `checksum_source` saying where it was
published; where none is published the entry says `NONE_PUBLISHED` and the first download
records the sha256 it saw in the data root (trust on first use, see `checksums.py`).

The entries themselves live in `catalog_roi.py` (tile sets on Zenodo), `catalog_roi_web.py`
(tile sets on project pages), `catalog_wsi.py` (whole-slide sets and sets behind a form) and
`catalog_families.py` (more of the SSMamba paper's families: SICAPv2, BRACS, CAMELYON17,
TCGA-RCC, TCGA-BRCA, PANDA).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

NONE_PUBLISHED = "none published"

# How a dataset reaches the disk:
#   direct  - public URLs; `data download` fetches, verifies and lays it out
#   manual  - no scriptable public URL; place the files (or use a mirror), then `data download`
#   form    - behind an access form or agreement; the entry documents the steps
#   tool    - fetched with the provider's own tool (aws, gdc-client); the entry documents it
ACCESS_KINDS = ("direct", "manual", "form", "tool")


@dataclass(frozen=True)
class SourceFile:
    """One published file: its name on disk (and on a mirror), where to get it, how to check it."""

    name: str
    urls: tuple[str, ...] = ()
    size: int | None = None  # bytes, as published; None where no size is published
    md5: str | None = None
    sha256: str | None = None
    checksum_source: str = NONE_PUBLISHED  # where the hash above was published
    split: str | None = None  # the split this file feeds, where the archive is split-specific
    # other names a copy placed by hand may carry (another distribution of the same images,
    # e.g. Kaggle's archive.zip); its sha256 is recorded on first use, as for unpublished ones
    alternatives: tuple[str, ...] = ()

    @property
    def has_checksum(self) -> bool:
        return bool(self.md5 or self.sha256)

    def expected(self) -> tuple[str, str] | None:
        """The strongest published hash as (algorithm, hex digest), or None."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.md5:
            return "md5", self.md5.lower()
        return None


@dataclass(frozen=True)
class Dataset:
    """A registry entry. `converter` names a function in `convert.CONVERTERS` (None: no layout)."""

    name: str
    title: str
    kind: str  # "roi" (tiles / crops) or "wsi" (whole slides)
    task: str
    classes: tuple[str, ...]
    licence: str
    citation: str
    homepage: str
    files: tuple[SourceFile, ...] = ()
    converter: str | None = None
    # names a function in `layouts.LAYOUTS`: `data layout NAME` writes labels.csv over files
    # already in <root>/<name>/ (slides, or tile trees too large to pack), copying nothing
    layout: str | None = None
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    access: str = "direct"
    access_steps: str = ""
    checksums: str = ""  # in words: where this dataset's checksums come from
    magnification: str | None = None
    mpp: float | None = None  # micrometres per pixel, where published
    split: str = ""  # the official split, in words
    notes: str = ""

    @property
    def total_size(self) -> int | None:
        """Sum of the published file sizes, or None when any size is unknown."""
        sizes = [f.size for f in self.files]
        if not sizes or any(s is None for s in sizes):
            return None
        return sum(sizes)  # type: ignore[arg-type]

    def checksum_status(self) -> str:
        """'yes' (every file has a published hash), 'partial', 'no', or 'n/a' (no files)."""
        if not self.files:
            return "n/a"
        known = sum(f.has_checksum for f in self.files)
        return "yes" if known == len(self.files) else ("no" if known == 0 else "partial")


_REGISTRY: dict[str, Dataset] = {}
_CATALOGS_LOADED = False


def register(ds: Dataset, *, replace: bool = False) -> Dataset:
    """Add an entry (the catalogs do this at import; tests and local setups may add more)."""
    if ds.access not in ACCESS_KINDS:
        raise ValueError(f"dataset {ds.name!r}: access must be one of {ACCESS_KINDS}, got {ds.access!r}")
    if ds.name in _REGISTRY and not replace:
        raise ValueError(f"dataset {ds.name!r} is already registered")
    _REGISTRY[ds.name] = ds
    return ds


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_catalogs() -> None:
    global _CATALOGS_LOADED
    if not _CATALOGS_LOADED:
        _CATALOGS_LOADED = True
        import importlib

        for module in ("catalog_roi", "catalog_roi_web", "catalog_wsi", "catalog_families"):
            importlib.import_module(f"data_scripts.{module}")  # importing registers the entries


def names() -> list[str]:
    """Registered dataset names, in catalog order."""
    _load_catalogs()
    return list(_REGISTRY)


def all_datasets() -> list[Dataset]:
    _load_catalogs()
    return list(_REGISTRY.values())


def get(name: str) -> Dataset:
    """The entry called `name`; a KeyError that lists the known names otherwise."""
    _load_catalogs()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise KeyError(f"unknown dataset {name!r}; known: {known}") from None


def human_size(n: int | None) -> str:
    """Bytes as a short human string (powers of 1000, as download pages use); '?' if unknown."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"
