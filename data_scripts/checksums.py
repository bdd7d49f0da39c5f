"""Hashes: of downloaded archives, of the laid-out tree, and the ones recorded on first use.

Three things live here:

* `file_hashes(path)` - md5 and sha256 in one pass over the file.
* `RecordedChecksums` - `<root>/recorded_sha256.json`: for files whose publisher gives no
  checksum, the sha256 seen at the first download (trust on first use). Later downloads of
  the same file must match it.
* `write_tree_sums` / `verify_tree` - `<root>/<dataset>/SHA256SUMS` (the `sha256sum` format,
  so `sha256sum -c SHA256SUMS` works too) lists every file the layout wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20
RECORDED_NAME = "recorded_sha256.json"
TREE_SUMS = "SHA256SUMS"


class ChecksumError(Exception):
    """A file's hash differs from the expected one (the message names file, expected, actual)."""


def file_hashes(path: Path) -> dict[str, str]:
    """{'md5': ..., 'sha256': ...} of `path`, read once."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def check(path: Path, algorithm: str, expected: str, *, label: str | None = None) -> dict[str, str]:
    """Hash `path`; raise ChecksumError unless its `algorithm` digest equals `expected`."""
    hashes = file_hashes(path)
    actual = hashes[algorithm]
    if actual != expected.lower():
        name = label or path.name
        raise ChecksumError(
            f"checksum mismatch for {name}: expected {algorithm} {expected.lower()}, got {actual}"
        )
    return hashes


class RecordedChecksums:
    """sha256 values recorded at first download, for files without a published checksum."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / RECORDED_NAME

    def _load(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as err:
            raise ChecksumError(f"{self.path} is not valid JSON ({err}); fix or remove it") from None

    def get(self, dataset: str, filename: str) -> dict | None:
        """The recorded entry {'sha256', 'md5', 'size', 'recorded', 'url'} or None."""
        return self._load().get(dataset, {}).get(filename)

    def record(self, dataset: str, filename: str, hashes: dict[str, str], size: int,
               url: str) -> None:
        data = self._load()
        data.setdefault(dataset, {})[filename] = {
            "sha256": hashes["sha256"], "md5": hashes["md5"], "size": size, "url": url,
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "note": "no published checksum; recorded at first download",
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


def sha256_of(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def write_tree_sums(tree: Path, relpaths: Iterable[str]) -> int:
    """Write `tree/SHA256SUMS` for the given files (relative POSIX paths); return the count."""
    lines = [f"{sha256_of(tree / rel)}  {rel}" for rel in sorted(relpaths)]
    (tree / TREE_SUMS).write_text("\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def read_tree_sums(tree: Path) -> dict[str, str]:
    """{relative path: sha256} from `tree/SHA256SUMS`."""
    sums = {}
    for n, line in enumerate((tree / TREE_SUMS).read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ChecksumError(f"{tree / TREE_SUMS}: line {n} is malformed: {line[:80]!r}")
        sums[rel] = digest
    return sums


def verify_tree(tree: Path, metadata: Iterable[str] = ()) -> int:
    """Check every file listed in SHA256SUMS and that no other file is present.

    `metadata` names top-level files written beside the data (SHA256SUMS itself, labels.csv,
    ...), which are allowed without being listed. Returns the number of files checked; raises
    ChecksumError naming the first bad file.
    """
    sums = read_tree_sums(tree)
    allowed = {TREE_SUMS, *metadata}
    present = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}
    missing = sorted(set(sums) - present)
    if missing:
        raise ChecksumError(f"{tree}: {len(missing)} listed file(s) missing, first: {missing[0]}")
    extra = sorted(present - set(sums) - allowed)
    if extra:
        raise ChecksumError(f"{tree}: {len(extra)} unlisted file(s), first: {extra[0]}")
    for rel, digest in sorted(sums.items()):
        actual = sha256_of(tree / rel)
        if actual != digest:
            raise ChecksumError(
                f"checksum mismatch for {tree / rel}: expected sha256 {digest}, got {actual}"
            )
    return len(sums)
