"""Unpack archives safely: zip, tar (.tar, .tar.gz, .tgz) and single-file gzip.

Every member path is checked to stay inside the destination (no `../`, no absolute paths, no
links pointing out), so a hostile or broken archive cannot write elsewhere. npz and h5 files
are not unpacked here: the converters read them in place (`convert.py`).
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath


class ArchiveError(Exception):
    """An archive is unreadable or tries to write outside its destination."""


def archive_kind(path: Path) -> str:
    """'zip', 'tar', 'gz' (single gzipped file) or 'file' (used as is), from the name."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    if name.endswith(".gz"):
        return "gz"
    return "file"


def _safe_target(dest: Path, member: str) -> Path:
    rel = PurePosixPath(member.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise ArchiveError(f"unsafe member path {member!r} (leaves the destination)")
    target = (dest / Path(*rel.parts)) if rel.parts else dest
    if dest.resolve() not in (target.resolve(), *target.resolve().parents):
        raise ArchiveError(f"unsafe member path {member!r} (leaves the destination)")
    return target


def extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = _safe_target(dest, info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise ArchiveError(f"{archive.name}: not a readable zip archive ({err})") from None


def extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tf:
            for member in tf:
                target = _safe_target(dest, member.name)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    if src is None:
                        raise ArchiveError(f"{archive.name}: cannot read member {member.name!r}")
                    with src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                # links, devices and fifos are skipped on purpose: image sets need none
    except (tarfile.TarError, EOFError, OSError) as err:
        if isinstance(err, ArchiveError):
            raise
        raise ArchiveError(f"{archive.name}: not a readable tar archive ({err})") from None


def gunzip(archive: Path, dest_file: Path) -> Path:
    """Decompress a single-file .gz to `dest_file` (streamed, constant memory)."""
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with gzip.open(archive, "rb") as src, open(dest_file, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (OSError, EOFError) as err:
        dest_file.unlink(missing_ok=True)
        raise ArchiveError(f"{archive.name}: not a readable gzip file ({err})") from None
    return dest_file


def extract(archive: Path, dest: Path) -> Path:
    """Unpack `archive` into directory `dest` (created); return `dest`.

    A single-file .gz becomes `dest/<name without .gz>`; any other file is copied.
    """
    dest.mkdir(parents=True, exist_ok=True)
    kind = archive_kind(archive)
    if kind == "zip":
        extract_zip(archive, dest)
    elif kind == "tar":
        extract_tar(archive, dest)
    elif kind == "gz":
        gunzip(archive, dest / archive.name[: -len(".gz")])
    else:
        shutil.copy2(archive, dest / archive.name)
    return dest
