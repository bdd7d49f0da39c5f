"""`ssmamba-lite pretrain | finetune | evaluate | predict`: flags are the config fields.

Every field of `PretrainConfig` / `FinetuneConfig` becomes a flag spelled with dashes
(`image_size` <-> `--image-size`); booleans get `--flag / --no-flag`; `--model-args` takes JSON
(e.g. '{"use_lpr": false, "directions": 1}').
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from ssmamba_lite.engine.train import FinetuneConfig, PretrainConfig


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per dataclass field, with the field's default and type."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kind = type(default)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif kind is dict:
            parser.add_argument(flag, type=_json_dict, default=default, metavar="JSON")
        else:
            parser.add_argument(flag, type=kind, default=default, required=f.name == "data",
                                help=f"default: {default}" if default != "" else None)


def _config(cls, args):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def _pretrain(args) -> int:
    from ssmamba_lite.engine.train import pretrain

    pretrain(_config(PretrainConfig, args))
    print(f"encoder weights: {args.out}/encoder.safetensors")
    return 0


def _finetune(args) -> int:
    from ssmamba_lite.engine.train import finetune

    finetune(_config(FinetuneConfig, args))
    print(f"model: {args.out}/model.safetensors and {args.out}/config.json")
    return 0


def _evaluate(args) -> int:
    from ssmamba_lite.engine.inference import evaluate

    m = evaluate(args.data, args.checkpoint, args.out, args.batch_size, args.device,
                 args.overwrite)
    print(f"confusion matrix (rows: true {m['classes']}):")
    for row in m["confusion_matrix"]:
        print("  " + " ".join(f"{v:6d}" for v in row))
    if args.out:
        print(f"metrics: {args.out}/metrics.json")
    return 0


def _predict(args) -> int:
    from ssmamba_lite.engine.inference import predict

    for r in predict(args.checkpoint, args.images, args.device):
        print(f"{r['path']}\t{r['class']}\t{r['probability']:.4f}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="MAMIM self-supervised pretraining")
    add_config_flags(p, PretrainConfig)
    p.set_defaults(func=_pretrain)
    p = subparsers.add_parser("finetune", help="supervised fine-tuning (from scratch or MAMIM)")
    add_config_flags(p, FinetuneConfig)
    p.set_defaults(func=_finetune)
    p = subparsers.add_parser("evaluate", help="metrics of a fine-tuned model on labelled data")
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", required=True, help="output folder of finetune")
    p.add_argument("--out", default=None, help="folder for metrics.json")
    p.add_argument("--overwrite", action="store_true", help="replace metrics.json in --out")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_evaluate)
    p = subparsers.add_parser("predict", help="class and probability of each image")
    p.add_argument("--checkpoint", required=True, help="output folder of finetune")
    p.add_argument("--device", default="auto")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=_predict)

