"""Shared test helpers: the repository root and mamba-ssm's reference code as an oracle
(loaded by ssmamba_lite.kernels.oracle, which also makes the tests' random scan inputs).

Real H&E data comes from the sample sets inside the package (ssmamba_lite.engine.data.sample_dir),
so no test needs anything outside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def oracle():
    """mamba-ssm's selective_scan_ref and Mamba, imported when a test asks for them (conftest
    itself imports neither torch nor the package)."""
    from ssmamba_lite.kernels.oracle import load_mamba_ssm_oracle

    ns = load_mamba_ssm_oracle()
    if ns is None:
        pytest.skip("mamba-ssm is not installed (make install puts it in .venv)")
    return ns


# Test files that share one worker under `pytest -n N --dist loadgroup` (make test), in
# collection order: the browser tests render what the notebook tests wrote to build/notebooks/.
SHARED_WORKER = {"test_browser.py": "test_notebooks.py"}


@pytest.hookimpl(tryfirst=True)         # before xdist reads the groups
def pytest_collection_modifyitems(items):
    """The browser tests run last: they render the notebooks tests/test_notebooks.py has just
    executed into build/notebooks/ (stable sort: the rest keep their order). Each test file is
    one xdist group, so a worker takes whole files (their module fixtures are built once), and
    the files of SHARED_WORKER go with the file they name."""
    items.sort(key=lambda item: item.path.name == "test_browser.py")
    for item in items:
        item.add_marker(pytest.mark.xdist_group(SHARED_WORKER.get(item.path.name, item.path.name)))
