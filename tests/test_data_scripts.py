"""data_scripts end to end, offline: a local HTTP server plays the mirror.

Archives shaped like the real ones (a zip of class folders like Kather 2016, gzipped HDF5
like PCam, an npz like MedMNIST) are built in tmp_path, served on 127.0.0.1 and fetched
through $SSMAMBA_DATA_MIRROR by the same CLI a user runs. The registry entries used are
the real ones with only their files' hashes swapped for those of the test archives.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import hashlib
import io
import json
import re
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from data_scripts import fetch, registry
from data_scripts.checksums import RECORDED_NAME, TREE_SUMS
from data_scripts.cli import add_parser, format_table
from data_scripts.registry import NONE_PUBLISHED


# ----------------------------------------------------------------------------- helpers
class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder with byte ranges, as real file servers do; can cut a transfer short
    (`truncate`: file name -> times left) and answer with a status first (`statuses`: file
    name -> e.g. [429, 503]); records each GET's Range header (`ranges`: name -> list)."""

    truncate: dict[str, int] = {}
    hits: dict[str, int] = {}
    statuses: dict[str, list[int]] = {}
    ranges: dict[str, list[str | None]] = {}

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _file(self) -> tuple[str, Path]:
        return Path(urlparse(self.path).path).name, Path(self.translate_path(self.path))

    def do_HEAD(self) -> None:  # noqa: N802 (http.server API)
        name, path = self._file()
        if not path.is_file():
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        name, path = self._file()
        self.hits[name] = self.hits.get(name, 0) + 1
        self.ranges.setdefault(name, []).append(self.headers.get("Range"))
        if self.statuses.get(name):
            self.send_response(self.statuses[name].pop(0))
            self.send_header("Retry-After", "7")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        first, last, status = 0, len(data) - 1, 200
        if_range = self.headers.get("If-Range")
        if self.headers.get("Range") and if_range in (None, etag):   # else: the whole new file
            a, _, b = self.headers["Range"].removeprefix("bytes=").partition("-")
            first, last = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
            if first >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[first:last + 1]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.end_headers()
        if self.truncate.get(name, 0) > 0:
            self.truncate[name] -= 1
            self.wfile.write(body[: len(body) // 2])  # then hang up mid-body
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server(tmp_path, monkeypatch):
    """A mirror at http://127.0.0.1:<random port>/data serving tmp_path/mirror/data.

    Sets SSMAMBA_DATA_MIRROR to it; pauses between retries are skipped.
    """
    served = tmp_path / "mirror" / "data"
    served.mkdir(parents=True)
    handler = type("H", (_Handler,), {"truncate": {}, "hits": {}, "statuses": {}, "ranges": {}})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                partial(handler, directory=str(served.parent)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/data"
    monkeypatch.setenv(fetch.MIRROR_ENV, base)
    monkeypatch.delenv("SSMAMBA_DATA", raising=False)
    monkeypatch.setattr(fetch, "_sleep", lambda seconds: None)
    try:
        yield served, handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def entries():
    """Register test variants of real entries; remove them afterwards."""
    added: list[str] = []

    def add(base: str, name: str, **files_hashes) -> registry.Dataset:
        ds = registry.get(base)
        files = tuple(dataclasses.replace(f, **files_hashes.get(f.name, {})) for f in ds.files)
        new = dataclasses.replace(ds, name=name, files=files)
        registry.register(new, replace=True)
        added.append(name)
        return new

    yield add
    for name in added:
        registry.unregister(name)


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ssmamba-lite")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return int(args.func(args) or 0)


def png_bytes(seed: int, size: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


DIGEST = {"md5": re.compile(r"[0-9a-f]{32}"), "sha256": re.compile(r"[0-9a-f]{64}")}


def assert_tree_sums_match(folder: Path) -> dict[str, str]:
    """Every line of folder/SHA256SUMS is `<sha256>  <path>` (the sha256sum format), the
    digest is that of the file's bytes, and every file of the folder is listed; returns
    path -> digest."""
    sums = {}
    for line in (folder / TREE_SUMS).read_text().splitlines():
        digest, sep, rel = line.partition("  ")
        assert sep and DIGEST["sha256"].fullmatch(digest), f"{TREE_SUMS}: {line!r}"
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest, rel
        sums[rel] = digest
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files - {TREE_SUMS} == set(sums), f"{TREE_SUMS} lists {len(sums)} of {len(files)}"
    return sums


def hashes_of(path: Path) -> dict:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "md5": None, "size": len(data)}


def make_kather_zip(path: Path, per_class: int = 3) -> dict[str, int]:
    """A zip laid out like Kather_texture_2016_image_tiles_5000.zip (PNG instead of TIFF)."""
    counts = {"01_TUMOR": per_class, "02_STROMA": per_class, "08_EMPTY": 1}
    with zipfile.ZipFile(path, "w") as zf:
        for c, (cls, n) in enumerate(counts.items()):
            for i in range(n):
                zf.writestr(f"Kather_texture_2016_image_tiles_5000/{cls}/tile_{i}.png",
                            png_bytes(10 * c + i))
        zf.writestr("__MACOSX/Kather_texture_2016_image_tiles_5000/01_TUMOR/._tile_0.png", b"x")
    return counts


# ----------------------------------------------------------------------------- tests
def test_registry_entries_are_complete_and_honest():
    names = registry.names()
    for required in ("nct-crc-he-100k", "kather2016", "pcam", "pathmnist", "pathmnist-64",
                     "pathmnist-128", "pathmnist-224", "breakhis", "lc25000", "idc-breast",
                     "bach", "mhist", "chaoyang", "camelyon16", "tcga-nsclc", "sicapv2", "bracs",
                     "bracs-wsi", "camelyon17", "panda", "tcga-rcc", "tcga-brca"):
        assert required in names
    files_of_digest: dict[str, set[str]] = {}
    for ds in registry.all_datasets():
        assert ds.licence.strip() and ds.citation.strip() and ds.homepage.startswith("http"), ds.name
        assert ds.checksums.strip(), f"{ds.name}: say where checksums come from"
        assert ds.access in registry.ACCESS_KINDS
        if ds.access != "direct":
            assert ds.access_steps.strip(), f"{ds.name}: needs access steps"
        for f in ds.files:
            if f.has_checksum:
                assert f.checksum_source != NONE_PUBLISHED, f"{ds.name}/{f.name}: cite the source"
                for algorithm, digest in (("md5", f.md5), ("sha256", f.sha256)):
                    if digest:
                        assert DIGEST[algorithm].fullmatch(digest), \
                            f"{ds.name}/{f.name}: {algorithm} {digest!r} is not a hex digest"
                        files_of_digest.setdefault(digest, set()).add(f.name)
            else:
                assert f.checksum_source == NONE_PUBLISHED, f"{ds.name}/{f.name}"
            for url in f.urls:  # the mirror rule keeps the file name: it must be the URL's
                assert fetch.url_filename(url) == f.name, (ds.name, url)
    shared = {d: names for d, names in files_of_digest.items() if len(names) > 1}
    assert not shared, f"one digest for different files (a copied hash?): {shared}"
    assert registry.get("kather2016").files[0].sha256.startswith("936d0b95")


def test_every_converter_and_layout_named_by_an_entry_exists():
    from data_scripts.convert import CONVERTERS
    from data_scripts.layouts import LAYOUTS

    for ds in registry.all_datasets():
        assert ds.converter is None or ds.converter in CONVERTERS, ds.name
        assert ds.layout is None or ds.layout in LAYOUTS, ds.name
        if ds.layout:
            assert f"data layout {ds.name}" in ds.access_steps, ds.name
    assert registry.get("camelyon16").layout == "camelyon16"


def test_list_prints_a_table(capsys):
    assert cli("list") == 0
    out = capsys.readouterr().out
    assert "pcam" in out and "CC0 1.0" in out and "checksum" in out.splitlines()[0]
    row = next(line for line in out.splitlines() if line.startswith("breakhis"))
    assert " no " in row  # no published checksum for BreakHis
    assert format_table(registry.all_datasets()).count("\n") == len(registry.names()) + 1
    assert cli("list", "--markdown") == 0
    md = capsys.readouterr().out.strip().splitlines()
    assert md[0].startswith("| name |") and len(md) == len(registry.names()) + 2


def test_mirror_rewrites_to_base_plus_file_name(monkeypatch):
    src = registry.get("pathmnist-64").files[0]
    monkeypatch.setenv(fetch.MIRROR_ENV, "https://mirror.example.org/path/")
    assert fetch.candidate_urls(src, fetch.mirror_base()) == [
        "https://mirror.example.org/path/pathmnist_64.npz"]
    monkeypatch.delenv(fetch.MIRROR_ENV)
    assert fetch.candidate_urls(src, fetch.mirror_base()) == list(src.urls)


def test_zip_download_verify_convert_and_second_run_only_verifies(tmp_path, server, entries, capsys):
    served, handler = server
    archive = served / "Kather_texture_2016_image_tiles_5000.zip"
    counts = make_kather_zip(archive)
    h = hashes_of(archive)
    entries("kather2016", "t-kather", **{archive.name: {"sha256": h["sha256"], "size": h["size"]}})
    root = tmp_path / "root"

    assert cli("download", "t-kather", "--root", str(root), "--no-progress") == 0
    target = root / "t-kather"
    for cls, n in counts.items():
        assert len(list((target / "all" / cls).glob("*.png"))) == n
    assert not list(target.rglob("._*")), "__MACOSX junk must not be laid out"
    with open(target / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == sum(counts.values()) and {r["split"] for r in rows} == {"all"}
    assert all((target / r["path"]).is_file() and r["path"].split("/")[1] == r["label"] for r in rows)
    info = json.loads((target / "DATASET.json").read_text())
    assert info["sources"][0]["sha256"] == h["sha256"] and info["licence"] == "CC BY 4.0"
    sums = assert_tree_sums_match(target)
    assert {r["path"] for r in rows} <= set(sums) and "labels.csv" in sums
    assert not (root / ".downloads").exists(), "archives are removed unless --keep-archives"
    assert not list(root.glob(".t-kather.staging-*"))
    assert handler.hits[archive.name] == 1

    capsys.readouterr()
    assert cli("download", "t-kather", "--root", str(root), "--no-progress") == 0
    assert "already present" in capsys.readouterr().out
    assert handler.hits[archive.name] == 1, "second run must not download again"
    assert cli("verify", "t-kather", "--root", str(root)) == 0

    (target / rows[0]["path"]).write_bytes(b"tampered")
    assert cli("verify", "t-kather", "--root", str(root)) == 1
    assert "checksum mismatch" in capsys.readouterr().err


def test_checksum_mismatch_fails_names_file_and_hashes_and_leaves_nothing(tmp_path, server, capsys):
    served, _ = server
    make_kather_zip(served / "Kather_texture_2016_image_tiles_5000.zip")
    root = tmp_path / "root"
    # the real entry: its published sha256 (tensorflow-datasets) cannot match the test archive
    published = registry.get("kather2016").files[0]
    served_bytes = (served / published.name).read_bytes()
    entry = dataclasses.replace(published, size=len(served_bytes))  # sizes agree, content not
    registry.register(dataclasses.replace(registry.get("kather2016"), name="t-mismatch",
                                          files=(entry,)), replace=True)
    try:
        assert cli("download", "t-mismatch", "--root", str(root), "--no-progress") == 1
    finally:
        registry.unregister("t-mismatch")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert published.name in err and published.sha256 in err
    assert hashlib.sha256(served_bytes).hexdigest() in err
    assert not (root / "t-mismatch").exists()
    assert [p for p in root.rglob("*") if p.is_file()] == [], "no partial file may remain"


def test_interrupted_transfer_resumes_with_a_range_request(tmp_path, server, entries):
    served, handler = server
    archive = served / "Kather_texture_2016_image_tiles_5000.zip"
    make_kather_zip(archive, per_class=40)  # big enough that half a body is a real cut
    h = hashes_of(archive)
    entries("kather2016", "t-retry", **{archive.name: {"sha256": h["sha256"], "size": None}})
    handler.truncate[archive.name] = 1  # first request: connection dropped mid-body
    root = tmp_path / "root"
    assert cli("download", "t-retry", "--root", str(root), "--no-progress") == 0
    first, resumed = handler.ranges[archive.name]
    assert first is None and 0 < int(resumed[6:-1]) <= h["size"] // 2     # "bytes=N-"
    assert (root / "t-retry" / TREE_SUMS).is_file()


def test_a_failed_download_keeps_its_bytes_and_the_next_run_resumes(tmp_path, server, entries,
                                                                      capsys):
    served, handler = server
    archive = served / "Kather_texture_2016_image_tiles_5000.zip"
    make_kather_zip(archive, per_class=40)
    h = hashes_of(archive)
    entries("kather2016", "t-broken", **{archive.name: {"sha256": h["sha256"], "size": h["size"]}})
    handler.truncate[archive.name] = 2
    root = tmp_path / "root"
    assert cli("download", "t-broken", "--root", str(root), "--no-progress", "--retries", "1",
               "--timeout", "5") == 1
    err = capsys.readouterr().err
    assert "could not download" in err and "the next run resumes" in err
    part = root / ".downloads" / "t-broken" / f".{archive.name}.part"
    have = part.stat().st_size
    assert h["size"] // 2 < have < h["size"]          # half, then half of the rest
    assert cli("download", "t-broken", "--root", str(root), "--no-progress") == 0
    assert handler.ranges[archive.name][-1] == f"bytes={have}-"
    assert not part.exists() and (root / "t-broken" / TREE_SUMS).is_file()


def test_429_and_503_wait_and_retry(tmp_path, server, entries, monkeypatch, capsys):
    served, handler = server
    archive = served / "Kather_texture_2016_image_tiles_5000.zip"
    make_kather_zip(archive)
    h = hashes_of(archive)
    entries("kather2016", "t-busy", **{archive.name: {"sha256": h["sha256"], "size": h["size"]}})
    handler.statuses[archive.name] = [429, 503]
    waits = []
    monkeypatch.setattr(fetch, "_sleep", waits.append)
    assert cli("download", "t-busy", "--root", str(tmp_path / "root"), "--no-progress") == 0
    assert waits == [7.0, 7.0]                          # the server's Retry-After
    assert handler.hits[archive.name] == 3
    assert "failed (HTTP 429); retry 1/3 in 7 s" in capsys.readouterr().err


def test_a_changed_file_restarts_from_byte_zero(tmp_path, server):
    served, handler = server
    (served / "f.bin").write_bytes(b"old version " * 1000)
    src = registry.SourceFile(name="f.bin", urls=("unused",))
    url = fetch.mirror_url("f.bin", fetch.mirror_base())
    handler.truncate["f.bin"] = 1
    dest = tmp_path / "f.bin"
    with pytest.raises(fetch.DownloadError):
        fetch.download(src, dest, [url], None, retries=0, progress=False)
    assert fetch.part_path(dest).stat().st_size == 6000      # half of the old file, kept
    new = b"new version!" * 1500
    (served / "f.bin").write_bytes(new)                        # the server's copy changed
    fetch.download(src, dest, [url], ("sha256", hashlib.sha256(new).hexdigest()),
                   progress=False)
    assert dest.read_bytes() == new                            # If-Range: a full new body
    assert handler.ranges["f.bin"][-1] == "bytes=6000-"


def test_parallel_byte_ranges_resume_each_range(tmp_path, server, monkeypatch):
    served, handler = server
    data = np.random.default_rng(0).bytes(300_001)
    (served / "big.bin").write_bytes(data)
    monkeypatch.setattr(fetch, "PARALLEL_MIN_BYTES", 0)
    handler.truncate["big.bin"] = 1                            # one range breaks once
    src = registry.SourceFile(name="big.bin", urls=("unused",), size=len(data))
    dest = tmp_path / "root" / "big.bin"
    fetch.download(src, dest, [fetch.mirror_url("big.bin", fetch.mirror_base())],
                   ("sha256", hashlib.sha256(data).hexdigest()), progress=False, connections=3)
    assert dest.read_bytes() == data
    got = [r for r in handler.ranges["big.bin"] if r]
    assert {"bytes=0-99999", "bytes=100000-199999", "bytes=200000-300000"} <= set(got)
    assert len(got) == 4 and sorted(dest.parent.iterdir()) == [dest]   # one range resumed


def test_the_progress_bar_starts_at_the_resumed_bytes(tmp_path, server, capsys):
    served, handler = server
    (served / "f.bin").write_bytes(bytes(3 << 20))
    dest = tmp_path / "f.bin"
    fetch.part_path(dest).write_bytes(bytes(2 << 20))
    src = registry.SourceFile(name="f.bin", urls=("unused",), size=3 << 20)
    fetch.download(src, dest, [fetch.mirror_url("f.bin", fetch.mirror_base())], None,
                   progress=True, timeout=5.0)
    assert dest.read_bytes() == bytes(3 << 20)
    assert handler.ranges["f.bin"] == [f"bytes={2 << 20}-"], "one request, for the rest"
    assert "f.bin (resuming at 2.0 MiB)" in capsys.readouterr().err


def test_interrupt_during_download_keeps_the_part_file_for_the_next(tmp_path, capsys):
    src = registry.SourceFile(name="x.zip", urls=("http://127.0.0.1:9/x.zip",))

    def transfer(url, part, progress, timeout):
        part.write_bytes(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch.download(src, tmp_path / "x.zip", list(src.urls), None, transfer=transfer)
    assert [p.name for p in tmp_path.iterdir()] == [".x.zip.part"]
    assert "the next download resumes from there" in capsys.readouterr().err


def test_older_random_part_files_are_swept_by_the_next_download(tmp_path):
    src = registry.SourceFile(name="x.zip", urls=("http://127.0.0.1:9/x.zip",))
    (tmp_path / ".x.zip.part-k1ll3d").write_bytes(b"half a file")   # older naming scheme
    (tmp_path / ".y.zip.part-other").write_bytes(b"another file's download")

    def transfer(url, part, progress, timeout):
        part.write_bytes(b"whole file")

    fetch.download(src, tmp_path / "x.zip", list(src.urls), None, transfer=transfer)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".y.zip.part-other", "x.zip"]


def test_no_published_checksum_is_recorded_then_enforced(tmp_path, server, entries, capsys):
    served, handler = server
    archive = served / "Kather_texture_2016_image_tiles_5000.zip"
    make_kather_zip(archive)
    ds = entries("kather2016", "t-tofu", **{archive.name: {"sha256": None, "size": None,
                                                          "checksum_source": NONE_PUBLISHED}})
    assert ds.checksum_status() == "no"
    root = tmp_path / "root"
    assert cli("download", "t-tofu", "--root", str(root), "--no-progress", "--keep-archives") == 0
    recorded = json.loads((root / RECORDED_NAME).read_text())["t-tofu"][archive.name]
    assert recorded["sha256"] == hashes_of(archive)["sha256"]
    assert "recorded sha256" in capsys.readouterr().out
    assert cli("verify", "t-tofu", "--root", str(root)) == 0  # checks the kept archive too

    # the remote file changes: a fresh download must now fail against the recorded sha256
    (root / ".downloads" / "t-tofu" / archive.name).unlink()
    (root / "t-tofu").rename(tmp_path / "old")
    make_kather_zip(archive, per_class=4)
    assert cli("download", "t-tofu", "--root", str(root), "--no-progress") == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and recorded["sha256"] in err
    assert not (root / "t-tofu").exists()


def test_pcam_h5_gz_end_to_end(tmp_path, server, entries):
    served, _ = server
    rng = np.random.default_rng(0)
    new_hashes, sizes = {}, {"train": 6, "valid": 3, "test": 4}
    for tag, n in sizes.items():
        import h5py

        for key, arr in (("x", rng.integers(0, 255, (n, 96, 96, 3), dtype=np.uint8)),
                         ("y", (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1))):
            name = f"camelyonpatch_level_2_split_{tag}_{key}.h5"
            with h5py.File(tmp_path / name, "w") as f:
                f.create_dataset(key, data=arr)
            with gzip.open(served / (name + ".gz"), "wb") as gz:
                gz.write((tmp_path / name).read_bytes())
            h = hashes_of(served / (name + ".gz"))
            new_hashes[name + ".gz"] = {"sha256": h["sha256"], "size": h["size"]}
    entries("pcam", "t-pcam", **new_hashes)
    root = tmp_path / "root"
    assert cli("download", "t-pcam", "--root", str(root), "--no-progress") == 0
    target = root / "t-pcam"
    for split, tag in (("train", "train"), ("val", "valid"), ("test", "test")):
        n = sizes[tag]
        assert len(list((target / split / "tumor").glob("*.png"))) == n // 2
        assert len(list((target / split / "no_tumor").glob("*.png"))) == n - n // 2
    img = np.asarray(Image.open(target / "train" / "no_tumor" / "train_000000.png"))
    assert img.shape == (96, 96, 3)


def test_medmnist_npz_end_to_end(tmp_path, server, entries):
    served, _ = server
    rng = np.random.default_rng(1)
    arrays, n = {}, {"train": 7, "val": 3, "test": 5}
    for split, k in n.items():
        arrays[f"{split}_images"] = rng.integers(0, 255, (k, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % 9).reshape(k, 1).astype(np.uint8)
    np.savez_compressed(served / "pathmnist.npz", **arrays)
    h = hashes_of(served / "pathmnist.npz")
    entries("pathmnist", "t-pathmnist", **{"pathmnist.npz": {"md5": None, "sha256": h["sha256"]}})
    root = tmp_path / "root"
    assert cli("download", "t-pathmnist", "--root", str(root), "--no-progress") == 0
    with open(root / "t-pathmnist" / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {s: sum(r["split"] == s for r in rows) for s in n} == n
    first = next(r for r in rows if r["path"] == "train/adipose/train_000000.png")
    img = np.asarray(Image.open(root / "t-pathmnist" / first["path"]))
    np.testing.assert_array_equal(img, arrays["train_images"][0])  # lossless


def test_unsafe_archive_is_refused_and_nothing_is_laid_out(tmp_path, server, entries, capsys):
    served, _ = server
    archive = served / "Kather_texture_2016_image_tiles_5000.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../evil/01_TUMOR/a.png", png_bytes(0))
    h = hashes_of(archive)
    entries("kather2016", "t-evil", **{archive.name: {"sha256": h["sha256"], "size": h["size"]}})
    root = tmp_path / "root"
    assert cli("download", "t-evil", "--root", str(root), "--no-progress") == 1
    assert "unsafe member path" in capsys.readouterr().err
    assert not (root / "t-evil").exists() and not (tmp_path / "evil").exists()
    assert not list(root.glob(".t-evil.staging-*"))


def test_form_and_tool_entries_explain_access(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    assert cli("download", "chaoyang", "--root", str(tmp_path)) == 1
    assert "bupt-ai-cz.github.io" in capsys.readouterr().err
    assert cli("download", "mhist", "--root", str(tmp_path)) == 1
    assert "no public download URL" in capsys.readouterr().err
    assert cli("download", "no-such-set", "--root", str(tmp_path)) == 1
    assert "unknown dataset" in capsys.readouterr().err
    monkeypatch.delenv("SSMAMBA_DATA", raising=False)
    assert cli("verify", "pcam") == 1
    assert "SSMAMBA_DATA" in capsys.readouterr().err


def test_gdc_manifest_from_a_local_api(tmp_path):
    from data_scripts import gdc

    hits = [{"file_id": f"uuid-{i}", "file_name": f"TCGA-0{i}-slide.svs", "md5sum": "ab" * 16,
             "file_size": 1000 + i, "state": "released",
             "cases": [{"submitter_id": f"TCGA-0{i}", "project": {"project_id": p}}]}
            for i, p in enumerate(["TCGA-LUAD", "TCGA-LUSC", "TCGA-LUAD"])]
    bodies = []
    httpd, api = fake_gdc(hits, bodies)
    try:
        summary = gdc.make_manifest(tmp_path / "m.txt", gdc.NSCLC, api)
        found = gdc.query_slides(gdc.NSCLC, api, page=2)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(found) == 3 and "3 slides" in summary and "TCGA-LUAD 2" in summary
    assert bodies[0]["filters"]["content"][0]["content"]["value"] == ["TCGA-LUAD", "TCGA-LUSC"]
    lines = (tmp_path / "m.txt").read_text().splitlines()
    assert lines[0].split("\t") == ["id", "filename", "md5", "size", "state"] and len(lines) == 4
    with open(tmp_path / "labels.csv") as fh:
        labels = list(csv.DictReader(fh))
    assert [r["label"] for r in labels] == ["LUAD", "LUSC", "LUAD"]
    assert labels[1]["patient_id"] == "TCGA-01" and labels[1]["path"].startswith("slides/uuid-1/")


def fake_gdc(hits: list[dict], bodies: list):
    """A local stand-in for POST <api>/files: pages of `hits`; each request body is kept."""
    class Api(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            start, size = int(body["from"]), int(body["size"])
            payload = json.dumps({"data": {"hits": hits[start:start + size],
                                           "pagination": {"total": len(hits)}}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_gdc_manifest_rcc_by_project_and_brca_by_diagnosis(tmp_path, capsys):
    def hit(i, project, *diagnoses):
        case = {"submitter_id": f"TCGA-{i:02d}", "project": {"project_id": project}}
        if diagnoses:
            case["diagnoses"] = [{"primary_diagnosis": d} for d in diagnoses]
        return {"file_id": f"uuid-{i}", "file_name": f"TCGA-{i:02d}-01Z-00-DX1.abc.svs",
                "md5sum": "cd" * 16, "file_size": 2000, "state": "released", "cases": [case]}

    rcc = [hit(1, "TCGA-KIRC"), hit(2, "TCGA-KIRP"), hit(3, "TCGA-KICH")]
    idc, ilc = "Infiltrating duct carcinoma, NOS", "Lobular carcinoma, NOS"
    mixed = "Infiltrating duct and lobular carcinoma"
    brca = [hit(4, "TCGA-BRCA", idc), hit(5, "TCGA-BRCA", ilc), hit(6, "TCGA-BRCA", mixed),
            hit(7, "TCGA-BRCA", mixed), hit(8, "TCGA-BRCA", idc, ilc), hit(9, "TCGA-BRCA")]
    for hits, name in ((rcc, "tcga-rcc"), (brca, "tcga-brca")):
        bodies: list = []
        httpd, api = fake_gdc(hits, bodies)
        try:
            out = tmp_path / name / "gdc_manifest.txt"
            assert cli("gdc-manifest", "--dataset", name, "--out", str(out), "--api", api) == 0
        finally:
            httpd.shutdown()
            httpd.server_close()
        summary = capsys.readouterr().out
        with open(out.with_name("labels.csv")) as fh:
            rows = list(csv.DictReader(fh))
        projects = bodies[0]["filters"]["content"][0]["content"]["value"]
        if name == "tcga-rcc":
            assert projects == ["TCGA-KIRC", "TCGA-KIRP", "TCGA-KICH"]
            assert [r["label"] for r in rows] == ["KIRC", "KIRP", "KICH"]
            assert "diagnoses" not in bodies[0]["fields"] and "left out" not in summary
        else:
            assert projects == ["TCGA-BRCA"] and "cases.diagnoses.primary_diagnosis" in \
                bodies[0]["fields"]
            assert [(r["slide"], r["label"], r["patient_id"], r["split"]) for r in rows] == [
                ("TCGA-04-01Z-00-DX1.abc", "IDC", "TCGA-04", ""),
                ("TCGA-05-01Z-00-DX1.abc", "ILC", "TCGA-05", "")]
            assert rows[0]["primary_diagnosis"] == idc
            assert "2 slides (IDC 1, ILC 1)" in summary and "left out 4 slides" in summary
            assert f"{mixed}: 2" in summary and "several diagnoses" in summary
            assert "no primary_diagnosis: 1" in summary
            assert len(out.read_text().splitlines()) == 3  # left-out slides are not fetched
    assert cli("gdc-manifest", "--dataset", "pcam", "--out", str(tmp_path / "m.txt")) == 1
    assert "not a GDC dataset" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the sample
def test_build_sample_keeps_bytes_and_held_out_patients_out_of_the_pool(tmp_path):
    from data_scripts import build_sample

    src = tmp_path / "src"
    rng = np.random.default_rng(0)

    def png(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)

    labelled, pool = [], []
    for patient in range(20):
        for label in ("idc_negative", "idc_positive"):
            for k in range(3):
                rel = f"{label}/{patient}_{k}_{label}.png"
                png(src / "idc_breast" / rel)
                labelled.append({"path": rel, "label": label, "patient_id": str(patient),
                                 "source_repo": "x", "md5": "m"})
        for k in range(5):
            rel = f"images/{patient}_x{k}.png"
            png(src / "idc_breast_unlabeled" / rel)
            pool.append({"path": rel, "patient_id": str(patient)})
    for table, rows in (("idc_breast/labels.csv", labelled),
                        ("idc_breast_unlabeled/images.csv", pool)):
        with (src / table).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    for mini in ("kather2016_mini", "nct_crc_he_mini"):
        png(src / mini / "A" / "a.png")
        (src / mini / "MANIFEST.md").write_text("about")
    (src / "wsi").mkdir()
    (src / "wsi" / "cmu_small_region.svs").write_bytes(b"slide bytes")

    out = tmp_path / "sample"
    assert build_sample.main(["--source", str(src), "--out", str(out), "--patients", "12",
                              "--per-class", "2", "--unlabelled-per-patient", "3"]) == 0
    rows = list(csv.DictReader((out / "idc-breast" / "labels.csv").open()))
    train = {r["patient_id"] for r in rows if r["split"] == "train"}
    val = {r["patient_id"] for r in rows if r["split"] == "val"}
    assert len(rows) == 12 * 2 * 2 and (len(train), len(val)) == (9, 3) and not train & val
    extra = list(csv.DictReader((out / "idc-breast-unlabeled" / "images.csv").open()))
    assert {r["patient_id"] for r in extra} == train and len(extra) == 9 * 3
    for r in rows[:5]:
        assert (out / "idc-breast" / r["path"]).read_bytes() == \
            (src / "idc_breast" / r["path"]).read_bytes(), "bytes copied unchanged"
    assert (out / "kather2016" / "A" / "a.png").is_file()
    assert not (out / "kather2016" / "MANIFEST.md").exists()
    assert (out / "cmu-small-region" / "cmu_small_region.svs").read_bytes() == b"slide bytes"
