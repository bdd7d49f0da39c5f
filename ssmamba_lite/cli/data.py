"""`ssmamba-lite data ...`: the dataset commands of data_scripts, plus `data sample`.

    ssmamba-lite data list | info | download | verify | gdc-manifest    data_scripts/cli.py
    ssmamba-lite data sample [NAME]     the sample sets that ship with the package: their names
                                        and sizes, or the folder of one (for scripts:
                                        `--data "$(ssmamba-lite data sample idc-breast)"`)
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    # The only place where the library reaches into data_scripts, which stays free of torch.
    from data_scripts.cli import add_parser as add_data_parser

    sub = add_data_parser(subparsers)
    p = sub.add_parser("sample", help="the small real sample sets inside the package")
    p.add_argument("name", nargs="?", help="print this set's folder (default: list them all)")
    p.set_defaults(func=_sample)


def _sample(args) -> int:
    from ssmamba_lite.engine.data import SAMPLE_ROOT, sample_dir, sample_names

    if args.name:
        print(sample_dir(args.name))
        return 0
    for name in sample_names():
        files = [f for f in sample_dir(name).rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files) / 1e6
        print(f"{name:22s} {len(files):5d} files {size:5.1f} MB   sample:{name}")
    print(f"sources and licences: {SAMPLE_ROOT / 'ATTRIBUTION.md'}")
    return 0
