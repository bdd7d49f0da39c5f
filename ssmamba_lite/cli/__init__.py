"""`ssmamba-lite` command line: thin wrappers around the library (no model logic here).

    ssmamba-lite info                                 versions; which scan runs where
    ssmamba-lite pretrain | finetune | evaluate | predict     train.py
    ssmamba-lite data ...                             datasets (data_scripts/cli.py; the
                                                      embedded samples: `data sample`, data.py)
    ssmamba-lite wsi ... | mil ...                    whole-slide images, wsi.py
    ssmamba-lite tutorial | book | assignments ...    the course, course.py

`python -m ssmamba_lite.cli ...` does the same (what torchrun needs). Each command group's
module has an `add_parser(subparsers)` that sets `func` on its parsers; a failure is one line
on stderr and exit code 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys

from ssmamba_lite.cli import course, data, info, train, wsi

COMMANDS = [info.add_parser, train.add_parser, data.add_parser, wsi.add_parser,
            course.add_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssmamba-lite", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of its one line")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


USER_ERRORS = (ValueError, OSError, FloatingPointError)   # bad input: one line (bugs: traceback)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if args.debug:
            raise
        text = " ".join(str(e).split()) or type(e).__name__
        print(f"ssmamba-lite {args.command}: error: {text}", file=sys.stderr)
        return 2
