"""Course assignments: the exercises in the notebooks, and the checks their test cells use.

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

    ssmamba-lite assignments build --out DIR     student notebooks + assignments.json (points):
                                                 build.py
    ssmamba-lite assignments grade NOTEBOOK...   autograding: grade.py
"""

from __future__ import annotations

from pathlib import Path

from ssmamba_lite.course.runner import NOTEBOOKS, discover, read_notebook


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
    """The numbered notebooks (NN_*.py) that hold exercises; `select` as runner.discover."""
    return [p for p in discover(folder, select) if test_cells(read_notebook(p))]


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
