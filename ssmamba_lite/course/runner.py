"""The course runner: execute the numbered notebooks headlessly with papermill.

    ssmamba-lite tutorial                         # every notebooks/NN_*.py -> runs/<timestamp>/
    ssmamba-lite tutorial 02 05 -p epochs 1       # some of them, with parameters
    ssmamba-lite tutorial --list                  # the notebooks and their parameters

The percent-format `notebooks/NN_name.py` files are the source of truth (jupytext); each is
executed with the `python3` kernel, in the notebooks/ folder (so relative default paths work),
into <out>/NN_name.ipynb, and its `output_dir` parameter is set to <out>/NN_name/, where its
figures (PNG) and results land. `-p key value` sets a parameter of every notebook that has it
(values are read as JSON or Python literals, else kept as text); relative paths given for
parameters ending in `_dir` or `_path` are taken from where you run the command.

Notebooks call `require_data` in their first cells: a missing data folder stops them with a
message that says what to run.
"""

from __future__ import annotations

import ast
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ssmamba_lite.engine.data import find_labelled, find_unlabelled, resolve_data, sample_names

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
# Every notebook declares these; the others (image_size, epochs, device, ...) only where used.
REQUIRED_PARAMETERS = ("data_dir", "output_dir", "seed")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


# ---------------------------------------------------------------------------------------------
# For the notebooks: the data check of their first cells.
# ---------------------------------------------------------------------------------------------
def require_data(data_dir, dataset: str = "", labelled: bool = True) -> Path:
    """`data_dir` (a path, "sample:NAME" or "data:NAME"; engine.data.resolve_data) as an
    absolute Path if it holds images, else an error that says what to run: a DataError naming
    an empty folder, a single class or an unreadable CSV, a FileNotFoundError for a missing
    folder (download it with notebook 01_data or `ssmamba-lite data download`)."""
    path = resolve_data(data_dir).resolve()
    if path.is_dir():
        (find_labelled if labelled else find_unlabelled)(path)   # a DataError names any problem
        return path
    name = dataset or "<name from `ssmamba-lite data list`>"
    raise FileNotFoundError(
        f"data_dir {str(data_dir)!r} does not exist (resolved: {path}). "
        f"Get the data first: run notebooks/01_data with data_dir={str(data_dir)!r} and "
        f"dataset={name!r} (e.g. `ssmamba-lite tutorial 01 -p data_dir {path} "
        f"-p dataset {name}`), or `ssmamba-lite data download {name} --root DIR`; or set "
        f"data_dir to a folder of class folders (or one with labels.csv)"
        + (" or of images" if not labelled else "") + f", or to a sample: "
        f"{', '.join('sample:' + n for n in sample_names())}.")


# ---------------------------------------------------------------------------------------------
# Finding notebooks and their parameters.
# ---------------------------------------------------------------------------------------------
def discover(folder=NOTEBOOKS, select=()) -> list[Path]:
    """notebooks/NN_*.py in order; `select` keeps those whose name starts with one of the
    given prefixes ("05", "05_finetuning") or equals a given stem."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.py"))
    if not select:
        return found
    picked = [p for p in found if any(p.stem == s or p.stem.startswith(s) for s in select)]
    missing = [s for s in select if not any(p.stem.startswith(s) for p in found)]
    if missing:
        raise ValueError(f"no notebook matches {missing}; known: {[p.stem for p in found]}")
    return picked


def read_notebook(path):
    """The notebook of a jupytext .py (or an .ipynb), with the python3 kernelspec set."""
    import jupytext

    nb = jupytext.read(str(path))
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def parameters_cell(nb):
    """The cell tagged `parameters`, or None."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell
    return None


def notebook_parameters(path) -> dict:
    """Names and default values of a notebook's parameters (its cell tagged `parameters`)."""
    cell = parameters_cell(read_notebook(path))
    if cell is None:
        raise ValueError(f"{path}: no cell tagged 'parameters'")
    values: dict = {}
    for node in ast.parse(cell.source).body:          # read, never run: literals only
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{path}, parameters cell line {node.lineno}: only `name = "
                             f"literal` lines belong there")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{path}, parameters cell line {node.lineno}: "
                             f"{node.targets[0].id} is not a literal") from None
    return {k: v for k, v in values.items() if not k.startswith("_")}


def parse_value(text: str):
    """A -p value: JSON, else a Python literal, else the text itself."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            pass
    return text


def is_path_parameter(name: str) -> bool:
    return name.endswith(("_dir", "_path"))


def command_line_parameter(name: str, text: str):
    """A `-p NAME VALUE` value: parsed (parse_value); a relative path given for a parameter
    ending in _dir or _path is taken from the current folder (notebooks run in notebooks/),
    "sample:NAME" and "data:NAME" are kept as they are."""
    value = parse_value(text)
    if is_path_parameter(name) and isinstance(value, str) and value and \
            not value.startswith(("sample:", "data:")) and \
            not Path(value).expanduser().is_absolute():
        value = str(Path(value).resolve())
    return value


# ---------------------------------------------------------------------------------------------
# Executing.
# ---------------------------------------------------------------------------------------------
@dataclass
class Result:
    notebook: str
    executed: Path
    seconds: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def execute_notebook(source, executed, parameters=None, cwd=NOTEBOOKS, kernel: str = "python3",
                     log_output: bool = False, cell_timeout: float | None = None) -> float:
    """Execute one notebook with papermill into `executed`; returns the seconds it took.
    Raises papermill's PapermillExecutionError (with the failing cell) when a cell fails, and
    a timeout error when a cell runs longer than `cell_timeout` seconds (None: no limit)."""
    import papermill

    # Kernels inherit this: idle OpenMP threads (PyTorch's, numba's) sleep instead of spinning,
    # as in the Makefile; spinning pools starve each other on a machine with few cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    executed = Path(executed)
    executed.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    papermill.execute_notebook(read_notebook(source), str(executed), parameters=parameters or {},
                               kernel_name=kernel, cwd=str(cwd), progress_bar=False,
                               log_output=log_output, execution_timeout=cell_timeout,
                               extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no start-up noise
    return time.perf_counter() - t0


def _error_line(err: Exception) -> str:
    name = getattr(err, "ename", type(err).__name__)
    value = getattr(err, "evalue", str(err))
    cell = getattr(err, "exec_count", None)
    where = f"cell [{cell}]: " if cell is not None else ""
    return f"{where}{name}: {value}".strip()


def run_course(notebooks, out, parameters=None, overrides=None, stop_on_error: bool = False,
               cwd=NOTEBOOKS, log_output: bool = False, cell_timeout: float | None = None,
               echo=print) -> list[Result]:
    """Execute `notebooks` (paths) into `out`/NN_name.ipynb with their figures in `out`/NN_name/.

    parameters: set in every notebook that declares them; overrides: {stem prefix: {name:
    value}} for one notebook. output_dir is always <out>/<stem>. Prints one line per notebook.
    """
    out = Path(out).resolve()
    results = []
    for i, nb in enumerate(notebooks, 1):
        declared = notebook_parameters(nb)
        params = {k: v for k, v in (parameters or {}).items() if k in declared}
        for prefix, extra in (overrides or {}).items():
            if nb.stem.startswith(prefix):
                params.update(extra)
        params["output_dir"] = str(out / nb.stem)
        executed = out / f"{nb.stem}.ipynb"
        echo(f"[{i}/{len(notebooks)}] {nb.stem} ...", end=" ", flush=True)
        t0 = time.perf_counter()
        try:
            execute_notebook(nb, executed, params, cwd=cwd, log_output=log_output,
                             cell_timeout=cell_timeout)
            results.append(Result(nb.stem, executed, time.perf_counter() - t0))
            echo(f"ok ({results[-1].seconds:.0f} s)", flush=True)
        except Exception as err:  # a failing cell, a missing kernel: report and go on
            results.append(Result(nb.stem, executed, time.perf_counter() - t0, _error_line(err)))
            echo(f"FAILED after {results[-1].seconds:.0f} s: {results[-1].error}", flush=True)
            if stop_on_error:
                break
    return results


def summary(results: list[Result], out) -> str:
    """Where the executed notebooks and their figures are, and what failed."""
    out = Path(out).resolve()
    figures = sorted(out.glob("*/**/*.png"))
    lines = [f"executed notebooks: {out}/NN_*.ipynb ({len(results)})",
             f"figures (PNG):      {out}/NN_*/ ({len(figures)} files)",
             f"total time:         {sum(r.seconds for r in results):.0f} s"]
    failed = [r for r in results if not r.ok]
    if failed:
        lines.append(f"{len(failed)} notebook(s) failed:")
        lines += [f"  {r.notebook}: {r.error} (see {r.executed})" for r in failed]
    return "\n".join(lines)
