"""Fetch one published file: mirror rewrite, retried transfer, hash check, atomic move.

A download is streamed by pooch's HTTP downloader (requests, tqdm progress bar) into a
temporary name beside its destination (`.<name>.part-XXXX`). Only when the transfer is
complete and the hash matches is it moved to its final name; on any failure, Ctrl-C
included, the temporary file is removed (and a part file a killed process could not remove
is swept by the next download of the same file). Broken transfers (connection errors, a short
body) are retried with a growing pause; a hash mismatch is not retried, because a second
copy of the wrong file would not help.

    SSMAMBA_DATA_MIRROR=https://mirror.example.org/pathology
        every URL becomes <mirror>/<file name> (scheme, host and path prefix replaced)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from data_scripts.checksums import ChecksumError, file_hashes
from data_scripts.registry import SourceFile

MIRROR_ENV = "SSMAMBA_DATA_MIRROR"
_sleep = time.sleep  # the pause between retries (tests replace it)


class DownloadError(Exception):
    """A file could not be transferred (after retries) or has nowhere to come from."""


def mirror_base() -> str | None:
    """The mirror base URL from $SSMAMBA_DATA_MIRROR, without a trailing slash, or None."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return value.rstrip("/") or None


def mirror_url(filename: str, mirror: str) -> str:
    """`<mirror>/<file name>`: the mirror replaces scheme, host and path prefix of the URL."""
    return f"{mirror.rstrip('/')}/{filename}"


def url_filename(url: str) -> str:
    """The file name a URL points at (last path segment, query dropped)."""
    return Path(urlparse(url).path).name


def candidate_urls(src: SourceFile, mirror: str | None = None) -> list[str]:
    """Where to try, in order: the mirror alone when one is set, else the published URLs."""
    if mirror:
        return [mirror_url(src.name, mirror)]
    return list(src.urls)


def _http_download(url: str, dest: Path, progress: bool, timeout: float) -> None:
    import pooch  # lazy: keeps `data list` fast and pooch optional for it

    downloader = pooch.HTTPDownloader(
        progressbar=progress, chunk_size=1 << 20, timeout=timeout, headers={"User-Agent": "ssmamba-lite"}
    )
    downloader(url, str(dest), None)


def _transfer_errors() -> tuple[type[BaseException], ...]:
    import requests

    return (requests.exceptions.RequestException, OSError, DownloadError)


def download(
    src: SourceFile,
    dest: Path,
    urls: list[str],
    expected: tuple[str, str] | None,
    *,
    retries: int = 3,
    progress: bool = True,
    timeout: float = 60.0,
    backoff: float = 2.0,
    transfer: Callable[[str, Path, bool, float], None] | None = None,
) -> dict[str, str]:
    """Download `src` to `dest` from the first URL that works; return its md5 and sha256.

    `expected` is (algorithm, digest) or None. Each URL gets 1 + `retries` attempts for
    transfer failures. Raises ChecksumError (no retry) or DownloadError; in both cases
    nothing is left at `dest` or in its directory.
    """
    if not urls:
        raise DownloadError(f"{src.name}: no URL to download from")
    transfer = transfer or _http_download
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.part-*"):    # left by a killed download
        stale.unlink(missing_ok=True)
    failures: list[str] = []
    for url in urls:
        for attempt in range(retries + 1):
            # data_scripts' own temp-then-rename: the library's one atomic writer
            # (ssmamba_lite.engine.checkpoint.atomic_write) cannot be used here, because
            # importing ssmamba_lite imports torch, and data_scripts stays free of it.
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.part-", dir=dest.parent)
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                try:
                    transfer(url, tmp, progress, timeout)
                    _check_size(src, tmp)
                except _transfer_errors() as err:
                    failures.append(f"{url}: {type(err).__name__}: {str(err)[:200]}")
                    if _is_client_error(err):
                        break  # 404 and friends: retrying the same URL will not help
                    if attempt < retries:
                        print(f"  transfer of {src.name} failed ({type(err).__name__}); "
                              f"retry {attempt + 1}/{retries}", file=sys.stderr)
                        _sleep(backoff * (attempt + 1))
                    continue
                hashes = file_hashes(tmp)
                if expected is not None:
                    algorithm, digest = expected
                    if hashes[algorithm] != digest.lower():
                        raise ChecksumError(
                            f"checksum mismatch for {src.name} from {url}: expected {algorithm} "
                            f"{digest.lower()}, got {hashes[algorithm]}; the download was deleted"
                        )
                os.replace(tmp, dest)
                return hashes
            finally:
                tmp.unlink(missing_ok=True)
    raise DownloadError(
        f"could not download {src.name} after {retries + 1} attempt(s) per URL; last error: "
        f"{failures[-1] if failures else 'unknown'}"
    )


def _is_client_error(err: BaseException) -> bool:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return status is not None and 400 <= status < 500


def _check_size(src: SourceFile, tmp: Path) -> None:
    """A transfer that ends short (or long) of the published size is a broken transfer."""
    if src.size is not None and tmp.stat().st_size != src.size:
        raise DownloadError(
            f"{src.name}: got {tmp.stat().st_size} bytes, the published size is {src.size}"
        )
