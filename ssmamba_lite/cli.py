"""`ssmamba-lite` command line: thin wrappers around the library (no model logic here).

Each sub-command lives in the module that owns it and registers itself through a
`add_parser(subparsers)` function that sets `func` on its parser.
"""

from __future__ import annotations

import argparse
import sys


def _add_data(subparsers) -> None:
    # The only place where the library reaches into data_scripts (see DESIGN.md).
    from data_scripts.cli import add_parser

    add_parser(subparsers)


def _add_info(subparsers) -> None:
    p = subparsers.add_parser("info", help="show versions and which scan implementation runs where")
    p.set_defaults(func=_info)


def _info(args) -> int:
    import torch

    from ssmamba_lite import __version__
    from ssmamba_lite.scan import cpu_kernel, cuda_kernel, which_backend

    print(f"ssmamba_lite {__version__}, torch {torch.__version__}")
    print(f"CPU tensors  -> {which_backend(torch.empty(1, device='cpu'))} scan"
          f" (numba kernel {'available' if cpu_kernel() else 'missing'})")
    if torch.cuda.is_available():
        print(f"CUDA tensors -> {which_backend(torch.empty(1, device='cuda'))} scan"
              f" (mamba-ssm kernel {'available' if cuda_kernel() else 'missing'})")
    else:
        print("CUDA: no GPU visible")
    return 0


def _add_wsi(subparsers) -> None:
    from ssmamba_lite.cli_wsi import add_parser

    add_parser(subparsers)


def _add_train(subparsers) -> None:
    from ssmamba_lite.cli_train import add_parser

    add_parser(subparsers)


def _add_assignments(subparsers) -> None:
    from ssmamba_lite.assignments import add_parser

    add_parser(subparsers)


COMMANDS = [_add_info, _add_train, _add_data, _add_wsi, _add_assignments]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssmamba-lite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"ssmamba-lite {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
