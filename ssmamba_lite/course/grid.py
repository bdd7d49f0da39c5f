"""The arm x seed grid of the course's experiments (notebooks 06 and 08).

An experiment compares arms (ablation variants, pretraining recipes) and repeats each with
several training seeds. `run_grid` walks that grid in one order, times every cell and prints
one line per cell, so that both notebooks read the same way:

    results = run_grid(["full", "no_lpr"], [0, 1], run_cell, describe)
    results[("no_lpr", 1)]        # whatever run_cell returned for that cell

`run_cell(arm, seed)` trains and scores one cell and returns its result; `describe(result)`
is the text printed after the cell's name (its metrics, the MAMIM steps it took). The grid
leaves folders, files and seeds to the notebook: every cell's numbers depend only on its own
arm and seed, never on the order the grid visits them.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable


def cell_name(arm: str, seed: int) -> str:
    """The name a cell is printed (and its folder named) by: `<arm>_seed<seed>`."""
    return f"{arm}_seed{seed}"


def run_grid(arms: Iterable[str], seeds: Iterable[int], run_cell: Callable[[str, int], Any],
             describe: Callable[[Any], str] = lambda result: "") -> dict[tuple[str, int], Any]:
    """{(arm, seed): run_cell(arm, seed)} for every arm and seed, arm by arm; one printed line
    per cell (its name, `describe(result)` and its seconds) and the grid's total at the end."""
    arms = list(arms)
    seeds = list(seeds)
    if not arms or not seeds:
        raise ValueError(f"the grid is empty: arms {arms}, seeds {seeds}")
    results = {}
    t_grid = time.perf_counter()
    for arm in arms:
        for seed in seeds:
            t_cell = time.perf_counter()
            result = run_cell(arm, seed)
            results[(arm, seed)] = result
            seconds = time.perf_counter() - t_cell
            print(f"{cell_name(arm, seed):22s} {describe(result)}  ({seconds:.0f} s)", flush=True)
    print(f"grid of {len(arms)} arm(s) x {len(seeds)} seed(s): "
          f"{time.perf_counter() - t_grid:.0f} s", flush=True)
    return results
