"""`ssmamba-lite wsi ...` and `ssmamba-lite mil ...` sub-commands (whole-slide images)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    """Registers nothing yet."""
