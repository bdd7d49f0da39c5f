"""Autograding: run a submitted notebook headlessly and score its exercises.

nbgrader's autograde model, without its course database:
  1. The assignment is found among the course notebooks, by the nbgrader grade ids in the
     submission (else by its file name, or `source=`).
  2. Every test cell ("grade": true) is replaced by the course's own, hidden tests included; a
     test cell the student deleted is put back after its exercise. Cells after the last test
     cell cannot change a score and are dropped (all_cells=True keeps them).
  3. papermill runs it (python3 kernel, small parameters, a time limit per cell) with errors
     allowed: a failing cell is recorded and the next one runs.
  4. A test cell earns its points when it ran without an error (nbgrader's `determine_grade`;
     output on stderr, such as warnings, costs nothing here), else 0 with the error as message.
Each test cell imports what it needs and uses only its own exercise, so a wrong exercise costs
its own points only, and a crash elsewhere costs only the exercises it keeps from being defined.

Reports: report.json and report.md beside the executed notebook; a folder of submissions
also gets grades.csv and summary.md.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import time
from pathlib import Path

from ssmamba_lite.course.exercises import assignment_notebooks, exercise_id, nbgrader_meta
from ssmamba_lite.course.runner import KERNELSPEC, NOTEBOOKS, notebook_parameters, read_notebook

# Small values for the parameters a notebook declares: grading is about the exercises.
GRADING_PARAMETERS = dict(
    image_size=32, epochs=1, batch_size=8, seed=0, progress=False, max_steps_per_epoch=2,
    model="ssmamba_lite_cpu", model_args={}, pretrain_epochs=1, pretrain_max_steps=2,
    lengths=[16, 64], repeats=1, n_show=4, d_inner=8, d_state=4, grid=4)
CELL = "autograde_cell"     # metadata: the cell's number in the submission (1-based)


def read_submission(path):
    """The notebook at `path` (.ipynb, or a jupytext .py); clear errors when it is not one."""
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such notebook: {path}")
    try:
        nb = read_notebook(path) if path.suffix == ".py" else \
            nbformat.read(path, as_version=4)
    except Exception as err:   # not JSON, not a notebook
        raise ValueError(f"{path} is not a notebook ({type(err).__name__}: {err})") from err
    if not isinstance(nb.get("cells"), list):
        raise ValueError(f"{path} is not a notebook (no cells)")
    return nb


def _grade_ids(nb) -> set:
    return {nbgrader_meta(c).get("grade_id") for c in nb.cells} - {None}


def find_source(nb, path, folder=NOTEBOOKS) -> Path:
    """The course notebook `nb` (read from `path`) is a submission of."""
    candidates = assignment_notebooks(folder)
    ids = _grade_ids(nb)
    overlap = {p: len(ids & _grade_ids(read_notebook(p))) for p in candidates}
    best = max(candidates, key=lambda p: overlap[p], default=None)
    if best is not None and overlap[best]:
        return best
    named = [p for p in candidates if p.stem in Path(path).name]
    if len(named) == 1:
        return named[0]
    raise ValueError(f"cannot tell which assignment {path} is: it holds no exercise cell of "
                     f"{[p.stem for p in candidates]} and its name none of theirs; pass --source")


def graded_notebook(submission, source, all_cells: bool = False):
    """The submission with the course's test cells (hidden tests included) in place."""
    import nbformat

    nb = copy.deepcopy(submission)
    for i, cell in enumerate(nb.cells, 1):
        cell.metadata[CELL] = i
    last_solution = None
    for cell in source.cells:
        meta = nbgrader_meta(cell)
        if meta.get("solution"):
            last_solution = meta.get("grade_id")
        if not (meta.get("grade") and cell.cell_type == "code"):
            continue
        test = nbformat.v4.new_code_cell(cell.source, metadata=copy.deepcopy(cell.metadata))
        where = [i for i, c in enumerate(nb.cells) if nbgrader_meta(c).get("grade_id") == meta["grade_id"]]
        if where:
            test.metadata[CELL] = nb.cells[where[0]].metadata.get(CELL)
            nb.cells[where[0]] = test
            continue
        after = [i for i, c in enumerate(nb.cells) if last_solution is not None
                 and nbgrader_meta(c).get("grade_id") == last_solution]
        nb.cells.insert(after[0] + 1 if after else len(nb.cells), test)
    if not all_cells:
        last = max(i for i, c in enumerate(nb.cells) if nbgrader_meta(c).get("grade"))
        del nb.cells[last + 1:]
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    return nb


def execute_submission(nb, executed: Path, parameters: dict, cwd,
                       cell_timeout: float | None) -> str:
    """Run `nb` with papermill into `executed`, errors allowed (cells after a failing one still
    run; one running past `cell_timeout` is interrupted). Returns why execution stopped early
    ('' when every cell ran); raises when no cell could run at all (no kernel, ...)."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # as in the Makefile and tutorial
    stopped = ""
    try:
        papermill.execute_notebook(nb, str(executed), parameters=parameters, kernel_name="python3",
                                   cwd=str(cwd), progress_bar=False, execution_timeout=cell_timeout,
                                   allow_errors=True, interrupt_on_timeout=True,
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except PapermillExecutionError:
        pass                                               # errors are in the executed notebook
    except Exception as err:                               # the kernel died, ...
        stopped = f"{type(err).__name__}: {err}".strip()
    ran = executed.is_file() and any(c.get("execution_count") for c in
                                     nbformat.read(executed, as_version=4).cells)
    if not ran:
        raise RuntimeError(f"the notebook could not be run: {stopped or 'no cell executed'}")
    return stopped


def _error(cell):
    return next((o for o in cell.get("outputs", []) if o.output_type == "error"), None)


def _where(cell) -> str:
    n = cell.metadata.get(CELL)
    return f"cell {n}" if n else f"test cell {nbgrader_meta(cell).get('grade_id')} (added)"


def _message(err, cell_timeout) -> str:
    value = " ".join(str(err.evalue).split())[:400]
    if err.ename == "NotImplementedError":
        return "NotImplementedError: not attempted (the exercise still raises NotImplementedError)"
    if err.ename == "NameError":
        return f"NameError: {value} (did the exercise cell run without an error?)"
    if err.ename == "KeyboardInterrupt":
        return f"timed out: interrupted after {cell_timeout:g} s"
    return f"{err.ename}: {value}" if value else f"{err.ename} (a check failed)"


def score(executed_nb, source_nb, cell_timeout=None) -> list[dict]:
    """Points of every test cell of `source_nb` in the executed notebook."""
    from nbgrader.utils import determine_grade

    cells = {nbgrader_meta(c).get("grade_id"): c for c in executed_nb.cells}
    rows = []
    for test in source_nb.cells:
        meta = nbgrader_meta(test)
        if not (meta.get("grade") and test.cell_type == "code"):
            continue
        cell = cells.get(meta["grade_id"])
        possible = float(meta.get("points", 0))
        row = {"id": exercise_id(test), "grade_id": meta["grade_id"], "points": 0.0,
               "max_points": possible, "cell": cell.metadata.get(CELL) if cell else None}
        err = _error(cell) if cell else None
        if cell is None or (cell.get("execution_count") is None and err is None):
            row.update(status="not run", message="not run: execution stopped before this cell")
        elif err is not None:
            row.update(status="failed", message=_message(err, cell_timeout))
        else:
            graded = copy.deepcopy(cell)        # nbgrader gives 0 for any stderr output
            graded.outputs = [o for o in graded.outputs if o.get("name") != "stderr"]
            points = determine_grade(graded)[0]
            row.update(points=float(points or 0), status="passed" if points == possible else
                       "partial", message="all checks passed")
        rows.append(row)
    return rows


def grade(submission, out, source=None, folder=NOTEBOOKS, parameters=None,
          cell_timeout: float | None = 300, all_cells: bool = False) -> dict:
    """Grade one submitted notebook: `out`/report.json, report.md and the executed notebook."""
    import nbformat

    t0 = time.perf_counter()
    submission, out = Path(submission), Path(out)
    nb = read_submission(submission)
    source = Path(source) if source else find_source(nb, submission, folder)
    source_nb = read_notebook(source)
    declared = notebook_parameters(source)
    params = {k: v for k, v in GRADING_PARAMETERS.items() if k in declared}
    params.update(parameters or {})
    params["output_dir"] = str((out / "outputs").resolve())
    out.mkdir(parents=True, exist_ok=True)
    executed = out / f"{submission.stem}.ipynb"
    stopped = execute_submission(graded_notebook(nb, source_nb, all_cells), executed, params,
                                 source.parent, cell_timeout)
    ran = nbformat.read(executed, as_version=4)
    rows = score(ran, source_nb, cell_timeout)
    errors = []
    for cell in ran.cells:
        err = _error(cell) if CELL in cell.metadata or nbgrader_meta(cell).get("grade") else None
        if err is not None:
            value = " ".join(str(err.evalue).split())[:200]
            errors.append(f"{_where(cell)}: {err.ename}" + (f": {value}" if value else ""))
    report = {"submission": str(submission), "assignment": source.stem,
              "score": sum(r["points"] for r in rows),
              "max_score": sum(r["max_points"] for r in rows), "exercises": rows,
              "errors": errors, "stopped": stopped, "executed": str(executed),
              "graded": time.strftime("%Y-%m-%d %H:%M:%S"),
              "seconds": round(time.perf_counter() - t0, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    """The report as Markdown: a table of the exercises and the errors seen while running."""
    lines = [f"# Grade report: {report['submission']}", "",
             f"Assignment `{report['assignment']}`: **{report['score']:g} / "
             f"{report['max_score']:g} points** (graded {report['graded']}, "
             f"{report['seconds']:g} s)", "", "| exercise | points | result |", "|---|---|---|"]
    for r in report["exercises"]:
        msg = r["message"].replace("|", "\\|")
        lines.append(f"| {r['id']} | {r['points']:g} / {r['max_points']:g} | {msg} |")
    if report["stopped"]:
        lines += ["", f"Execution stopped early: {report['stopped']}"]
    if report["errors"]:
        lines += ["", "Errors while running the notebook (a failing test cell costs its "
                  "exercise's points; other errors cost nothing by themselves):", ""]
        lines += [f"- {e}" for e in report["errors"]]
    lines += ["", f"Executed notebook: `{report['executed']}`", ""]
    return "\n".join(lines)


def _expand(paths) -> list[Path]:
    found = []
    for p in map(Path, paths):
        found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts) \
            if p.is_dir() else [p]
    return found


def grade_all(paths, out, echo=print, **kwargs) -> list[dict]:
    """Grade each submission (folders: every .ipynb in them). One submission: reports in `out`;
    several: in `out`/<name>/, plus `out`/grades.csv and `out`/summary.md. A submission that
    cannot be graded gets {"submission", "error"} and the others go on."""
    subs, out = _expand(paths), Path(out)
    stems = [s.stem for s in subs]
    results = []
    for s in subs:
        name = s.stem if stems.count(s.stem) == 1 else f"{s.parent.name}-{s.stem}"
        target = out if len(subs) == 1 else out / name
        try:
            r = grade(s, target, **kwargs)
            echo(f"{s}: {r['score']:g} / {r['max_score']:g} points -> {target / 'report.md'}")
        except Exception as err:   # report it, grade the others
            why = f"{type(err).__name__}: {err}" if isinstance(err, RuntimeError) else str(err)
            r = {"submission": str(s), "error": why if str(s) in why else f"{s}: {why}"}
        results.append(r)
    if len(subs) > 1:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "grades.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["submission", "assignment", "exercise", "points", "max_points", "message"])
            for r in results:
                for e in r.get("exercises", [{"id": "", "points": "", "max_points": "",
                                              "message": r.get("error", "")}]):
                    w.writerow([r["submission"], r.get("assignment", ""), e["id"], e["points"],
                                e["max_points"], e["message"]])
        rows = [f"| {r['submission']} | " + (f"{r['score']:g} / {r['max_score']:g} |" if
                "score" in r else f"not graded: {r['error']} |") for r in results]
        (out / "summary.md").write_text("| submission | points |\n|---|---|\n" +
                                        "\n".join(rows) + "\n")
    return results
