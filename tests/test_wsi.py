"""Whole-slide images: reading, tissue, tiling, feature caches and heatmaps on a real slide.

The slide is the sample `cmu-small-region/cmu_small_region.svs`: a real Aperio crop of
OpenSlide's CMU-1, 2220 x 2967 pixels at 20x (0.499 µm/px), one pyramid level.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from ssmamba_lite.cli import main
from ssmamba_lite.engine.checkpoint import save_weights
from ssmamba_lite.engine.data import sample_dir
from ssmamba_lite.wsi import tiles
from ssmamba_lite.wsi.features import load_tile_encoder, read_features
from ssmamba_lite.wsi.heatmap import (
    attention_spread,
    colour_values,
    heatmap_overlay,
    percentile_ranks,
    save_heatmap,
)
from ssmamba_lite.wsi.slide import Slide, SlideError, target_downsample

MODEL = "ssmamba_lite_cpu"


@pytest.fixture(scope="module")
def slide_path():
    path = sample_dir("cmu-small-region") / "cmu_small_region.svs"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def tissue_fraction(rgb: np.ndarray) -> float:
    """Independent of the mask under test: stained pixels are saturated and not white."""
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV"))
    return float(((hsv[..., 1] > 25) & (hsv[..., 2] < 245)).mean())


def test_slide_metadata_and_tifffile_fallback(slide_path):
    with Slide(slide_path) as s, Slide(slide_path, backend="tifffile") as t:
        assert s.size == t.size == (2220, 2967)
        assert s.mpp == pytest.approx(0.499) and t.mpp == pytest.approx(0.499)
        assert s.magnification == t.magnification == 20
        a, b = s.read(512, 640, 256, 128), t.read(512, 640, 256, 128)
        assert a.shape == b.shape == (128, 128, 3) and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b).mean() < 2          # same pixels, two decoders
        assert target_downsample(s, magnification=10) == 2.0
        assert target_downsample(s, mpp=0.998) == pytest.approx(2.0)
        with pytest.raises(ValueError, match="cmu_small_region.svs.*cannot be tiled finer"):
            target_downsample(s, magnification=40)


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(40, 5, 5000), rng.normal(180, 10, 3000)]).clip(0, 255)
    v = v.astype(np.uint8)
    t = tiles.otsu_threshold(v)
    assert (v[:5000] <= t).mean() > 0.99 and (v[5000:] > t).mean() > 0.99, t


def test_tile_grid_on_real_slide(slide_path):
    with Slide(slide_path) as s:
        thumb = s.thumbnail(1024)
        mask = tiles.tissue_mask(thumb)
        tile0 = round(128 * target_downsample(s, magnification=10))   # 128 px at 10x
        every = tiles.tile_coords(s.size, tile0, mask, min_tissue=0.0)
        kept = tiles.tile_coords(s.size, tile0, mask, min_tissue=0.5)
        assert tile0 == 256 and len(every) == (2220 // 256) * (2967 // 256) == 88
        assert 0.15 < mask.mean() < 0.6                       # tissue covers about a third
        assert 15 <= len(kept) <= 50, len(kept)
        assert {tuple(c) for c in kept} <= {tuple(c) for c in every}
        x, y = kept[:, 0], kept[:, 1]
        assert (x >= 0).all() and (y >= 0).all()
        assert (x + tile0 <= 2220).all() and (y + tile0 <= 2967).all()   # inside the slide
        on = [tissue_fraction(s.read(a, b, tile0, 64)) for a, b in kept]
        kept_set = {tuple(c) for c in kept}
        off = [tissue_fraction(s.read(a, b, tile0, 64)) for a, b in every
               if (a, b) not in kept_set]
        assert min(on) > 0.4, min(on)                         # every kept tile is on tissue
        assert np.mean(on) > 0.8 and np.mean(off) < 0.3


def test_heatmap_png(slide_path, tmp_path):
    with Slide(slide_path) as s:
        thumb = s.thumbnail(512)
        coords = tiles.tile_coords(s.size, 256, tiles.tissue_mask(thumb), 0.5)
    scores = np.arange(len(coords), dtype=float)
    path = save_heatmap(tmp_path / "heat.png", thumb, coords, scores, 256, (2220, 2967))
    img = np.asarray(Image.open(path))
    h, w = thumb.shape[:2]
    assert img.shape[0] == h and img.shape[1] > w              # the colour bar on the right
    assert (img[:, :w] == np.asarray(heatmap_overlay(thumb, coords, scores, 256,
                                                     (2220, 2967)))).all()
    sx = thumb.shape[1] / 2220
    x, y = (coords[-1] * sx).astype(int) + 2                  # inside the top-scoring tile
    assert np.abs(img[y, x].astype(int) - thumb[y, x]).sum() > 20
    assert (img[0, 0] == thumb[0, 0]).all()                  # glass corner: no tile, untouched
    assert percentile_ranks([5.0, 1.0, 3.0]).tolist() == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="2 tiles but 3 scores"):
        heatmap_overlay(thumb, coords[:2], [1, 2, 3], 256, (2220, 2967))
    with pytest.raises(ValueError, match="colour_by must be one of"):
        heatmap_overlay(thumb, coords[:2], [1, 2], 256, (2220, 2967), colour_by="size")
    save_heatmap(tmp_path / "rank.png", thumb, coords, scores, 256, (2220, 2967),
                 colour_by="rank")


def test_heatmaps_colour_attention_by_value_not_rank():
    """Nearly uniform weights look nearly uniform by value; ranks spread them blue to red."""
    n = 8
    a = np.full(n, 1 / n) + np.linspace(-1e-3, 1e-3, n)
    by_value, by_rank = colour_values(a), colour_values(a, "rank")
    assert by_value.min() > 0.98 and by_value.max() == 1.0       # all at the red end
    assert by_rank.min() == 0.0 and by_rank.max() == 1.0          # blue to red
    assert colour_values([0.0, 0.5, 0.25]).tolist() == [0.0, 1.0, 0.5]   # 0 is the bottom
    with pytest.raises(ValueError, match="scores >= 0"):
        colour_values([-1.0, 1.0])
    spread = attention_spread(a)
    assert spread["uniform"] == 1 / n and spread["max_times_n"] == pytest.approx(1.008)
    assert spread["entropy_ratio"] == pytest.approx(1.0, abs=1e-4)
    one_tile = attention_spread([0, 0, 1.0, 0])
    assert one_tile["max_times_n"] == 4 and one_tile["entropy_ratio"] == 0
    assert attention_spread([2.0, 2.0])["max_times_n"] == 1.0    # divided by the sum first


def make_encoder_folder(tmp_path):
    """An encoder saved the way `pretrain` does: encoder.safetensors + config.json."""
    folder = tmp_path / "encoder"
    folder.mkdir()
    net = load_tile_encoder(None, model=MODEL)
    save_weights(net, folder / "encoder.safetensors")
    record = {"model": MODEL, "model_args": {}, "task": "mamim", "classes": None,
              "image_size": 64, "mean": [0.6, 0.5, 0.7], "std": [0.2, 0.2, 0.2],
              "model_config": dataclasses.asdict(net.cfg), "run": {}}
    (folder / "config.json").write_text(json.dumps(record))
    return folder, net


def test_load_tile_encoder(tmp_path):
    folder, net = make_encoder_folder(tmp_path)
    for checkpoint in (folder, folder / "encoder.safetensors"):
        loaded = load_tile_encoder(checkpoint)
        assert loaded.cfg.dims == (32, 64, 96, 128) and not loaded.training
        assert loaded.input_mean == (0.6, 0.5, 0.7)          # normalisation of its training
        for (k, v), w in zip(net.state_dict().items(), loaded.state_dict().values()):
            assert (v == w).all(), k
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_tile_encoder(tmp_path / "nowhere.safetensors")
    # a config.json without a model name: an SSMamba of its model_config fields, which differ
    (folder / "config.json").write_text(json.dumps({"model_config": {"dims": [8] * 4,
                                                                     "depths": [1] * 4}}))
    with pytest.raises(ValueError, match="encoder.safetensors does not fit SSMamba"):
        load_tile_encoder(folder)


def test_extract_cli_resumes_and_names_an_unreadable_slide(slide_path, tmp_path, capsys):
    folder, _ = make_encoder_folder(tmp_path)
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(slide_path, slides / "a_good.svs")
    (slides / "b_broken.svs").write_bytes(b"this is not a slide" * 50)
    out = tmp_path / "features"
    argv = ["wsi", "extract", "--slides", str(slides), "--out", str(out), "--checkpoint",
            str(folder), "--tile-size", "128", "--magnification", "10", "--image-size", "64",
            "--batch-size", "16", "--device", "cpu"]
    assert main(argv) == 1                                   # a slide failed ...
    err = capsys.readouterr().err
    assert "cannot read slide" in err and "b_broken.svs" in err
    d = read_features(out / "a_good.h5")                 # ... and the good one was done
    assert d["features"].shape == (len(d["coords"]), 128) and len(d["coords"]) >= 15
    assert np.isfinite(d["features"]).all()
    assert d["tile_size0"] == 256 and d["level0_size"] == [2220, 2967]
    assert d["thumbnail"].shape[2] == 3
    report = json.loads((out / "extract_report.json").read_text())
    assert list(report["done"]) == ["a_good.svs"] and list(report["failed"]) == ["b_broken.svs"]
    mtime = (out / "a_good.h5").stat().st_mtime_ns
    (slides / "b_broken.svs").unlink()
    (out / ".c_killed.h5.x7.tmp").write_bytes(b"half")      # a killed run's half-written file
    assert main(argv) == 0                                   # second run: resumes, skips
    assert (out / "a_good.h5").stat().st_mtime_ns == mtime
    assert not list(out.glob(".*.tmp")), "the half-written file is swept"
    assert json.loads((out / "extract_report.json").read_text())["skipped"] == ["a_good.svs"]


def test_missing_slide_errors(tmp_path):
    with pytest.raises(SlideError, match="nope.svs does not exist"):
        Slide(tmp_path / "nope.svs")
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        tiles.list_slides([tmp_path / "missing_folder"])


def test_the_default_protocol_tiles_at_half_a_micron_and_names_a_slide_without_one(
        slide_path, tmp_path, capsys):
    """Defaults: tiles at 0.5 µm/px from each slide's own resolution; a slide file without
    resolution metadata fails alone, in one line saying what to pass; --slide-mpp rescues it."""
    import tifffile

    folder, _ = make_encoder_folder(tmp_path)
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(slide_path, slides / "a_svs.svs")
    with Slide(slide_path) as s:                              # the same pixels, no metadata
        tifffile.imwrite(slides / "b_plain.tif", s.read(0, 0, 1024, 1024))
    out = tmp_path / "features"
    argv = ["wsi", "extract", "--slides", str(slides), "--out", str(out), "--checkpoint",
            str(folder), "--tile-size", "64", "--batch-size", "64", "--device", "cpu",
            "--workers", "0"]
    assert main(argv + ["--mpp", "1.0"]) == 1
    err = capsys.readouterr().err
    assert "b_plain.tif records no microns per pixel: pass --slide-mpp" in err
    assert sorted(p.name for p in out.glob("*.h5")) == ["a_svs.h5"]   # b failed: no file
    d = read_features(out / "a_svs.h5")
    assert d["mpp"] == pytest.approx(0.499) and d["target_mpp"] == 1.0
    assert d["tile_size0"] == round(64 * 1.0 / 0.499)        # 128 level-0 px = 64 µm
    assert main(argv + ["--mpp", "1.0", "--slide-mpp", "0.499"]) == 0
    b = read_features(out / "b_plain.h5")
    assert b["tile_size0"] == 128 and len(b["coords"]) > 0
    argv[3] = str(slides / "a_svs.svs")
    assert main(argv + ["--overwrite", "--tile-size", "256", "--image-size", "32"]) == 0
    d = read_features(out / "a_svs.h5")                       # the default: 0.5 µm/px
    assert d["target_mpp"] == 0.5 and d["tile_size0"] == round(256 * 0.5 / 0.499)
    with Slide(slide_path) as s, pytest.raises(ValueError, match="cannot be tiled finer"):
        target_downsample(s, mpp=0.25)                        # finer than the scan: refused


def test_tile_reading_workers_give_the_same_features(slide_path, tmp_path):
    from ssmamba_lite.wsi.features import extract_slide

    net = load_tile_encoder(None, model=MODEL)
    kw = dict(tile_size=64, mpp=2.0, batch_size=8, device="cpu")
    n0 = extract_slide(slide_path, tmp_path / "w0.h5", net, workers=0, **kw)
    n2 = extract_slide(slide_path, tmp_path / "w2.h5", net, workers=2, **kw)
    a, b = read_features(tmp_path / "w0.h5"), read_features(tmp_path / "w2.h5")
    assert n0 == n2 > 8 and (a["coords"] == b["coords"]).all()
    np.testing.assert_allclose(a["features"], b["features"], rtol=1e-5, atol=1e-6)


def test_encoder_resize_is_antialiased():
    """A 1-pixel checkerboard shrunk 4x is flat grey with antialiasing; without it, aliasing
    leaves a pattern. The features of the two differ, and encode_tiles sees the flat one."""
    import torch

    from ssmamba_lite.wsi.features import encode_tiles

    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    tiles = np.repeat(board[None, ..., None], 3, axis=-1)
    seen = {}

    class Probe(torch.nn.Module):
        num_features = 3

        def forward_features(self, x):
            seen["x"] = x
            return x

        def forward_head(self, x, pre_logits=True):
            return x.mean((2, 3))

    encode_tiles(Probe(), tiles, "cpu", image_size=16)
    assert seen["x"].shape[-1] == 16 and float(seen["x"].std()) < 0.05


def test_mamim_on_the_slides_own_tiles_then_extract_with_it(slide_path, tmp_path, capsys):
    """`wsi pretrain` cuts the slide's tissue tiles as `wsi extract` would, pretrains MAMIM on
    them (the slide is its own group), and `wsi extract` then encodes with that encoder."""
    run = tmp_path / "mamim"
    assert main(["wsi", "pretrain", "--slides", str(slide_path), "--out", str(run),
                 "--tile-size", "64", "--mpp", "2.0", "--max-tiles-per-slide", "24",
                 "--model", MODEL, "--epochs", "1", "--batch-size", "8", "--device", "cpu"]) == 0
    assert "next: ssmamba-lite wsi extract --checkpoint" in capsys.readouterr().out
    rows = (run / "tiles.csv").read_text().splitlines()         # read from the slide, not
    assert rows[0] == "slide,x,y,patient_id" and len(rows) == 25    # copied: no PNG anywhere
    assert rows[1].startswith(f"{slide_path},") and rows[1].endswith(",cmu_small_region")
    assert not list(run.rglob("*.png"))
    seen = json.loads((run / "pretrain_patients.json").read_text())
    assert seen == {"images": 24, "patients": ["cmu_small_region"]}
    out = tmp_path / "features"
    assert main(["wsi", "extract", "--slides", str(slide_path), "--out", str(out),
                 "--checkpoint", str(run), "--tile-size", "64", "--mpp", "2.0",
                 "--device", "cpu", "--workers", "0"]) == 0
    d = read_features(out / "cmu_small_region.h5")
    x, y = (int(v) for v in rows[1].split(",")[1:3])
    assert [x, y] in d["coords"].tolist()                     # the same grid
    assert d["features"].shape[1] == 128 and np.isfinite(d["features"]).all()
    capsys.readouterr()
    assert main(["wsi", "pretrain", "--slides", str(slide_path), "--out", str(run),
                 "--tile-size", "32", "--mpp", "2.0", "--max-tiles-per-slide", "24", "--model",
                 MODEL, "--epochs", "2", "--batch-size", "8", "--device", "cpu",
                 "--resume"]) == 2                  # other tiles: not a continuation
    assert "pretrained on tile_size 64; this run has 32: use another --out" in \
        capsys.readouterr().err
