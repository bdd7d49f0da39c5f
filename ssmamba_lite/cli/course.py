"""`ssmamba-lite tutorial` and `ssmamba-lite assignments build | grade` (the course).

    ssmamba-lite tutorial                       every notebooks/NN_*.py -> runs/<timestamp>/
    ssmamba-lite tutorial 02 05 -p epochs 1     some of them, with parameters
    ssmamba-lite tutorial --list                the notebooks and their parameters
    ssmamba-lite book [--from RUN]              the executed course as a website (course/book.py)
    ssmamba-lite assignments build --out DIR    student versions (course/build.py)
    ssmamba-lite assignments grade NOTEBOOK...  autograding (course/grade.py)
    ssmamba-lite course weights [--out DIR]     the shipped pretrained weights (course/weights.py)
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from ssmamba_lite.course import runner


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("tutorial", help="execute the numbered notebooks headlessly "
                              "(papermill) into runs/<timestamp>/")
    p.add_argument("notebooks", nargs="*", help="name prefixes (e.g. 02 05); default: all")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="set a parameter (repeatable)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<timestamp>)")
    p.add_argument("--notebooks-dir", default=str(runner.NOTEBOOKS))
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first failure")
    p.add_argument("--log-output", action="store_true", help="echo the notebooks' output")
    p.add_argument("--cell-timeout", type=float, default=3600,
                   help="fail a cell that runs longer than this many seconds (default: 3600; "
                        "0: no limit). A limit also ends a run whose kernel stops answering.")
    p.add_argument("--list", action="store_true", help="list the notebooks and their parameters")
    p.set_defaults(func=_tutorial)

    p = subparsers.add_parser("book", help="the course as a static website in build/book/ "
                              "(executes the notebooks, or renders an earlier run)")
    p.add_argument("--from", dest="executed", default=None, metavar="RUN",
                   help="a folder of executed notebooks (a `tutorial` run, build/notebooks); "
                        "default: execute the course now into build/book_run/")
    p.add_argument("--out", default=str(runner.REPO / "build" / "book"), help="site folder")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="a notebook parameter when executing")
    p.add_argument("--notebooks-dir", default=str(runner.NOTEBOOKS))
    p.set_defaults(func=_book)

    p = subparsers.add_parser("course", help="the course's own files")
    sub = p.add_subparsers(dest="course_command", required=True)
    w = sub.add_parser("weights", help="pretrain MAMIM and fine-tune an IDC classifier on the "
                       "IDC sample, and write both as the shipped float16 weights (minutes)")
    w.add_argument("--out", default=None, help="where the weights go (default: "
                   "ssmamba_lite/sample_data/weights, what the notebooks load)")
    w.add_argument("--work", default="runs/course_weights", help="folder of the training runs")
    w.add_argument("--pretrain-epochs", type=int, default=6)
    w.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs")
    w.add_argument("--device", default="auto")
    w.add_argument("--no-progress", dest="progress", action="store_false")
    w.set_defaults(func=_weights)

    p = subparsers.add_parser("assignments", help="course assignments: student versions of the "
                              "notebooks, autograding of submissions")
    sub = p.add_subparsers(dest="assignments_command", required=True)
    b = sub.add_parser("build", help="student notebooks (solutions stubbed, hidden tests removed)")
    b.add_argument("--out", required=True, help="folder for the student notebooks")
    b.add_argument("notebooks", nargs="*", help="name prefixes (e.g. 02 04); default: all")
    b.add_argument("--notebooks-dir", default=str(runner.NOTEBOOKS), help="the course notebooks")
    b.set_defaults(func=_build)
    g = sub.add_parser("grade", help="execute submissions, run the hidden tests, write reports")
    g.add_argument("submissions", nargs="+", metavar="NOTEBOOK",
                   help="submitted .ipynb files, or folders of them")
    g.add_argument("--out", default=None,
                   help="report folder (default: runs/grades/<timestamp> under the current one)")
    g.add_argument("--source", default=None,
                   help="the course notebook to grade against (default: found by grade ids)")
    g.add_argument("--notebooks-dir", default=str(runner.NOTEBOOKS), help="the course notebooks")
    g.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="set a notebook parameter (repeatable)")
    g.add_argument("--cell-timeout", type=float, default=300,
                   help="seconds a cell may run before it is interrupted (default: 300)")
    g.add_argument("--all-cells", action="store_true",
                   help="also run the cells after the last test cell (they cannot change a score)")
    g.set_defaults(func=_grade)


def _tutorial(args) -> int:
    folder = Path(args.notebooks_dir)
    notebooks = runner.discover(folder, args.notebooks)
    if args.list:
        for nb in notebooks:
            params = ", ".join(f"{k}={v!r}" for k, v in runner.notebook_parameters(nb).items())
            print(f"{nb.stem}\n    {params}")
        return 0
    params = {name: runner.command_line_parameter(name, text) for name, text in args.parameter}
    known = set().union(*(runner.notebook_parameters(nb) for nb in notebooks)) if notebooks \
        else set()
    for name in sorted(set(params) - known):
        print(f"warning: no selected notebook has a parameter {name!r}", file=sys.stderr)
    out = Path(args.out or runner.REPO / "runs" / time.strftime("%Y%m%d-%H%M%S"))
    logging.getLogger("papermill").setLevel(logging.INFO if args.log_output else logging.WARNING)
    print(f"executing {len(notebooks)} notebook(s) from {folder} into {out}")
    results = runner.run_course(notebooks, out, params, stop_on_error=args.stop_on_error,
                                cwd=folder, log_output=args.log_output,
                                cell_timeout=args.cell_timeout or None)
    print(runner.summary(results, out))
    return 0 if all(r.ok for r in results) else 1


def _book(args) -> int:
    from ssmamba_lite.course.book import BookError, build_book

    folder = Path(args.notebooks_dir)
    executed = Path(args.executed) if args.executed else runner.REPO / "build" / "book_run"
    if not args.executed:
        params = {name: runner.command_line_parameter(name, text) for name, text in args.parameter}
        notebooks = runner.discover(folder)
        logging.getLogger("papermill").setLevel(logging.WARNING)
        print(f"executing {len(notebooks)} notebook(s) into {executed}")
        results = runner.run_course(notebooks, executed, params, cwd=folder)
        if not all(r.ok for r in results):
            print(runner.summary(results, executed))
            return 1
    try:
        build_book(executed, Path(args.out), folder)
    except BookError as e:
        print(f"ssmamba-lite book: error: {e}", file=sys.stderr)
        return 2
    return 0


def _weights(args) -> int:
    from ssmamba_lite.course.weights import BUDGET, SHIPPED, make_weights

    r = make_weights(args.out or SHIPPED, args.work, args.pretrain_epochs, args.epochs,
                     args.device, args.progress)
    v = r["validation_float16"]
    size = r["bytes"]
    print(f"wrote {args.out or SHIPPED} ({size['weights']:,} bytes) in "
          f"{r['seconds']['total']:.0f} s: held-out balanced accuracy "
          f"{v['balanced_accuracy']:.3f}, AUROC {v['auroc']:.3f} (n={v['n']})")
    if size["sample_data"] is not None:
        print(f"sample_data now holds {size['sample_data']:,} bytes (budget {BUDGET:,})")
    return 0 if (size["sample_data"] or 0) <= BUDGET else 1


def _build(args) -> int:
    from ssmamba_lite.course.build import build

    manifest = build(args.out, args.notebooks_dir, args.notebooks)
    print(f"{len(manifest['notebooks'])} student notebook(s), {manifest['total_points']:g} "
          f"points in all: {Path(args.out) / 'assignments.json'}")
    return 0


def _grade(args) -> int:
    from ssmamba_lite.course.grade import grade_all

    params = {name: runner.parse_value(text) for name, text in args.parameter}
    out = Path(args.out or Path("runs") / "grades" / time.strftime("%Y%m%d-%H%M%S"))
    results = grade_all(args.submissions, out, source=args.source, folder=args.notebooks_dir,
                        parameters=params, cell_timeout=args.cell_timeout or None,
                        all_cells=args.all_cells)
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"ssmamba-lite assignments grade: error: {r['error']}", file=sys.stderr)
    return 2 if failed or not results else 0
