"""The course: notebooks/NN_*.py paired with their .ipynb, a parameters cell with the same names
everywhere, and every notebook executed headlessly by papermill with small parameters on the
real sample sets inside the package (executed copies in build/notebooks/). A failing cell
fails its test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from ssmamba_lite.cli import main
from ssmamba_lite.course import runner
from ssmamba_lite.engine.data import sample_dir
from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"
BUILD = REPO / "build" / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]*.py"))            # the course and its helpers (06a)
COURSE = runner.discover(NOTEBOOKS)                      # what `make tutorial` runs
CELL_TIMEOUT = 300                                         # seconds; small runs need far less

CLASS_FOLDERS = "<class folders>"   # a plain class-folder tree of other classes and tile sizes
# Small values for every notebook that declares them (the rest keep their defaults) ...
SMALL = dict(image_size=32, epochs=1, batch_size=16, seed=0, model="ssmamba_lite_cpu",
             max_steps_per_epoch=2, pretrain_epochs=1, pretrain_max_steps=2, progress=False,
             lengths=[16, 64], repeats=1, n_seeds=1, n_show=4, tiles_per_class=3, n_tiles=3)
# ... and per notebook (name prefix): other data than its default, and anything else it
# needs. Notebooks not listed here get only `epochs=1` and `seed=0`.
PER_NOTEBOOK = {
    "00": {"image_size": 64, "batch_size": 2},
    "01": {"data_dir": "sample:nct-crc-he", "dataset": "", "image_size": 64, "batch_size": 3},
    "02": {"batch_size": 1, "d_inner": 8, "d_state": 4},
    "03": {"image_size": 16, "grid": 4},
    "04": {"retrain": True},          # trains even where the shipped encoder would fit
    "05": {"data_dir": CLASS_FOLDERS},
    "06": {},
    "07": {"data_dir": CLASS_FOLDERS, "image_size": 64, "label_fraction": 1.0},
    "08": {"data_dir": CLASS_FOLDERS, "zooms": [0.5, 1.0, 2.0]},
    "09": {"small": False},
}


def small_parameters(nb: Path) -> dict:
    """The parameters a notebook runs with in this test."""
    declared = runner.notebook_parameters(nb)
    own = dict(PER_NOTEBOOK.get(nb.stem[:2], {"small": False}))
    base = SMALL if own.pop("small", True) else {"epochs": 1, "seed": 0}
    params = {k: v for k, v in base.items() if k in declared}
    params.update(own)
    return params


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
    assert params.get("device", "auto") == "auto", f"{path.name}: device {params['device']!r}"
    assert isinstance(params["data_dir"], str) and isinstance(params["output_dir"], str)
    # defaults that work from any folder: the samples inside the package, nothing above ./
    assert params["data_dir"].startswith("sample:"), f"{path.name}: data_dir {params['data_dir']}"
    for name, value in params.items():
        if runner.is_path_parameter(name) and isinstance(value, str):
            assert not value.startswith(("..", "/")), f"{path.name}: {name} = {value!r}"


@pytest.mark.parametrize("path", [p for p in ALL if not p.stem.startswith("01")],
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


def copy_class_folders(root: Path) -> Path:
    """Kather 2016 as plain class folders under `root` (8 classes, 150 and 224 px; no
    labels.csv)."""
    for image in sample_dir("kather2016").glob("*/*.png"):
        (root / image.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / image.parent.name / image.name)
    return root


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory) -> Path:
    return copy_class_folders(tmp_path_factory.mktemp("class_folders"))


@pytest.mark.slow
@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_notebook_runs(path, class_folders, tmp_path):
    params = small_parameters(path)
    if params.get("data_dir") == CLASS_FOLDERS:
        params["data_dir"] = str(class_folders)
    executed, folder = BUILD / f"{path.stem}.ipynb", BUILD / path.stem
    shutil.rmtree(folder, ignore_errors=True)
    executed.unlink(missing_ok=True)
    params["output_dir"] = str(folder)
    t0 = time.perf_counter()
    # Raises on the first failing cell; a cell that runs (or waits) past the limit fails too.
    # Run from an empty folder: nothing may depend on the current directory.
    runner.execute_notebook(path, executed, params, cwd=tmp_path, cell_timeout=CELL_TIMEOUT)
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


@pytest.mark.slow
def test_a_fresh_clone_runs_on_its_own_sample(tmp_path):
    """The repository's files alone (what a clone holds: tracked and to-be-committed files,
    no ../shared beside it, no ignored build outputs) find their sample data and run notebook
    00 from another folder."""
    clone = tmp_path / "checkout" / "ssmamba_lite_repo"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    assert not (clone.parent / "shared").exists() and not (clone / ".venv").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(clone)}
    code = ("import ssmamba_lite.engine.data as d, sys; "
            "print(d.sample_dir('idc-breast')); print(d.resolve_data('sample:kather2016')); "
            "print(len(d.own_split(d.sample_dir('idc-breast'))['val']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    idc, kather, n_val = r.stdout.split()
    assert idc == str(clone / "ssmamba_lite" / "sample_data" / "idc-breast")
    assert kather.startswith(str(clone)) and n_val == "258"
    r = subprocess.run([sys.executable, "-m", "ssmamba_lite.cli", "tutorial", "00", "--out",
                        str(tmp_path / "run"), "--notebooks-dir", str(clone / "notebooks"),
                        "-p", "image_size", "64", "-p", "batch_size", "2"],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    executed = nbformat.read(tmp_path / "run" / "00_setup_and_tour.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert str(clone / "ssmamba_lite" / "sample_data" / "kather2016") in text


# ---------------------------------------------------------------------------------------------
# The chain: 04 -> 05 -> 07 hand their results on (course/handoff.py).
# ---------------------------------------------------------------------------------------------
def _printed(executed: Path) -> str:
    nb = nbformat.read(executed, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)


@pytest.mark.slow
def test_the_chain_loads_what_the_predecessor_wrote(tmp_path):
    """In one run folder, 05 fine-tunes from the encoder 04 wrote and 07 explains the
    classifier 05 wrote (small settings, on which the shipped weights do not fit)."""
    chain = [p for p in COURSE if p.stem[:2] in ("04", "05", "07")]
    small = {k: v for k, v in SMALL.items() if k != "model"}
    results = runner.run_course(chain, tmp_path / "run", small, {"04": {"retrain": True}},
                                cwd=tmp_path, cell_timeout=CELL_TIMEOUT,
                                echo=lambda *a, **k: None)
    assert all(r.ok for r in results), [r.error for r in results]
    run = tmp_path / "run"
    assert "retrain=True: training the MAMIM encoder here" in _printed(
        run / "04_mamim_pretraining.ipynb")
    assert (f"loaded the MAMIM encoder made by 04_mamim_pretraining in this run: "
            f"{run / '04_mamim_pretraining' / 'mamim' / 'encoder.safetensors'}") in \
        _printed(run / "05_finetuning.ipynb")
    assert (f"loaded the IDC classifier fine-tuned from MAMIM made by 05_finetuning in this "
            f"run: {run / '05_finetuning' / 'from_MAMIM' / 'model.safetensors'}") in \
        _printed(run / "07_explainability.ipynb")


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "ssmamba_lite" / "sample_data" / "weights" / "README.md")
                    .is_file(), reason="no shipped weights")
def test_alone_04_and_07_load_the_shipped_weights(tmp_path):
    """Opened alone at their default data and size, 04 shows the shipped encoder's
    reconstructions and 07 explains the shipped classifier, without training."""
    chain = [p for p in COURSE if p.stem[:2] in ("04", "07")]
    small = {"batch_size": 16, "n_show": 4, "n_tiles": 3, "progress": False}
    results = runner.run_course(chain, tmp_path / "run", small, cwd=tmp_path,
                                cell_timeout=CELL_TIMEOUT, echo=lambda *a, **k: None)
    assert all(r.ok for r in results), [r.error for r in results]
    text04 = _printed(tmp_path / "run" / "04_mamim_pretraining.ipynb")
    assert "loaded the shipped MAMIM encoder (ssmamba_lite/sample_data/weights/mamim/" \
           "encoder.safetensors, made by `ssmamba-lite course weights`" in text04
    assert "shipped hierarchical decoder loaded: masked loss" in text04
    assert "loaded the shipped IDC classifier" in _printed(
        tmp_path / "run" / "07_explainability.ipynb")
    assert not (tmp_path / "run" / "07_explainability" / "finetune").exists()
