"""Course support: what the notebooks and the course staff use besides the model.

    runner.py     executes the numbered notebooks with papermill (`ssmamba-lite tutorial`);
                  `require_data`, the data check of the notebooks' first cells
    figures.py    the course's figures (each returns a matplotlib Figure; `save_figure`)
    analysis.py   measurements the notebooks show: receptive fields, zoom, ablation variants
    exercises.py  the nbgrader exercises of the notebooks; `assert_close` / `assert_equal`
                  for their test cells
    build.py      student versions of the notebooks (`ssmamba-lite assignments build`)
    grade.py      autograding of submissions (`ssmamba-lite assignments grade`)
    handoff.py    where a notebook finds what an earlier one made (04 -> 05 -> 07, 09),
                  else the weights that ship in sample_data/weights/
    weights.py    `ssmamba-lite course weights`: makes those weights (the shipped MAMIM
                  with its decoder; a linear head's is refitted in closed form)
    budget.py     the MAMIM budget curve's statistics and figure (benchmarks, notebook 05)

A new notebook: notebooks/NN_name.py (jupytext percent format) with a cell tagged
`parameters` holding at least runner.REQUIRED_PARAMETERS; pair it with
`jupytext --set-kernel python3 --set-formats ipynb,py:percent`; tests/test_notebooks.py then
runs it.
"""
