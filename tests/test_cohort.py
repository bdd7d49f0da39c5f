"""Cohorts of slides over processes (wsi/cohort.py): torchrun with gloo on CPU, claims, kills,
stale claims, a bad slide, a cohort CSV, a timm encoder from a local weights file.

The slides are real H&E: the sample slide and crops of it of different sizes, written as
tiled TIFFs that record their resolution (pixels per centimetre, as scanners write it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ssmamba_lite.cli import main
from ssmamba_lite.engine.data import sample_dir
from ssmamba_lite.wsi import cohort
from ssmamba_lite.wsi.features import load_tile_encoder, read_features
from ssmamba_lite.wsi.slide import Slide
from tests.conftest import REPO

SLIDE = sample_dir("cmu-small-region") / "cmu_small_region.svs"
SIZES = {"s1_large": (2200, 2900), "s2_mid": (1600, 1400), "s3_small": (900, 800),
         "s4_small": (800, 700), "s5_tiny": (600, 500)}
FLAGS = ["--checkpoint", "none", "--model", "ssmamba_lite_cpu", "--image-size", "32",
         "--tile-size", "64", "--mpp", "1.0", "--batch-size", "16", "--workers", "0",
         "--device", "cpu"]


def write_slide(path, pixels: np.ndarray, mpp: float = 0.499) -> None:
    import tifffile
    tifffile.imwrite(path, pixels, tile=(256, 256), photometric="rgb",
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    with Slide(SLIDE) as s:
        whole = s.read(0, 0, max(s.size), max(s.size))[:s.size[1], :s.size[0]]
        for name, (w, h) in SIZES.items():                    # crops around the tissue
            x0, y0 = max(0, min(1250 - w // 2, s.size[0] - w)), max(0, 1500 - h // 2)
            write_slide(folder / f"{name}.tif", whole[y0:y0 + h, x0:x0 + w])
    return folder


def extract(slides, out, *extra):
    return ["wsi", "extract", "--slides", str(slides), "--out", str(out), *FLAGS, *extra]


def torchrun(argv, nproc=2, extra=(), timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    launch = list(extra) or ["--standalone"]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *launch,
                           "--nproc-per-node", str(nproc), "-m", "ssmamba_lite.cli", *argv],
                          capture_output=True, text=True, timeout=timeout, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same_features(a_dir, b_dir, names):
    for name in names:
        a, b = read_features(a_dir / f"{name}.h5"), read_features(b_dir / f"{name}.h5")
        assert (a["coords"] == b["coords"]).all() and a["n_tiles"] == len(a["coords"])
        np.testing.assert_allclose(a["features"], b["features"], rtol=1e-4, atol=1e-5)
        assert a["fingerprint"] == b["fingerprint"]


@pytest.fixture(scope="module")
def one_process(slides, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "feats"
    assert main(extract(slides, out)) == 0
    return out


def test_one_process_writes_every_slide_and_a_summary(one_process):
    summary = json.loads((one_process / cohort.SUMMARY).read_text())
    assert sorted(summary["done"]) == sorted(f"{n}.tif" for n in SIZES)
    assert summary["ranks"] == 1 and summary["tiles"] == sum(summary["done"].values())
    assert summary["per_rank"]["0"]["slides"] == len(SIZES)
    record = json.loads((one_process / "status" / "s1_large.json").read_text())
    assert record["error"] is None and record["tiles"] == summary["done"]["s1_large.tif"]
    assert record["tiles"] > summary["done"]["s5_tiny.tif"]
    assert not list((one_process / cohort.CLAIMS).iterdir()), "claims are released"


@pytest.mark.slow
def test_two_processes_extract_each_slide_once_and_the_same_features(slides, one_process,
                                                                     tmp_path):
    out = tmp_path / "feats"
    r = torchrun(extract(slides, out))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / cohort.SUMMARY).read_text())
    assert summary["ranks"] == 2 and sorted(summary["done"]) == sorted(f"{n}.tif" for n in SIZES)
    # each slide once: the ranks' counts add up to the cohort, and each record names one rank
    assert sum(r["slides"] for r in summary["per_rank"].values()) == len(SIZES)
    assert {json.loads(p.read_text())["rank"] for p in (out / "status").glob("*.json")} <= {0, 1}
    same_features(one_process, out, SIZES)


@pytest.mark.slow
def test_two_launches_meet_as_two_nodes(slides, one_process, tmp_path):
    out, port = tmp_path / "feats", free_port()
    rdzv = ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--rdzv-id", "cohort-test"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *rdzv,
                               "--nproc-per-node", "1", "-m", "ssmamba_lite.cli",
                               *extract(slides, out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [n.communicate(timeout=600) for n in nodes]
    assert all(n.returncode == 0 for n in nodes), results[0][1][-2000:] + results[1][1][-2000:]
    summary = json.loads((out / cohort.SUMMARY).read_text())
    assert summary["ranks"] == 2 and len(summary["done"]) == len(SIZES)
    same_features(one_process, out, SIZES)


def test_a_killed_run_leaves_no_partial_file_and_the_rerun_finishes(slides, one_process,
                                                                     tmp_path):
    out = tmp_path / "feats"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "ssmamba_lite.cli", *extract(slides, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / cohort.CLAIMS).glob("s2_mid.json")):
        time.sleep(0.01)                                     # the second slide is under way
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for h5 in out.glob("*.h5"):                              # whatever is there is whole
        assert read_features(h5)["n_tiles"] == len(read_features(h5)["coords"])
    assert not (out / "s2_mid.h5").exists() or (out / "status" / "s2_mid.json").exists()
    r = subprocess.run([sys.executable, "-m", "ssmamba_lite.cli", *extract(slides, out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "took over s2_mid.tif" in r.stderr and "is gone" in r.stderr
    assert not list(out.glob(".*.tmp")) and not list((out / cohort.CLAIMS).iterdir())
    same_features(one_process, out, SIZES)


def test_a_live_claim_is_left_alone_and_a_stale_one_taken_over(slides, tmp_path, capsys):
    out = tmp_path / "feats"
    (out / cohort.CLAIMS).mkdir(parents=True)
    other = {"host": "node-b", "pid": 4242, "rank": 3, "started": "2026-12-01T00:00:00"}
    claim = out / cohort.CLAIMS / "s5_tiny.json"
    claim.write_text(json.dumps(other))                      # another machine, working now
    assert main(extract(slides, out)) == 0
    summary = json.loads((out / cohort.SUMMARY).read_text())
    assert summary["not_done"] == ["s5_tiny.tif"] and not (out / "s5_tiny.h5").exists()
    assert "1 held by other processes" in capsys.readouterr().out
    old = time.time() - 25 * 3600
    os.utime(claim, (old, old))                              # ... or it was, 25 hours ago
    assert main(extract(slides, out)) == 0
    err = capsys.readouterr().err
    assert "took over s5_tiny.tif (rank 3, pid 4242 on node-b started 25.0 h ago" in err
    assert (out / "s5_tiny.h5").exists() and not claim.exists()


def test_claims_exclude_each_other(tmp_path):
    me = {"host": socket.gethostname(), "pid": os.getpid(), "rank": 0}
    assert cohort.claim(tmp_path, "a", me, 24) == (True, None)
    assert cohort.claim(tmp_path, "a", {**me, "rank": 1}, 24) == (False, None)   # alive: mine
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "b.json").write_text(json.dumps({**me, "pid": dead.pid}))
    won, why = cohort.claim(tmp_path, "b", me, 24)
    assert won and f"pid {dead.pid} on {me['host']} is gone" in why


def test_a_bad_slide_is_recorded_and_the_others_finish(slides, tmp_path, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    for name in ("s4_small", "s5_tiny"):
        (folder / f"{name}.tif").symlink_to(slides / f"{name}.tif")
    (folder / "s0_broken.svs").write_bytes(b"not a slide" * 100)
    out = tmp_path / "feats"
    assert main(extract(folder, out)) == 1
    summary = json.loads((out / cohort.SUMMARY).read_text())
    assert sorted(summary["done"]) == ["s4_small.tif", "s5_tiny.tif"]
    assert "cannot read slide" in summary["failed"]["s0_broken.svs"]
    record = json.loads((out / "status" / "s0_broken.json").read_text())
    assert record["error"] == summary["failed"]["s0_broken.svs"] and record["tiles"] == 0


def test_another_encoder_is_refused_not_mixed(slides, tmp_path, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "s5_tiny.tif").symlink_to(slides / "s5_tiny.tif")
    out = tmp_path / "feats"
    assert main(extract(folder, out)) == 0
    before = (out / "s5_tiny.h5").read_bytes()
    assert main(extract(folder, out, "--seed", "1")) == 1    # other random weights
    err = capsys.readouterr().err
    assert "s5_tiny.h5 was made with other settings or another encoder (encoder_fingerprint" in err
    assert json.loads((out / "status" / "s5_tiny.json").read_text())["error"] in err
    assert main(extract(folder, out, "--tile-size", "32")) == 1
    assert "tile_size 64 there, 32 now" in capsys.readouterr().err
    assert (out / "s5_tiny.h5").read_bytes() == before
    assert main(extract(folder, out, "--seed", "1", "--overwrite")) == 0
    assert (out / "s5_tiny.h5").read_bytes() != before


def test_a_cohort_csv_reads_relative_paths_and_names_a_missing_file(slides, tmp_path):
    csv_file = tmp_path / "cohort.csv"
    csv_file.write_text("slide,patient_id,label\n" + "".join(
        f"{slides / n}.tif,p{i},x\n" for i, n in enumerate(SIZES)))
    assert [p.stem for p in cohort.cohort_slides([csv_file])] == list(SIZES)
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "a.tif").symlink_to(slides / "s5_tiny.tif")
    (tmp_path / "rel" / "c.csv").write_text("slide\na.tif\nb.tif\n")
    with pytest.raises(ValueError, match=r"c.csv line 3: slide b.tif does not exist"):
        cohort.cohort_slides([tmp_path / "rel" / "c.csv"])


def test_a_timm_encoder_from_a_local_weights_file(slides, tmp_path):
    import timm
    net = timm.create_model("resnet18", num_classes=7)        # a classifier, as released
    torch.save(net.state_dict(), tmp_path / "pytorch_model.bin")
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "s5_tiny.tif").symlink_to(slides / "s5_tiny.tif")
    out = tmp_path / "feats"
    argv = ["wsi", "extract", "--slides", str(folder), "--out", str(out), "--model", "resnet18",
            "--checkpoint", str(tmp_path / "pytorch_model.bin"), "--image-size", "64",
            "--tile-size", "64", "--mpp", "1.0", "--workers", "0", "--device", "cpu"]
    assert main(argv) == 0
    d = read_features(out / "s5_tiny.h5")
    encoder = load_tile_encoder(tmp_path / "pytorch_model.bin", "resnet18", image_size=64)
    assert d["features"].shape[1] == 512 and d["image_size"] == 64
    assert d["encoder_fingerprint"] == encoder.fingerprint
    assert encoder.input_mean == (0.485, 0.456, 0.406)        # timm's own normalisation
    trunk = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in trunk.items())
    assert d["encoder"] == f"resnet18:{tmp_path / 'pytorch_model.bin'}"


@pytest.mark.slow
def test_wsi_pretrain_shares_the_tissue_search_then_trains_data_parallel(slides, tmp_path):
    out = tmp_path / "mamim"
    argv = ["wsi", "pretrain", "--slides", str(slides), "--out", str(out), "--model",
            "ssmamba_lite_cpu", "--tile-size", "64", "--mpp", "1.0", "--image-size", "32",
            "--epochs", "1", "--batch-size", "4", "--max-steps-per-epoch", "2", "--device", "cpu"]
    r = torchrun(argv)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (out / "tiles.csv").read_text().splitlines()[1:]
    assert {r.split(",")[-1] for r in rows} == set(SIZES)   # every slide's tiles, found by 2
    seen = json.loads((out / "pretrain_patients.json").read_text())
    assert seen["images"] == len(rows) and seen["patients"] == sorted(SIZES)
    assert (out / "encoder.safetensors").is_file()
    assert "resuming" not in r.stdout


def test_the_slide_tile_source_reads_what_extract_encodes(slides, tmp_path):
    import pickle

    from ssmamba_lite.wsi.features import tile_grid
    from ssmamba_lite.wsi.pretrain import find_tiles

    source = find_tiles([slides / "s5_tiny.tif"], tile_size=64, mpp=1.0)
    with Slide(slides / "s5_tiny.tif") as s:
        _, size0, _, coords = tile_grid(s, 64, mpp=1.0)
        first = s.read(int(coords[0][0]), int(coords[0][1]), size0, 64)
    assert len(source.samples) == len(coords) and set(source.samples.patients) == {"s5_tiny"}
    tile = source.load(source.samples.paths[0])
    assert tile.shape == (3, 64, 64) and tile.dtype == torch.uint8
    assert torch.equal(tile.permute(1, 2, 0), torch.from_numpy(first))
    copy = pickle.loads(pickle.dumps(source))              # what a DataLoader worker gets
    assert copy._open == {} and torch.equal(copy.load(copy.samples.paths[0]), tile)
