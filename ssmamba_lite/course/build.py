"""Student versions of the course notebooks, made by nbgrader's own preprocessors.

    ssmamba-lite assignments build --out DIR     student notebooks + assignments.json (points)

Every `### BEGIN SOLUTION` ... `### END SOLUTION` region becomes nbgrader's stub, every
`### BEGIN HIDDEN TESTS` ... `### END HIDDEN TESTS` region is removed, graded cells are locked
and outputs cleared (exercises.py describes the cells).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from ssmamba_lite.course.exercises import assignment_notebooks, exercises
from ssmamba_lite.course.runner import NOTEBOOKS, read_notebook


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
        source = read_notebook(path)
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
