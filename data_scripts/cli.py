"""`ssmamba-lite data ...` sub-commands."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="list, download and verify public datasets")
    p.set_defaults(func=lambda args: p.print_help() or 0)
