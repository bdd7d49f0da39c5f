"""Slides per hour with 1 and K processes on this machine: `wsi extract` over a cohort, once in
one process and once under torchrun (gloo; `--threads` CPU threads per process, 1 by default), side by side.

    .venv/bin/python benchmarks/bench_cohort.py [--processes 2] [--copies 2] [--threads 1]
        [--slides MORE_SLIDES ...] [--model ssmamba_lite_cpu] [--tile-size 64] [--mpp 1.0]

The cohort: the package's sample slide (CMU, real H&E) and crops of it from a quarter to the
whole of its area, written as tiled TIFFs that record their resolution (`--copies` sets of
them), plus any `--slides` given (files, folders, cohort CSVs). Slide sizes differ, so the
per-rank seconds show how well claiming the largest slide first balances the work. Prints
tiles/s and slides/h of each run, their ratio (the speed-up), each rank's slides, tiles and
seconds, and checks that both runs wrote the same features.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from ssmamba_lite.engine.data import sample_dir  # noqa: E402
from ssmamba_lite.wsi.features import read_features  # noqa: E402
from ssmamba_lite.wsi.slide import Slide  # noqa: E402

CROPS = (1.0, 0.7, 0.5, 0.35, 0.25)      # share of the sample slide's area


def build_cohort(folder: Path, copies: int) -> list[Path]:
    """Crops of the sample slide around its tissue, as tiled TIFFs with their resolution."""
    import tifffile

    source = sample_dir("cmu-small-region") / "cmu_small_region.svs"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with Slide(source) as s:
        (w0, h0), mpp = s.size, s.mpp
        whole = s.read(0, 0, max(w0, h0), max(w0, h0))[:h0, :w0]
    for c in range(copies):
        for share in CROPS:
            w, h = round(w0 * share ** 0.5), round(h0 * share ** 0.5)
            x0, y0 = (w0 - w) // 2, (h0 - h) // 2
            path = folder / f"c{c}_{round(100 * share):03d}.tif"
            tifffile.imwrite(path, whole[y0:y0 + h, x0:x0 + w], tile=(256, 256),
                             photometric="rgb", resolution=(1e4 / mpp, 1e4 / mpp),
                             resolutionunit="CENTIMETER")
            out.append(path)
    return out


def run(argv: list[str], processes: int, threads: int = 1) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads),
               PYTHONPATH=str(REPO))
    launch = [sys.executable, "-m", "ssmamba_lite.cli"] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         str(processes), "-m", "ssmamba_lite.cli"]
    r = subprocess.run(launch + argv, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"error: the {processes}-process run failed:\n{r.stderr[-2000:]}")
    out = Path(argv[argv.index("--out") + 1])
    return json.loads((out / "cohort_summary.json").read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--copies", type=int, default=2, help="sets of the five crops")
    p.add_argument("--slides", nargs="*", default=[], help="more slides, folders or CSVs")
    p.add_argument("--model", default="ssmamba_lite_cpu")
    p.add_argument("--tile-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--mpp", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads of each process "
                   "(torch and numba)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_cohort_"))
    try:
        slides = [str(s) for s in build_cohort(work / "slides", args.copies)] + args.slides
        print(f"cohort: {len(slides)} slide entries under {work / 'slides'}; model "
              f"{args.model} (random weights), {args.tile_size} px tiles at {args.mpp} µm/px "
              f"-> {args.image_size} px, {args.threads} CPU thread(s) per process")
        common = ["wsi", "extract", "--slides", *slides, "--checkpoint", "none", "--model",
                  args.model, "--tile-size", str(args.tile_size), "--image-size",
                  str(args.image_size), "--mpp", str(args.mpp), "--workers", "0",
                  "--device", "cpu", "--batch-size", "32"]
        results = {}
        for k in (1, args.processes):
            results[k] = run(common + ["--out", str(work / f"feats_{k}")], k, args.threads)
            s = results[k]
            print(f"{k} process(es): {len(s['done'])} slides, {s['tiles']} tiles in "
                  f"{s['wall_seconds']:.1f} s: {s['tiles_per_s']:.1f} tiles/s, "
                  f"{s['slides_per_hour']:.0f} slides/h")
            for rank, r in s["per_rank"].items():
                print(f"    rank {rank}: {r['slides']} slides, {r['tiles']} tiles, "
                      f"{r['seconds']:.1f} s extracting of {r['wall_seconds']:.1f} s")
        one, many = results[1], results[args.processes]
        print(f"speed-up, {args.processes} processes over 1 (same run): "
              f"{many['tiles_per_s'] / one['tiles_per_s']:.2f}x tiles/s")
        busy = [r["seconds"] for r in many["per_rank"].values()]
        print(f"balance: the busiest rank extracted {max(busy):.1f} s, the least busy "
              f"{min(busy):.1f} s ({min(busy) / max(busy):.0%})")
        worst = 0.0
        for name in one["done"]:
            stem = Path(name).stem
            a = read_features(work / "feats_1" / f"{stem}.h5")
            b = read_features(work / f"feats_{args.processes}" / f"{stem}.h5")
            assert (a["coords"] == b["coords"]).all(), f"{stem}: other tiles"
            worst = max(worst, float(np.abs(a["features"] - b["features"]).max()))
        print(f"same features in both runs: max abs difference {worst:.2e}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
