"""The arm x seed grid runner of notebooks 06 and 08 (course/grid.py)."""

import pytest

from ssmamba_lite.course.grid import cell_name, run_grid


def test_every_cell_runs_once_arm_by_arm(capsys):
    visited = []

    def run_cell(arm, seed):
        visited.append((arm, seed))
        return {"score": len(arm) + seed}

    results = run_grid(["full", "no_lpr"], [0, 1, 2], run_cell, lambda r: f"score {r['score']}")
    assert visited == [("full", 0), ("full", 1), ("full", 2),
                       ("no_lpr", 0), ("no_lpr", 1), ("no_lpr", 2)]
    assert results[("no_lpr", 2)] == {"score": 8}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("full_seed0") and "score 4" in lines[0]
    assert lines[-1].startswith("grid of 2 arm(s) x 3 seed(s)")


def test_an_empty_grid_is_an_error():
    with pytest.raises(ValueError, match="the grid is empty"):
        run_grid([], [0], lambda arm, seed: None)


def test_cell_names_match_the_folders_notebook_06_writes():
    assert cell_name("no_dms", 3) == "no_dms_seed3"
