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
                   implementation on random inputs: the reference is computed first, then the
                   student's function runs inside `with forbidden(library_fn, ...,
                   exercise=ID):`, so an answer that merely calls the library scores 0.

In notebooks/NN_name.py (jupytext percent format) the metadata sits on the cell's first line,
`# %% nbgrader={"grade": true, "grade_id": "lpr_block_tests", "locked": true, "points": 2, ...}`,
so the course notebooks and the assignments are one source; JupyterLab's nbgrader "Create
Assignment" toolbar edits the same metadata in the paired .ipynb.

    ssmamba-lite assignments build --out DIR     student notebooks + assignments.json (points):
                                                 build.py
    ssmamba-lite assignments grade NOTEBOOK...   autograding: grade.py
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from pathlib import Path
from types import FunctionType

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


# ---------------------------------------------------------------------------------------------
# For the test cells: the library functions an exercise asks for are unavailable while the
# student's code runs.
# ---------------------------------------------------------------------------------------------
# A student who writes `from ssmamba_lite.scan import selective_scan_reference as mine` before
# the test cell holds the function object itself, so replacing the module attribute would not
# stop the call. `forbidden` changes the objects in place instead, and puts them back after:
#     function        (a Python function) its __code__ is swapped for code that raises (aliases share the object;
#                     a decorator's __wrapped__ chain too)
#     class           the code of every method defined in its body, and its __init__ (added
#                     when the class only inherits one), so neither new nor existing
#                     instances, nor bound methods taken earlier, can be used
#     other callable  (numba dispatcher, torch.library operator, ...): its __class__ is swapped
#                     for a subclass whose __call__ raises
#     "module:name"   (or "module.name") imported first; skipped when the module cannot be
#                     imported, since then the student cannot call it either
ADDED = object()      # undo marker: the attribute did not exist before


def _raising_code(message: str, n_free: int):
    """A code object that raises RuntimeError(message), with `n_free` free variables (a
    function's __code__ may only be replaced by code with as many as its closure has cells)."""
    names = [f"cell{i}" for i in range(n_free)]
    lines = ["def outer():", *(f"    {n} = None" for n in names),
             "    def forbidden_call(*args, **kwargs):",
             *([f"        ({', '.join(names)},)"] if names else []),
             f"        raise RuntimeError({message!r})",
             "    return forbidden_call"]
    scope: dict = {}
    exec("\n".join(lines), scope)                       # noqa: S102  (fixed template)
    return scope["outer"]().__code__


def _resolve(target):
    """(object, dotted name) of a target; (None, name) when its module cannot be imported."""
    if isinstance(target, str):
        module, _, name = target.rpartition(":") if ":" in target else target.rpartition(".")
        try:
            obj = importlib.import_module(module)
        except ImportError:
            return None, target.replace(":", ".")
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj, f"{module}.{name}"
    target = getattr(target, "__func__", target)         # a bound method: its function
    inner = getattr(target, "py_func", target)           # a numba dispatcher names its function
    name = getattr(inner, "__qualname__", None) or getattr(inner, "__name__", None) or repr(target)
    module = getattr(inner, "__module__", None)
    return target, f"{module}.{name}" if module else name


@contextmanager
def forbidden(*targets, exercise: str):
    """While the block runs, calling any of `targets` (functions, classes, callables or
    "module:name" strings) raises RuntimeError("exercise <exercise>: calling <name> is not
    allowed here: write it yourself"), however the caller got hold of it; everything is put
    back when the block ends, also on an error."""
    undo, done = [], set()

    def swap_code(fn, message):
        while isinstance(fn, FunctionType) and id(fn) not in done:
            done.add(id(fn))
            undo.append((fn, "__code__", fn.__code__))
            fn.__code__ = _raising_code(message, len(fn.__code__.co_freevars))
            fn = getattr(fn, "__wrapped__", None)

    try:
        for target in targets:
            obj, name = _resolve(target)
            message = f"exercise {exercise}: calling {name} is not allowed here: write it yourself"
            if obj is None or id(obj) in done:
                continue
            if isinstance(obj, type):
                done.add(id(obj))
                for value in list(vars(obj).values()):
                    swap_code(getattr(value, "__func__", value), message)
                if "__init__" not in vars(obj):
                    def init(self, *args, _message=message, **kwargs):
                        raise RuntimeError(_message)
                    obj.__init__ = init
                    undo.append((obj, "__init__", ADDED))
            elif isinstance(obj, FunctionType):
                swap_code(obj, message)
            elif callable(obj):
                done.add(id(obj))
                cls = obj.__class__

                def call(self, *args, _message=message, **kwargs):
                    raise RuntimeError(_message)
                undo.append((obj, "__class__", cls))
                obj.__class__ = type(cls.__name__, (cls,), {"__call__": call})
            else:
                raise TypeError(f"forbidden: {name} is not a function, class or callable")
        yield
    finally:
        for obj, attr, value in reversed(undo):
            if value is ADDED:
                delattr(obj, attr)
            else:
                setattr(obj, attr, value)
