"""The course: notebooks/NN_*.py paired with their .ipynb, a parameters cell with the same names
everywhere, and every notebook executed headlessly by papermill with small parameters on real
data (executed copies in build/notebooks/). A failing cell fails its test."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from ssmamba_lite.cli import main
from ssmamba_lite.course import runner
from tests.conftest import REPO, shared_data_dir

NOTEBOOKS = REPO / "notebooks"
BUILD = REPO / "build" / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]*.py"))            # the course and its helpers (06a)
COURSE = runner.discover(NOTEBOOKS)                      # what `make tutorial` runs
SHARED_PREFIX = "../../shared/data"                        # defaults point here (from notebooks/)
CELL_TIMEOUT = 300                                         # seconds; small runs need far less

# Small values for every notebook that declares them (the rest keep their defaults) ...
SMALL = dict(image_size=32, epochs=1, batch_size=16, seed=0, model="ssmamba_lite_cpu",
             max_steps_per_epoch=2, pretrain_epochs=1, pretrain_max_steps=2, progress=False,
             lengths=[16, 64], repeats=1, n_seeds=1, n_show=4, tiles_per_class=3, n_tiles=3)
# ... and per notebook (name prefix): which real data, and anything else it needs. Notebooks
# not listed here get only `epochs=1`, `seed=0` and the data root of the tests.
PER_NOTEBOOK = {
    "00": {"data": "kather2016_mini", "image_size": 64, "batch_size": 2},
    "01": {"data": "nct_crc_he_mini", "dataset": "", "image_size": 64, "batch_size": 3},
    "02": {"data": "kather2016_mini", "batch_size": 1, "d_inner": 8, "d_state": 4},
    "03": {"data": "kather2016_mini", "image_size": 16, "grid": 4},
    "04": {"data": "idc_breast_unlabeled"},
    "05": {"data": "idc_breast"},
    "06": {"data": "idc_breast"},
    "07": {"data": "kather2016_mini", "image_size": 64, "label_fraction": 1.0},
    "08": {"data": "idc_breast", "zooms": [0.5, 1.0, 2.0]},
    "09": {"small": False},
}


def small_parameters(nb: Path, data_root: Path) -> dict:
    """The parameters a notebook runs with in this test."""
    declared = runner.notebook_parameters(nb)
    own = dict(PER_NOTEBOOK.get(nb.stem[:2], {"small": False}))
    data = own.pop("data", None)
    base = SMALL if own.pop("small", True) else {"epochs": 1, "seed": 0}
    params = {k: v for k, v in base.items() if k in declared}
    for name, default in declared.items():                 # shared data: wherever it really is
        if isinstance(default, str) and default.startswith(SHARED_PREFIX):
            params[name] = str(data_root / default[len(SHARED_PREFIX):].lstrip("/"))
    if data is not None:
        params["data_dir"] = str(data_root / data)
    params.update(own)
    return params


@pytest.fixture(scope="module")
def data_root() -> Path:
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data folder {root} is absent (set SSMAMBA_TEST_DATA): the notebooks "
                    f"need real H&E tiles to run")
    return root


# ---------------------------------------------------------------------------------------------
# Static checks: pairing, parameters, the data check.
# ---------------------------------------------------------------------------------------------
def _cells(nb):
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_py_and_ipynb_are_in_sync(path):
    ipynb = path.with_suffix(".ipynb")
    assert ipynb.is_file(), (f"{ipynb.name} is missing: run `.venv/bin/jupytext --set-formats "
                             f"ipynb,py:percent {path}` then `--sync`")
    py_cells, nb_cells = _cells(jupytext.read(path)), _cells(jupytext.read(ipynb))
    assert len(py_cells) == len(nb_cells), f"{path.name}: run `jupytext --sync {path}`"
    for i, (a, b) in enumerate(zip(py_cells, nb_cells)):
        assert a == b, f"{path.name} cell {i} differs from {ipynb.name}: run `jupytext --sync {path}`"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_ipynb_is_committed_without_outputs(path):
    if not path.with_suffix(".ipynb").is_file():
        pytest.skip(f"{path.with_suffix('.ipynb').name} is missing (test_py_and_ipynb_are_in_sync fails)")
    nb = nbformat.read(path.with_suffix(".ipynb"), as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", \
        f"{path.name}: set the kernel with `jupytext --set-kernel python3 {path}`"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.with_suffix('.ipynb').name} cell {i} has outputs: clear them"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_parameters_cell_has_the_common_names(path):
    params = runner.notebook_parameters(path)
    missing = [n for n in runner.REQUIRED_PARAMETERS if n not in params]
    assert not missing, f"{path.name}: parameters cell lacks {missing}"
    assert params["device"] == "auto"
    assert isinstance(params["data_dir"], str) and isinstance(params["output_dir"], str)


@pytest.mark.parametrize("path", [p for p in ALL if not p.stem.startswith(("01", "09"))],
                         ids=lambda p: p.stem)
def test_first_cells_check_the_data(path):
    """Every notebook but 01 (which downloads) stops at once when data_dir is missing."""
    nb = jupytext.read(path)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    first_code = next(c for c in nb.cells[i + 1:] if c.cell_type == "code")
    assert "require_data(data_dir" in first_code.source


def test_the_runner_finds_the_course():
    names = [p.stem for p in COURSE]
    assert names[:9] == ["00_setup_and_tour", "01_data", "02_selective_scan_from_scratch",
                         "03_lpr_and_dms", "04_mamim_pretraining", "05_finetuning",
                         "06_ablations", "07_explainability", "08_cross_magnification"]
    assert "06a_ablation_cell" not in names                 # run by 06, not on its own
    assert [p.stem for p in runner.discover(NOTEBOOKS, ["05", "02_selective"])] == \
        ["02_selective_scan_from_scratch", "05_finetuning"]
    with pytest.raises(ValueError, match="no notebook matches"):
        runner.discover(NOTEBOOKS, ["42"])


def test_runner_parses_parameters_and_lists(capsys):
    assert runner.parse_value("3") == 3 and runner.parse_value("0.5") == 0.5
    assert runner.parse_value('{"use_lpr": false}') == {"use_lpr": False}
    assert runner.parse_value("[1, 2]") == [1, 2] and runner.parse_value("cpu") == "cpu"
    assert runner.parse_value("True") is True
    assert main(["tutorial", "--list", "02"]) == 0
    assert "lengths=" in capsys.readouterr().out
    assert main(["tutorial", "99"]) == 2


def test_require_data_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run notebooks/01_data .*dataset='idc-breast'"):
        runner.require_data(tmp_path / "absent", dataset="idc-breast")
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        runner.require_data(tmp_path)


# ---------------------------------------------------------------------------------------------
# Execution: every notebook, headless, small parameters, real data.
# ---------------------------------------------------------------------------------------------
def _timings_file() -> Path:
    return BUILD / "timings.json"


@pytest.mark.slow
@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_notebook_runs(path, data_root):
    params = small_parameters(path, data_root)
    executed, folder = BUILD / f"{path.stem}.ipynb", BUILD / path.stem
    shutil.rmtree(folder, ignore_errors=True)
    executed.unlink(missing_ok=True)
    params["output_dir"] = str(folder)
    t0 = time.perf_counter()
    # Raises on the first failing cell; a cell that runs (or waits) past the limit fails too.
    runner.execute_notebook(path, executed, params, cwd=NOTEBOOKS, cell_timeout=CELL_TIMEOUT)
    seconds = time.perf_counter() - t0
    timings = json.loads(_timings_file().read_text()) if _timings_file().is_file() else {}
    timings[path.stem] = round(seconds, 1)
    _timings_file().write_text(json.dumps(timings, indent=2) + "\n")
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    if path.stem in {p.stem for p in COURSE[:9]}:             # ours save their figures as PNG
        assert list(folder.glob("**/*.png")), f"{path.stem} saved no figure in {folder}"


@pytest.mark.slow
def test_a_notebook_without_its_data_stops_with_a_clear_message(tmp_path):
    lines = []
    results = runner.run_course([NOTEBOOKS / "00_setup_and_tour.py"], tmp_path,
                                  {"data_dir": str(tmp_path / "no_such_folder")},
                                  cell_timeout=CELL_TIMEOUT,
                                  echo=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert not results[0].ok
    assert "FileNotFoundError" in results[0].error and "01_data" in results[0].error
    assert any("FAILED" in line for line in lines)
    assert "1 notebook(s) failed" in runner.summary(results, tmp_path)
