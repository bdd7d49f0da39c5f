"""`ssmamba-lite wsi ...` and `ssmamba-lite mil ...` sub-commands (whole-slide images).

    wsi pretrain       MAMIM on the tissue tiles of the target slides themselves
    wsi extract        slides -> tissue tiles -> encoder features, one <slide>.h5 per slide
    mil train          feature files + labels CSV -> a trained ABMIL / Mamba-MIL aggregator
    mil evaluate       a trained aggregator on feature files -> metrics, predictions, heatmaps
    mil patch-bags     the constructed benchmark: bags of patches from a patch dataset

Flags are spelled like the parameters of the functions they feed (--tile-size <-> tile_size).
A user error is one line on stderr and exit 2, as for every command; `wsi extract` exits 1
when some slides failed and the others were done (each named). The logic lives in
ssmamba_lite/wsi/ (features.py, cohort.py, pretrain.py, mil.py, train.py, bench.py).
"""

from __future__ import annotations

import functools

EXIT_OK, EXIT_FAIL = 0, 1


def _one_line_errors(func):
    """A slide that cannot be read is a user error like any other: one line, exit 2, from the
    CLI's edge (cli/__init__.py; --debug shows the traceback)."""
    @functools.wraps(func)
    def run(args) -> int:
        from ssmamba_lite.wsi.slide import SlideError

        try:
            return func(args)
        except SlideError as err:
            raise ValueError(str(err)) from err
    return run


def _encoder_args(p) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="encoder: a folder with encoder.safetensors + config.json, a "
                        ".safetensors file, a torch weights file (.bin/.pth/.pt, e.g. a "
                        "UNI-style pytorch_model.bin with --model vit_large_patch16_224), or "
                        "'none' for random weights (a baseline for demos and tests)")
    p.add_argument("--model", default="ssmamba_lite_tiny",
                   help="SSMamba preset or timm model name when the checkpoint carries no "
                        "config.json (built locally: nothing is downloaded)")
    p.add_argument("--seed", type=int, default=0, help="random weights of --checkpoint none")
    p.add_argument("--device", default="auto")


def add_parser(subparsers) -> None:
    wsi = subparsers.add_parser("wsi", help="whole-slide images: tiles and encoder features")
    wsub = wsi.add_subparsers(dest="wsi_command", required=True)
    p = wsub.add_parser("extract", help="tile slides and cache encoder features (resumable)")
    p.add_argument("--slides", nargs="+", required=True,
                   help="slide files, folders and/or cohort CSVs (a 'slide' column of paths)")
    p.add_argument("--out", required=True, help="folder for <slide>.h5 feature files")
    _encoder_args(p)
    p.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="the encoder's pixel mean (default: its config's, a timm model's own)")
    p.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"))
    p.add_argument("--stale-after", type=float, default=24.0, metavar="HOURS",
                   help="take over a slide claimed longer ago than this (a claim whose "
                        "process is gone on this host is taken over at once)")
    _scale_args(p)
    p.add_argument("--workers", type=int, default=2, help="processes reading tiles")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None,
                   help="resize tiles to this before the encoder (default: tile size)")
    p.add_argument("--thumbnail-size", type=int, default=1024)
    p.add_argument("--overwrite", action="store_true", help="redo slides already extracted")
    p.set_defaults(func=_extract)

    p = wsub.add_parser("pretrain", help="MAMIM on the tissue tiles of the slides themselves "
                        "(then: wsi extract --checkpoint OUT)")
    p.add_argument("--slides", nargs="+", required=True,
                   help="slide files and/or folders (only those MAMIM may see)")
    p.add_argument("--out", required=True, help="run folder: tiles/, encoder.safetensors, ...")
    _scale_args(p)
    p.add_argument("--max-tiles-per-slide", type=int, default=0, help="0: every tissue tile")
    p.add_argument("--model", default="ssmamba_lite_tiny")
    p.add_argument("--image-size", type=int, default=None, help="default: the tile size")
    for name, typ, default in (("epochs", int, 10), ("batch-size", int, 32),
                               ("lr", float, 1.5e-3), ("mask-ratio", float, 0.6),
                               ("max-steps-per-epoch", int, 0), ("seed", int, 0)):
        p.add_argument(f"--{name}", type=typ, default=default)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.set_defaults(func=_pretrain)

    mil = subparsers.add_parser("mil", help="slide-level multiple-instance learning")
    msub = mil.add_subparsers(dest="mil_command", required=True)
    p = msub.add_parser("train", help="train an aggregator on feature files")
    _mil_data_args(p)
    p.add_argument("--aggregator", choices=("abmil", "mamba"), default="abmil")
    for name, typ, default in (("hidden", int, 128), ("attn-dim", int, 64),
                               ("dropout", float, 0.25), ("layers", int, 2),
                               ("d-state", int, 16), ("epochs", int, 20), ("lr", float, 2e-4),
                               ("weight-decay", float, 1e-4), ("batch-size", int, 1),
                               ("val-fraction", float, 0.2), ("test-fraction", float, 0.2),
                               ("seed", int, 0)):
        p.add_argument(f"--{name}", type=typ, default=default)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.set_defaults(func=_train)

    p = msub.add_parser("evaluate", help="metrics, predictions.csv and attention heatmaps")
    _mil_data_args(p)
    p.add_argument("--checkpoint", default=None, help="folder written by `mil train` "
                   "(default: --out)")
    p.add_argument("--split", default=None, help="only rows of this split (e.g. test); 'all' "
                   "scores every slide (default: every slide, or, when some were trained on, "
                   "only the run's test slides, from its split.json)")
    p.add_argument("--no-heatmaps", dest="heatmaps", action="store_false")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier evaluation's files in --out")
    p.set_defaults(func=_evaluate)

    p = msub.add_parser("patch-bags", help="build the constructed benchmark from patches")
    p.add_argument("--labels", required=True, help="patch labels CSV (path,label,patient_id)")
    p.add_argument("--out", required=True)
    p.add_argument("--encoder", choices=("colour", "ssmamba"), default="colour",
                   help="patch features: colour statistics, or an SSMamba encoder")
    p.add_argument("--checkpoint", default="none", help="SSMamba encoder for --encoder ssmamba "
                   "('none': random weights, a baseline)")
    p.add_argument("--model", default="ssmamba_lite_tiny")
    for name, typ, default in (("bag-size", int, 4), ("witness-fraction", float, 1.0),
                               ("image-size", int, 64), ("test-fraction", float, 0.3),
                               ("val-fraction", float, 0.15), ("seed", int, 0)):
        p.add_argument(f"--{name}", type=typ, default=default)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_patch_bags)


def _scale_args(p) -> None:
    p.add_argument("--tile-size", type=int, default=224, help="tile side in pixels at the "
                   "target resolution")
    p.add_argument("--mpp", type=float, default=0.5,
                   help="tiles' microns per pixel (default 0.5, about 20x), from each slide's "
                        "own resolution")
    p.add_argument("--magnification", type=float, default=None,
                   help="an objective power instead of --mpp, e.g. 20")
    p.add_argument("--slide-mpp", type=float, default=None,
                   help="level-0 µm/px of slides whose files do not record it")
    p.add_argument("--level0", action="store_true", help="tile at full resolution, whatever "
                   "it is (mixed scanners then give different physical scales)")
    p.add_argument("--min-tissue", type=float, default=0.5)


def _mil_data_args(p) -> None:
    p.add_argument("--features", required=True, help="folder of <slide>.h5 feature files")
    p.add_argument("--labels", required=True, help="CSV: slide,label[,patient_id][,split]")
    p.add_argument("--out", required=True, help="run folder")


@_one_line_errors
def _extract(args) -> int:
    from ssmamba_lite.engine.distributed import setup
    from ssmamba_lite.wsi.cohort import extract_cohort
    from ssmamba_lite.wsi.features import load_tile_encoder

    if args.stale_after <= 0:
        raise ValueError(f"--stale-after must be a positive number of hours, got "
                         f"{args.stale_after}")
    encoder = load_tile_encoder(args.checkpoint, args.model, seed=args.seed,
                                image_size=args.image_size, mean=args.mean, std=args.std)
    env = setup(args.device, args.seed)                     # under torchrun: one rank each
    try:
        summary = extract_cohort(
            args.slides, args.out, encoder, env, overwrite=args.overwrite,
            stale_after=args.stale_after, tile_size=args.tile_size,
            magnification=args.magnification, mpp=None if args.level0 else args.mpp,
            slide_mpp=args.slide_mpp, workers=args.workers, min_tissue=args.min_tissue,
            batch_size=args.batch_size, image_size=args.image_size,
            thumbnail_size=args.thumbnail_size, encoder_name=encoder.encoder_name)
    finally:
        env.close()
    if env.is_main:
        held = f", {len(summary['not_done'])} held by other processes" \
            if summary["not_done"] else ""
        print(f"{len(summary['done'])} slides extracted ({summary['tiles']} tiles, "
              f"{summary['slides_per_hour']} slides/h on {summary['ranks']} process(es)), "
              f"{len(summary['skipped'])} already done, {len(summary['failed'])} failed "
              f"(named above){held} -> {args.out}/cohort_summary.json")
    return EXIT_FAIL if summary["failed"] else EXIT_OK


@_one_line_errors
def _pretrain(args) -> int:
    from ssmamba_lite.wsi.pretrain import pretrain_on_slides

    history = pretrain_on_slides(
        args.slides, args.out, tile_size=args.tile_size, mpp=None if args.level0 else args.mpp,
        slide_mpp=args.slide_mpp, magnification=args.magnification, min_tissue=args.min_tissue,
        max_tiles_per_slide=args.max_tiles_per_slide, model=args.model,
        image_size=args.image_size or args.tile_size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, mask_ratio=args.mask_ratio,
        max_steps_per_epoch=args.max_steps_per_epoch, seed=args.seed, device=args.device,
        resume=args.resume, overwrite=args.overwrite)
    last = history[-1] if history else {}
    print(f"MAMIM on the slides' tiles: {len(history)} epoch(s), last loss "
          f"{last.get('loss', float('nan')):.4f} -> {args.out} "
          f"(next: ssmamba-lite wsi extract --checkpoint {args.out} ...)")
    return EXIT_OK


@_one_line_errors
def _train(args) -> int:
    from ssmamba_lite.engine.checkpoint import check_run_folder
    from ssmamba_lite.engine.metrics import format_metrics
    from ssmamba_lite.wsi import train as mil_train
    from ssmamba_lite.wsi.mil import MILConfig

    check_run_folder(args.out, {}, resume=False, overwrite=args.overwrite)
    bags, classes = mil_train.load_bags(args.features, args.labels)
    split = mil_train.split_bags(bags, args.val_fraction, args.test_fraction, args.seed)
    print(", ".join(f"{k} {len(v)} slides of {len({b.patient for b in v})} patients"
                    for k, v in split.items()))
    cfg = MILConfig(aggregator=args.aggregator, hidden=args.hidden, attn_dim=args.attn_dim,
                    dropout=args.dropout, layers=args.layers, d_state=args.d_state)
    tcfg = mil_train.MILTrainConfig(epochs=args.epochs, lr=args.lr,
                                    weight_decay=args.weight_decay, batch_size=args.batch_size,
                                    val_fraction=args.val_fraction,
                                    test_fraction=args.test_fraction, seed=args.seed,
                                    device=args.device)
    result = mil_train.train_mil(split["train"], split["val"], classes, args.out, cfg, tcfg)
    mil_train.save_split(args.out, split)
    best = result["best"]
    print(f"epoch {best['epoch']} picked on validation" + (
        f": val {format_metrics(best['val'])} (optimistic: the best of {len(result['history'])})"
        if "val" in best else ""))
    if split["test"]:
        m = mil_train.evaluate_mil(args.out, split["test"], classes, f"{args.out}/test",
                                   device=args.device)
        print(f"test (never used to pick): {format_metrics(m)} -> {args.out}/test")
    return EXIT_OK


@_one_line_errors
def _evaluate(args) -> int:
    from ssmamba_lite.engine.checkpoint import check_output_files, read_json
    from ssmamba_lite.engine.metrics import format_metrics
    from ssmamba_lite.wsi import train as mil_train

    check_output_files(args.out, mil_train.EVALUATION_FILES, args.overwrite)
    run_dir = args.checkpoint or args.out
    _, classes = mil_train.load_mil(run_dir)
    bags, _ = mil_train.load_bags(args.features, args.labels, classes)
    trained_on = read_json(f"{run_dir}/config.json").get("feature_encoder")
    if trained_on and bags[0].encoder != trained_on:
        raise ValueError(f"{args.features} holds features of {bags[0].encoder}; the aggregator "
                         f"in {run_dir} was trained on features of {trained_on}")
    if args.split and args.split != "all":
        bags = [b for b in bags if b.split == args.split]
        if not bags:
            raise ValueError(f"{args.labels} has no rows with split {args.split!r}")
    elif not args.split:
        bags, said = mil_train.unseen_bags(run_dir, bags)
        if said:
            print(said)
        if not bags:
            raise ValueError(f"{args.labels}: none of the run's held-out slides is listed "
                             f"(--split all scores every slide)")
    m = mil_train.evaluate_mil(run_dir, bags, classes, args.out, args.heatmaps, args.device)
    print(format_metrics(m))
    return EXIT_OK


@_one_line_errors
def _patch_bags(args) -> int:
    from ssmamba_lite.wsi.bench import write_patch_bags
    from ssmamba_lite.wsi.features import load_tile_encoder

    encoder = (load_tile_encoder(args.checkpoint, args.model, seed=args.seed)
               if args.encoder == "ssmamba" else "colour")
    labels = write_patch_bags(
        args.labels, args.out, encoder, bag_size=args.bag_size,
        witness_fraction=args.witness_fraction, image_size=args.image_size,
        test_fraction=args.test_fraction, val_fraction=args.val_fraction, seed=args.seed,
        device=args.device)
    print(f"bags -> {args.out}/features, labels -> {labels}")
    return EXIT_OK
