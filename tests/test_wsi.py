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
from ssmamba_lite.wsi.heatmap import heatmap_overlay, percentile_ranks, save_heatmap
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
    assert img.shape == thumb.shape
    sx = thumb.shape[1] / 2220
    x, y = (coords[-1] * sx).astype(int) + 2                  # inside the top-scoring tile
    assert np.abs(img[y, x].astype(int) - thumb[y, x]).sum() > 20
    assert (img[0, 0] == thumb[0, 0]).all()                  # glass corner: no tile, untouched
    assert percentile_ranks([5.0, 1.0, 3.0]).tolist() == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="2 tiles but 3 scores"):
        heatmap_overlay(thumb, coords[:2], [1, 2, 3], 256, (2220, 2967))


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
