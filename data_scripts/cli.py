"""`ssmamba-lite data ...`: list the registry, download a dataset, verify one, write a GDC manifest.

    ssmamba-lite data list [--kind roi|wsi] [--markdown] [--page FILE]
    ssmamba-lite data info NAME
    ssmamba-lite data download NAME [--root DIR] [--keep-archives] [--retries N] [--no-progress]
                               [--connections K]   (a broken download resumes where it stopped)
    ssmamba-lite data verify NAME [--root DIR]
    ssmamba-lite data layout NAME [--root DIR]   (labels.csv over files already in <root>/NAME/)
    ssmamba-lite data gdc-manifest --out FILE [--dataset tcga-rcc | --project TCGA-LUAD ...]

`--root` defaults to $SSMAMBA_DATA; $SSMAMBA_DATA_MIRROR replaces every download URL with
`<mirror>/<file name>`. Every failure is one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_scripts import registry
from data_scripts.datasets_page import markdown_table, render_page

EXIT_OK, EXIT_FAIL = 0, 1


def add_parser(subparsers):
    """Register the `data` sub-command (called by ssmamba_lite/cli/__init__.py); returns its
    sub-parsers, so that the library can add the commands that need it (`data sample`)."""
    p = subparsers.add_parser("data", help="list, download and verify public datasets",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="data_command")
    p.set_defaults(func=lambda args: p.print_help() or 2)

    ls = sub.add_parser("list", help="print the registry as a table")
    ls.add_argument("--kind", choices=("roi", "wsi"), help="only tile (roi) or slide (wsi) sets")
    ls.add_argument("--markdown", action="store_true", help="a Markdown table, nothing cut short")
    ls.add_argument("--page", metavar="FILE",
                    help="write the documentation's datasets page (docs/datasets.md) to FILE")
    ls.set_defaults(func=_list)

    info = sub.add_parser("info", help="everything the registry knows about one dataset")
    info.add_argument("name")
    info.set_defaults(func=_info)

    dl = sub.add_parser("download", help="download, verify and lay out a dataset")
    dl.add_argument("name", help="registry name (see `data list`)")
    dl.add_argument("--root", help="data root (default: $SSMAMBA_DATA)")
    dl.add_argument("--keep-archives", action="store_true",
                    help="keep the verified source files in <root>/.downloads/")
    dl.add_argument("--retries", type=int, default=3,
                    help="retries per URL on a broken transfer (each resumes; HTTP 429/5xx wait)")
    dl.add_argument("--connections", type=int, default=1,
                    help="fetch files of 64 MiB or more in this many byte ranges at once")
    dl.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")
    dl.set_defaults(func=_download)

    vf = sub.add_parser("verify", help="check a laid-out dataset against its checksums")
    vf.add_argument("name")
    vf.add_argument("--root", help="data root (default: $SSMAMBA_DATA)")
    vf.set_defaults(func=_verify)

    lo = sub.add_parser("layout", help="write labels.csv for a set already in <root>/NAME/ "
                        "(synced slides, RoI trees); copies nothing")
    lo.add_argument("name", help="registry name (see `data list`)")
    lo.add_argument("--root", help="data root (default: $SSMAMBA_DATA)")
    lo.set_defaults(func=_layout)

    gm = sub.add_parser("gdc-manifest", help="GDC manifest + labels.csv for TCGA diagnostic slides")
    gm.add_argument("--out", required=True, help="manifest file to write (labels.csv goes beside)")
    gm.add_argument("--project", action="append", dest="projects",
                    help="GDC project id, repeatable (default: TCGA-LUAD and TCGA-LUSC)")
    gm.add_argument("--dataset", help="a TCGA registry entry (tcga-nsclc, tcga-rcc, tcga-brca): "
                    "its projects and labels")
    gm.add_argument("--api", default=None, help="GDC API base URL (default: the public GDC)")
    gm.set_defaults(func=_gdc_manifest)
    return sub


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAIL


def format_table(datasets: list[registry.Dataset]) -> str:
    """The registry as a plain-text table (what `data list` prints)."""
    header = ("name", "kind", "task", "classes", "size", "licence", "checksum", "access")
    rows = [header]
    for ds in datasets:
        task = ds.task if len(ds.task) <= 40 else ds.task[:37] + "..."
        licence = ds.licence if len(ds.licence) <= 20 else ds.licence[:17] + "..."
        rows.append((ds.name, ds.kind, task, str(len(ds.classes)), registry.human_size(ds.total_size),
                     licence, ds.checksum_status(), ds.access))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _write_page(path: str, kind: str | None) -> int:
    """`data list --page FILE`: the datasets page of the whole registry, written to FILE."""
    if kind:
        return _fail("--page writes the whole registry: leave out --kind")
    target = Path(path)
    try:
        target.write_text(render_page(), encoding="utf-8")
    except OSError as err:
        return _fail(f"{err.strerror or err}: {target}")
    print(f"wrote {target} ({len(registry.names())} datasets)")
    return EXIT_OK


def _list(args) -> int:
    if args.page:
        return _write_page(args.page, args.kind)
    datasets = [d for d in registry.all_datasets() if not args.kind or d.kind == args.kind]
    if args.markdown:
        print(markdown_table(datasets))
        return EXIT_OK
    print(format_table(datasets))
    print("\nchecksum: yes = every file has a published checksum; no = none published (the first "
          "download records its sha256); n/a = no file fetched here.\naccess: direct = `data "
          "download NAME` fetches it; manual/form/tool = see `data info NAME` for the steps.")
    return EXIT_OK


def _info(args) -> int:
    try:
        ds = _resolve(args.name)
    except LookupError as err:
        return _fail(str(err))
    fields = [("title", ds.title), ("task", ds.task), ("classes", ", ".join(ds.classes)),
              ("licence", ds.licence), ("citation", ds.citation), ("homepage", ds.homepage),
              ("official split", ds.split), ("magnification", ds.magnification or "not recorded"),
              ("um/px", str(ds.mpp) if ds.mpp else "not recorded"), ("access", ds.access),
              ("access steps", ds.access_steps or "ssmamba-lite data download " + ds.name),
              ("checksums", ds.checksums), ("notes", ds.notes)]
    for key, value in fields:
        if value:
            print(f"{key:>14}: {value}")
    for f in ds.files:
        algo_hash = f.expected()
        digest = f"{algo_hash[0]} {algo_hash[1]}" if algo_hash else f.checksum_source
        print(f"{'file':>14}: {f.name}  {registry.human_size(f.size)}  {digest}")
        if algo_hash:
            print(f"{'':>14}  (from: {f.checksum_source})")
        for url in f.urls:
            print(f"{'':>14}  {url}")
    return EXIT_OK


def _resolve(name: str):
    try:
        return registry.get(name)
    except KeyError as err:
        raise LookupError(err.args[0]) from None


def _download(args) -> int:
    from data_scripts.install import InstallError, Options, default_root, install

    try:
        ds = _resolve(args.name)
        root = default_root(args.root)
        opts = Options(retries=max(0, args.retries), progress=not args.no_progress,
                       keep_archives=args.keep_archives, timeout=args.timeout,
                       connections=max(1, args.connections))
        print(install(ds, root, opts))
        print(f"licence: {ds.licence}\ncite: {ds.citation}")
    except (LookupError, InstallError) as err:
        return _fail(str(err))
    except OSError as err:  # disk full, permissions, ...: name the path, no traceback
        return _fail(f"{err.strerror or err}: {err.filename or args.root}")
    except KeyboardInterrupt:
        return _fail("interrupted; partial downloads and staging folders were removed")
    return EXIT_OK


def _verify(args) -> int:
    from data_scripts.install import InstallError, default_root, verify

    try:
        print(verify(_resolve(args.name), default_root(args.root)))
    except (LookupError, InstallError) as err:
        return _fail(str(err))
    except OSError as err:
        return _fail(f"{err.strerror or err}: {err.filename or args.root}")
    return EXIT_OK


def _layout(args) -> int:
    from data_scripts.install import InstallError, default_root
    from data_scripts.layouts import LayoutError, layout

    try:
        ds = _resolve(args.name)
        print(layout(ds, default_root(args.root)))
        print(f"licence: {ds.licence}\ncite: {ds.citation}")
    except (LookupError, InstallError, LayoutError) as err:
        return _fail(str(err))
    except OSError as err:
        return _fail(f"{err.strerror or err}: {err.filename or args.root}")
    return EXIT_OK


def _gdc_manifest(args) -> int:
    from data_scripts import gdc

    projects, diagnoses = tuple(args.projects or gdc.NSCLC), None
    try:
        if args.dataset:
            ds = _resolve(args.dataset)
            if "gdc_projects" not in ds.options:
                raise LookupError(f"{ds.name} is not a GDC dataset (try tcga-nsclc, tcga-rcc, "
                                  f"tcga-brca)")
            projects = tuple(args.projects or ds.options["gdc_projects"])  # type: ignore[arg-type]
            diagnoses = ds.options.get("gdc_diagnoses")
        print(gdc.make_manifest(args.out, projects, args.api or gdc.GDC_API, diagnoses))
    except (LookupError, gdc.GDCError) as err:
        return _fail(str(err))
    return EXIT_OK
