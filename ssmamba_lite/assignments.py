"""Course assignments: exercises in the notebooks, student versions, autograding.

The exercises are written in nbgrader's format (https://nbgrader.readthedocs.io), and
nbgrader's own preprocessors turn the course notebooks into student versions:

    exercise cell  nbgrader metadata {"solution": true, "grade": false, "grade_id": ID, ...};
                   the answer sits between `### BEGIN SOLUTION` and `### END SOLUTION`, which
                   the student version replaces by nbgrader's stub
                       # YOUR CODE HERE
                       raise NotImplementedError()
    test cell      {"grade": true, "solution": false, "locked": true, "points": P,
                   "grade_id": ID + "_tests", ...}: checks the student can run, then hidden tests
                   between `### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS`, which the student
                   version drops. Tests compare the student's function with the library's own
                   implementation on random inputs.

In notebooks/NN_name.py (jupytext percent format) the metadata sits on the cell's first line,
`# %% nbgrader={"grade": true, "grade_id": "lpr_block_tests", "locked": true, "points": 2, ...}`,
so the course notebooks and the assignments are one source; JupyterLab's nbgrader "Create
Assignment" toolbar edits the same metadata in the paired .ipynb.

    ssmamba-lite assignments build --out DIR     student notebooks + assignments.json (points)
    ssmamba-lite assignments grade NOTEBOOK...   see autograde.py
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

from ssmamba_lite import tutorial

NOTEBOOKS = tutorial.NOTEBOOKS


# ---------------------------------------------------------------------------------------------
# Reading the exercises of a notebook.
# ---------------------------------------------------------------------------------------------
def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {}) or {}


def test_cells(nb) -> list:
    """The autograder test cells ("grade": true code cells), in order."""
    return [c for c in nb.cells if c.cell_type == "code" and nbgrader_meta(c).get("grade")
            and not nbgrader_meta(c).get("solution")]


def exercise_id(cell) -> str:
    """The exercise a test cell grades: its grade_id without the `_tests` suffix."""
    return str(nbgrader_meta(cell).get("grade_id", "")).removesuffix("_tests")


def exercises(nb) -> list[dict]:
    """[{"id", "grade_id", "points"}] of the test cells of a notebook."""
    return [{"id": exercise_id(c), "grade_id": nbgrader_meta(c)["grade_id"],
             "points": float(nbgrader_meta(c).get("points", 0))} for c in test_cells(nb)]


def assignment_notebooks(folder=NOTEBOOKS, select=()) -> list[Path]:
    """The numbered notebooks (NN_*.py) that hold exercises; `select` as tutorial.discover."""
    return [p for p in tutorial.discover(folder, select) if test_cells(tutorial.read_notebook(p))]


# ---------------------------------------------------------------------------------------------
# Student versions: nbgrader's preprocessors.
# ---------------------------------------------------------------------------------------------
def _nbgrader_preprocessors():
    try:
        from nbgrader.preprocessors import (
            CheckCellMetadata,
            ClearHiddenTests,
            ClearOutput,
            ClearSolutions,
            LockCells,
        )
    except ImportError as err:
        raise RuntimeError("assignments need nbgrader: `pip install nbgrader` (the `notebooks` "
                           f"extra of ssmamba_lite installs it) ({err})") from err
    return [CheckCellMetadata(), ClearSolutions(), ClearHiddenTests(), LockCells(), ClearOutput()]


def student_version(nb, name: str = "notebook"):
    """A copy of `nb` with solutions replaced by stubs, hidden tests removed, graded cells
    locked and outputs cleared (nbgrader's CheckCellMetadata, ClearSolutions, ClearHiddenTests,
    LockCells, ClearOutput)."""
    nb = copy.deepcopy(nb)
    resources: dict = {}
    for pre in _nbgrader_preprocessors():
        try:
            nb, resources = pre.preprocess(nb, resources)
        except Exception as err:   # nbgrader raises RuntimeError / ValidationError
            raise ValueError(f"{name}: {type(pre).__name__}: {err}") from err
    nb.metadata.pop("jupytext", None)          # a plain notebook for students, no paired .py
    for cell in nb.cells:
        cell.metadata.pop("lines_to_next_cell", None)
    return nb


def build(out, folder=NOTEBOOKS, select=(), echo=print) -> dict:
    """Student versions of the notebooks with exercises into `out`/NN_name.ipynb, and
    `out`/assignments.json listing the exercises and their points. Returns the manifest."""
    import nbformat

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sources = assignment_notebooks(folder, select)
    if not sources:
        raise ValueError(f"no notebook in {folder} holds exercises (nbgrader test cells)")
    manifest = {"notebooks": [], "total_points": 0.0,
                "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    for path in sources:
        source = tutorial.read_notebook(path)
        student = student_version(source, path.name)
        target = out / f"{path.stem}.ipynb"
        nbformat.write(student, target)
        found = exercises(source)
        points = sum(e["points"] for e in found)
        manifest["notebooks"].append({"notebook": target.name, "source": path.name,
                                      "exercises": found, "points": points})
        manifest["total_points"] += points
        echo(f"{target}: {len(found)} exercise(s), {points:g} points")
    (out / "assignments.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------
# For the test cells: comparisons with a message that says how far off an answer is.
# ---------------------------------------------------------------------------------------------
def _as_tensor(value, what: str, like):
    import numpy as np
    import torch

    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, (np.ndarray, float, int, np.floating, np.integer)) and \
            not isinstance(value, bool):
        return torch.as_tensor(np.asarray(value))
    raise AssertionError(f"{what}: returned {type(value).__name__}, expected a tensor of shape "
                         f"{tuple(like.shape)}")


def assert_close(mine, reference, what: str, seed: int, rtol: float = 1e-5,
                 atol: float = 1e-6) -> None:
    """AssertionError naming the shape mismatch or the largest error, unless `mine` equals the
    library's `reference` to tolerance."""
    import torch

    ref = _as_tensor(reference, "reference", torch.empty(0))
    got = _as_tensor(mine, what, ref)
    if tuple(got.shape) != tuple(ref.shape):
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, but the reference gives "
                             f"{tuple(ref.shape)} (random input, seed {seed})")
    got, ref = got.double(), ref.double()
    if not torch.allclose(got, ref, rtol=rtol, atol=atol):
        err = (got - ref).abs().max().item()
        raise AssertionError(f"{what}: max abs error {err:.3g} vs the library's reference on "
                             f"random input (seed {seed})")


def assert_equal(mine, reference, what: str) -> None:
    """AssertionError naming the first differing entry, unless `mine` equals `reference`."""
    import torch

    ref = _as_tensor(reference, "reference", torch.empty(0))
    got = _as_tensor(mine, what, ref)
    if tuple(got.shape) != tuple(ref.shape):
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, but the reference gives "
                             f"{tuple(ref.shape)}")
    diff = (got != ref).nonzero()
    if len(diff):
        at = tuple(diff[0].tolist())
        raise AssertionError(f"{what}: {len(diff)} of {ref.numel()} entries differ from the "
                             f"library's; the first at {at if len(at) > 1 else at[0]}: yours "
                             f"{got[at].item()}, reference {ref[at].item()}")


# ---------------------------------------------------------------------------------------------
# Command line: `ssmamba-lite assignments build | grade`.
# ---------------------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    p = subparsers.add_parser("assignments", help="course assignments: student versions of the "
                              "notebooks, autograding of submissions")
    sub = p.add_subparsers(dest="assignments_command", required=True)
    b = sub.add_parser("build", help="student notebooks (solutions stubbed, hidden tests removed)")
    b.add_argument("--out", required=True, help="folder for the student notebooks")
    b.add_argument("notebooks", nargs="*", help="name prefixes (e.g. 02 04); default: all")
    b.add_argument("--notebooks-dir", default=str(NOTEBOOKS), help="the course notebooks")
    b.set_defaults(func=_build)
    g = sub.add_parser("grade", help="execute submissions, run the hidden tests, write reports")
    g.add_argument("submissions", nargs="+", metavar="NOTEBOOK",
                   help="submitted .ipynb files, or folders of them")
    g.add_argument("--out", default=None,
                   help="report folder (default: runs/grades/<timestamp> under the current one)")
    g.add_argument("--source", default=None,
                   help="the course notebook to grade against (default: found by grade ids)")
    g.add_argument("--notebooks-dir", default=str(NOTEBOOKS), help="the course notebooks")
    g.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="set a notebook parameter (repeatable)")
    g.add_argument("--cell-timeout", type=float, default=300,
                   help="seconds a cell may run before it is interrupted (default: 300)")
    g.add_argument("--all-cells", action="store_true",
                   help="also run the cells after the last test cell (they cannot change a score)")
    g.set_defaults(func=_grade)


def _build(args) -> int:
    manifest = build(args.out, args.notebooks_dir, args.notebooks)
    print(f"{len(manifest['notebooks'])} student notebook(s), {manifest['total_points']:g} "
          f"points in all: {Path(args.out) / 'assignments.json'}")
    return 0


def _grade(args) -> int:
    from ssmamba_lite import autograde

    params = {name: tutorial.parse_value(text) for name, text in args.parameter}
    out = Path(args.out or Path("runs") / "grades" / time.strftime("%Y%m%d-%H%M%S"))
    results = autograde.grade_all(args.submissions, out, source=args.source,
                                  folder=args.notebooks_dir, parameters=params,
                                  cell_timeout=args.cell_timeout or None,
                                  all_cells=args.all_cells)
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"ssmamba-lite assignments grade: error: {r['error']}", file=sys.stderr)
    return 2 if failed or not results else 0
