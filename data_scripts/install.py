"""Download -> verify -> convert -> move into place, and the `verify` check of what is there.

Disk layout under a data root (`--root`, or $SSMAMBA_DATA):

    <root>/<dataset>/<split>/<class>/<image>   the toolkit layout (split 'all' if none official)
    <root>/<dataset>/labels.csv                path,label,split[,patient_id,...] for every image
    <root>/<dataset>/DATASET.json              provenance: sources, their hashes, licence, citation
    <root>/<dataset>/SHA256SUMS                sha256 of every file above (`sha256sum -c` works)
    <root>/.downloads/<dataset>/<file>         verified source files (kept with --keep-archives)
    <root>/recorded_sha256.json                first-download sha256 of files with none published

The dataset folder appears in one `os.replace` of a finished staging folder, so an
interrupted or failed run never leaves a half dataset behind. A second run finds the
finished folder and only verifies it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from data_scripts import fetch
from data_scripts.checksums import (
    TREE_SUMS,
    ChecksumError,
    RecordedChecksums,
    check,
    file_hashes,
    verify_tree,
    write_tree_sums,
)
from data_scripts.convert import CONVERTERS
from data_scripts.registry import Dataset, SourceFile

ROOT_ENV = "SSMAMBA_DATA"
DOWNLOADS = ".downloads"
PROVENANCE = "DATASET.json"
LABELS = "labels.csv"


class InstallError(Exception):
    """A dataset cannot be fetched or laid out; the message says what and how to fix it."""


@dataclass
class Options:
    retries: int = 3
    progress: bool = True
    keep_archives: bool = False
    timeout: float = 60.0
    backoff: float = 2.0
    connections: int = 1


def default_root(root: str | os.PathLike | None) -> Path:
    """`root` if given, else $SSMAMBA_DATA; a InstallError when neither is set."""
    value = root or os.environ.get(ROOT_ENV)
    if not value:
        raise InstallError(f"no data root: pass --root DIR or set {ROOT_ENV}")
    return Path(value).expanduser()


def is_complete(target: Path) -> bool:
    return (target / TREE_SUMS).is_file() and (target / PROVENANCE).is_file()


def _expected(ds: Dataset, src: SourceFile, recorded: RecordedChecksums) -> tuple[str, str] | None:
    exp = src.expected()
    if exp is None:
        rec = recorded.get(ds.name, src.name)
        if rec:
            exp = ("sha256", rec["sha256"])
    return exp


def obtain(ds: Dataset, src: SourceFile, root: Path, opts: Options) -> tuple[Path, dict]:
    """A verified local copy of `src` in <root>/.downloads/<dataset>/, and its hashes."""
    cache = root / DOWNLOADS / ds.name
    dest = cache / src.name
    recorded = RecordedChecksums(root)
    other = next((cache / a for a in src.alternatives if (cache / a).is_file()), None)
    if not dest.exists() and other is not None:           # another distribution, by hand
        print(f"{ds.name}: using {other.name} in place of {src.name}")
        src = replace(src, name=other.name, md5=None, sha256=None)
        dest = other
    expected = _expected(ds, src, recorded)
    if dest.exists():  # kept from an earlier run, or placed by hand
        if expected is None:  # nothing published or recorded: record what is there
            hashes = file_hashes(dest)
            _record(ds, src, root, hashes, dest.stat().st_size, url=f"local file {dest}")
            return dest, hashes
        try:
            return dest, check(dest, *expected, label=str(dest))
        except ChecksumError as err:
            raise InstallError(f"{err}; remove the file to download it again") from None
    mirror = fetch.mirror_base()
    urls = fetch.candidate_urls(src, mirror)
    if not urls:
        steps = ds.access_steps or f"see {ds.homepage}"
        raise InstallError(f"{ds.name}: {src.name} has no public download URL. {steps} "
                        f"(expected at {dest})")
    print(f"{ds.name}: downloading {src.name} from {urls[0]}" + (" (mirror)" if mirror else ""))
    try:
        hashes = fetch.download(src, dest, urls, expected, retries=opts.retries,
                                progress=opts.progress, timeout=opts.timeout, backoff=opts.backoff,
                                connections=opts.connections)
    except (ChecksumError, fetch.DownloadError) as err:
        _remove_empty(cache, cache.parent)
        other = f" Or: {ds.access_steps}" if ds.access_steps and src.alternatives else ""
        raise InstallError(f"{err}.{other}") from None
    if expected is None:
        _record(ds, src, root, hashes, dest.stat().st_size, url=urls[0])
    return dest, hashes


def _record(ds: Dataset, src: SourceFile, root: Path, hashes: dict, size: int, url: str) -> None:
    RecordedChecksums(root).record(ds.name, src.name, hashes, size, url)
    print(f"{ds.name}: no published checksum for {src.name}; recorded sha256 {hashes['sha256']} "
          f"(md5 {hashes['md5']}) in {root / 'recorded_sha256.json'}")


def _remove_empty(*dirs: Path) -> None:
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            pass


def _write_labels(tree: Path, rows: list[dict[str, str]]) -> None:
    columns = ["path", "label", "split"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(tree / LABELS, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["path"]))


def _write_provenance(ds: Dataset, tree: Path, hashes: dict[str, dict], rows: list) -> None:
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        split = counts.setdefault(row["split"], {})
        split[row["label"]] = split.get(row["label"], 0) + 1
    info = {
        "name": ds.name, "title": ds.title, "task": ds.task, "classes": list(ds.classes),
        "licence": ds.licence, "citation": ds.citation, "homepage": ds.homepage,
        "official_split": ds.split, "magnification": ds.magnification, "mpp": ds.mpp,
        "counts": counts,
        "sources": [{"name": f.name, "urls": list(f.urls), "checksum_source": f.checksum_source,
                     **hashes[f.name]} for f in ds.files],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tree / PROVENANCE).write_text(json.dumps(info, indent=2) + "\n")


def install(ds: Dataset, root: Path, opts: Options | None = None) -> str:
    """Fetch, verify and lay out `ds` under `root`; return a one-line summary."""
    opts = opts or Options()
    target = root / ds.name
    if is_complete(target):
        return "already present; " + verify(ds, root)
    if target.exists():
        raise InstallError(f"{target} exists but is not a finished dataset from this tool "
                        f"(no {TREE_SUMS}); move it away and run again")
    if ds.converter is None:
        raise InstallError(f"{ds.name}: no automatic download ({ds.access}). {ds.access_steps}")
    root.mkdir(parents=True, exist_ok=True)
    sources, hashes = {}, {}
    for src in ds.files:
        sources[src.name], hashes[src.name] = obtain(ds, src, root, opts)
    staging = Path(tempfile.mkdtemp(prefix=f".{ds.name}.staging-", dir=root))
    try:
        tree, work = staging / "tree", staging / "work"
        tree.mkdir()
        work.mkdir()
        print(f"{ds.name}: laying out {len(ds.files)} source file(s)")
        try:
            rows = CONVERTERS[ds.converter](ds, sources, tree, work)
        except Exception as err:  # any converter failure: report it in one line, keep sources
            raise InstallError(f"{ds.name}: layout failed ({type(err).__name__}: {err}); "
                            f"the verified sources stay in {root / DOWNLOADS / ds.name}") from err
        _write_labels(tree, rows)
        _write_provenance(ds, tree, hashes, rows)
        n = write_tree_sums(tree, (p.relative_to(tree).as_posix()
                                   for p in tree.rglob("*") if p.is_file()))
        os.replace(tree, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not opts.keep_archives:
        for path in sources.values():
            path.unlink(missing_ok=True)
        _remove_empty(root / DOWNLOADS / ds.name, root / DOWNLOADS)
    return f"{ds.name}: {len(rows)} images laid out in {target} ({n} files checksummed)"


def verify(ds: Dataset, root: Path) -> str:
    """Check the laid-out tree against SHA256SUMS and any kept source files; one-line summary."""
    target = root / ds.name
    if not is_complete(target):
        raise InstallError(f"{ds.name} is not downloaded in {root} (no {target / TREE_SUMS}); "
                        f"run: ssmamba-lite data download {ds.name} --root {root}")
    try:
        n = verify_tree(target)
        recorded = RecordedChecksums(root)
        kept = 0
        for src in ds.files:
            path = root / DOWNLOADS / ds.name / src.name
            expected = _expected(ds, src, recorded)
            if path.exists() and expected:
                check(path, *expected, label=str(path))
                kept += 1
    except ChecksumError as err:
        raise InstallError(str(err)) from None
    extra = f" and {kept} source file(s)" if kept else ""
    return f"{ds.name}: verified {n} files{extra} in {target}"
