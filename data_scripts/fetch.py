"""Fetch one published file: mirror rewrite, resumable transfer, hash check, atomic move.

A download streams into a part file beside its destination (`.<name>.part`). A broken
transfer keeps what arrived; the next attempt, and the next run after a crash, Ctrl-C or a
lost connection, asks the server for the rest (HTTP `Range: bytes=<have>-`, with `If-Range`
naming the copy the bytes came from, so a changed file restarts from byte 0). The progress bar
starts at the bytes already there. Only when the size and the hash match is the part file
moved to its final name. A hash mismatch deletes it (a resumed file may mix two copies) and is
not retried. HTTP 429 and 5xx are waits, not failures: the pause follows the server's
`Retry-After`, else grows (backoff x 2^attempt); other 4xx end the tries of that URL.

`connections=K` (`ssmamba-lite data download NAME --connections K`) fetches a large file in K
byte ranges at once (servers that limit speed per connection, e.g. about 100 KB/s from
Zenodo to some users), each range resumable on its own, then joins them.

    SSMAMBA_DATA_MIRROR=https://mirror.example.org/pathology
        every URL becomes <mirror>/<file name> (scheme, host and path prefix replaced)
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from data_scripts.checksums import ChecksumError, file_hashes
from data_scripts.registry import SourceFile

MIRROR_ENV = "SSMAMBA_DATA_MIRROR"
_sleep = time.sleep  # the pause between retries (tests replace it)
CHUNK = 1 << 16                   # at most this much of a broken transfer is lost
PARALLEL_MIN_BYTES = 64 << 20     # smaller files are fetched over one connection
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
MAX_WAIT = 600.0                  # seconds: the longest Retry-After we honour


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


def part_path(dest: Path) -> Path:
    """Where the bytes of `dest` gather until it is complete and verified."""
    return dest.parent / f".{dest.name}.part"


def _validator_path(part: Path) -> Path:
    return part.with_name(part.name + ".etag")


def _get(url: str, part: Path, timeout: float, first: int = 0, last: int | None = None):
    """GET the bytes of `url` that `part` lacks (of the range first..last when given):
    returns (response, offset the body starts at); a 416 returns (None, have)."""
    import requests  # lazy: keeps `data list` fast

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "ssmamba-lite", "Accept-Encoding": "identity"}   # bytes as stored
    start = first + have
    if have or last is not None:
        headers["Range"] = f"bytes={start}-" + ("" if last is None else str(last))
        validator = _validator_path(part)
        if have and validator.is_file():
            headers["If-Range"] = validator.read_text().strip()
    if last is not None and start > last:
        return None, have                                     # this range is complete
    r = requests.get(url, headers=headers, stream=True, timeout=timeout)
    if r.status_code == 416:                                  # nothing after `have`: complete
        r.close()
        return None, have
    r.raise_for_status()
    if r.status_code == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
        return r, have
    if last is not None:
        r.close()
        raise DownloadError(f"{url}: the server ignored a byte range (status {r.status_code})")
    part.write_bytes(b"")                                     # a full body: restart at 0
    tag = r.headers.get("ETag") or r.headers.get("Last-Modified")
    if tag and not tag.startswith("W/"):                      # a strong validator only
        _validator_path(part).write_text(tag)
    return r, 0


def _stream(r, part: Path, offset: int, bar) -> None:
    """Append the body of `r` to `part`; a body shorter than announced is a broken transfer."""
    expected = r.headers.get("Content-Length")
    got = 0
    with r, open(part, "ab") as f:
        while chunk := r.raw.read1(CHUNK):       # what has arrived: a cut loses nothing
            f.write(chunk)
            got += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    if expected is not None and got != int(expected):
        raise DownloadError(f"{part.name}: the body ended after {offset + got} bytes")


def _progress_bar(name: str, total: int | None, initial: int, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    desc = name + (f" (resuming at {initial / 2**20:.1f} MiB)" if initial else "")
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, file=sys.stderr)


def _http_download(url: str, part: Path, progress: bool, timeout: float,
                   connections: int = 1) -> None:
    """Bring `part` up to the whole file at `url`, resuming from what it holds."""
    if connections > 1:
        size = _range_size(url, timeout)
        if size is not None and size >= PARALLEL_MIN_BYTES:
            return _parallel_download(url, part, size, connections, progress, timeout)
    r, have = _get(url, part, timeout)
    if r is None:
        return
    length = r.headers.get("Content-Length")
    bar = _progress_bar(part.name[1:-5], have + int(length) if length else None, have, progress)
    try:
        _stream(r, part, have, bar)
    finally:
        if bar is not None:
            bar.close()


def _range_size(url: str, timeout: float) -> int | None:
    """The file's size when the server serves byte ranges, else None."""
    import requests

    r = requests.head(url, headers={"User-Agent": "ssmamba-lite"}, timeout=timeout,
                      allow_redirects=True)
    if r.ok and r.headers.get("Accept-Ranges", "").lower() == "bytes":
        return int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
    return None


def _parallel_download(url: str, part: Path, size: int, connections: int, progress: bool,
                       timeout: float) -> None:
    """`size` bytes in `connections` ranges, each in its own resumable `<part>.<i>`, joined."""
    bounds = [size * i // connections for i in range(connections + 1)]
    pieces = [part.with_name(f"{part.name}.{i}") for i in range(connections)]
    if part.exists() and part.stat().st_size:                 # started over one connection
        part.unlink()
    have = _size(part)                                        # the pieces' bytes
    bar = _progress_bar(part.name[1:-5], size, have, progress)
    lock = threading.Lock()

    class Locked:                                             # tqdm.update from K threads
        @staticmethod
        def update(n):
            with lock:
                bar.update(n)

    def fetch_range(i: int) -> None:
        r, got = _get(url, pieces[i], timeout, bounds[i], bounds[i + 1] - 1)
        if r is not None:
            _stream(r, pieces[i], got, Locked if bar is not None else None)
    try:
        with ThreadPoolExecutor(connections) as pool:
            list(pool.map(fetch_range, range(connections)))
    finally:
        if bar is not None:
            bar.close()
    with open(part, "wb") as out:
        for p in pieces:
            with open(p, "rb") as f:
                while block := f.read(CHUNK):
                    out.write(block)
    for p in pieces:
        p.unlink()


def _transfer_errors() -> tuple[type[BaseException], ...]:
    import requests
    import urllib3

    # urllib3's own errors (a cut body read from r.raw) are transfer errors too
    return (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError,
            DownloadError)


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
    connections: int = 1,
    transfer: Callable[[str, Path, bool, float], None] | None = None,
) -> dict[str, str]:
    """Download `src` to `dest` from the first URL that works; return its md5 and sha256.

    `expected` is (algorithm, digest) or None. Each URL gets 1 + `retries` attempts for
    transfer failures, each resuming from the part file. Raises ChecksumError (no retry,
    part file deleted) or DownloadError (part file kept: the next run resumes from it).
    `transfer(url, part, progress, timeout)` brings the part file up to the whole file.
    """
    if not urls:
        raise DownloadError(f"{src.name}: no URL to download from")
    transfer = transfer or functools.partial(_http_download, connections=max(1, connections))
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.part-*"):    # older, random part names
        stale.unlink(missing_ok=True)
    # data_scripts' own temp-then-rename: the library's one atomic writer
    # (ssmamba_lite.engine.checkpoint.atomic_write) cannot be used here, because importing
    # ssmamba_lite imports torch, and data_scripts stays free of it.
    part = part_path(dest)
    failures: list[str] = []
    for url in urls:
        for attempt in range(retries + 1):
            try:
                transfer(url, part, progress, timeout)
                _check_size(src, part)
            except _transfer_errors() as err:
                failures.append(f"{url}: {type(err).__name__}: {str(err)[:200]}")
                status = _status(err)
                if status is not None and 400 <= status < 500 and status not in RETRY_STATUSES:
                    break  # 404 and friends: retrying the same URL will not help
                if attempt < retries:
                    wait = _wait_seconds(err, backoff, attempt)
                    why = f"HTTP {status}" if status else type(err).__name__
                    print(f"  transfer of {src.name} failed ({why}); retry {attempt + 1}/"
                          f"{retries} in {wait:.0f} s, resuming at {_size(part)} bytes",
                          file=sys.stderr)
                    _sleep(wait)
                continue
            except BaseException:                 # Ctrl-C: keep the bytes, say where
                if _size(part):
                    print(f"\n  {src.name}: {_size(part)} bytes kept in {part}; the next "
                          f"download resumes from there", file=sys.stderr)
                raise
            _validator_path(part).unlink(missing_ok=True)
            hashes = file_hashes(part)
            if expected is not None:
                algorithm, digest = expected
                if hashes[algorithm] != digest.lower():
                    _discard(part)
                    raise ChecksumError(
                        f"checksum mismatch for {src.name} from {url}: expected {algorithm} "
                        f"{digest.lower()}, got {hashes[algorithm]}; the download was deleted"
                    )
            os.replace(part, dest)
            return hashes
    kept = f"; {_size(part)} bytes kept in {part}, the next run resumes" if _size(part) else ""
    raise DownloadError(
        f"could not download {src.name} after {retries + 1} attempt(s) per URL; last error: "
        f"{failures[-1] if failures else 'unknown'}{kept}"
    )


def _size(part: Path) -> int:
    """Bytes gathered so far: the part file, or its byte-range pieces."""
    pieces = part.parent.glob(part.name + ".[0-9]*")
    return sum(p.stat().st_size for p in (part, *pieces) if p.exists())


def _discard(part: Path) -> None:
    for p in (part, _validator_path(part), *part.parent.glob(part.name + ".[0-9]*")):
        p.unlink(missing_ok=True)


def _status(err: BaseException) -> int | None:
    return getattr(getattr(err, "response", None), "status_code", None)


def _wait_seconds(err: BaseException, backoff: float, attempt: int) -> float:
    """The server's Retry-After (seconds) when it sent one, else backoff x 2^attempt."""
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    try:
        return min(MAX_WAIT, max(0.0, float(headers.get("Retry-After", ""))))
    except ValueError:                        # absent, or an HTTP date: our own schedule
        return backoff * 2**attempt


def _check_size(src: SourceFile, part: Path) -> None:
    """A part file short of the published size is a broken transfer (resumed next try); one
    longer than it cannot be the file and is deleted."""
    got = _size(part)
    if src.size is None or got == src.size:
        return
    if got > src.size:
        _discard(part)
    raise DownloadError(f"{src.name}: got {got} bytes, the published size is {src.size}")
