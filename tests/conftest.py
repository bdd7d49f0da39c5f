"""Shared test helpers: the repository root and mamba-ssm's reference code as an oracle.

Real H&E data comes from the sample sets inside the package (ssmamba_lite.engine.data.sample_dir),
so no test needs anything outside the repository."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_mamba_ssm_oracle():
    """Import mamba-ssm's pure-PyTorch reference code on a machine without its CUDA kernels.

    Without the compiled extension `import mamba_ssm` fails ("No module named
    'selective_scan_cuda'"). We register an empty stand-in for it, make mamba-ssm's `Mamba`
    take its non-fused path (no causal_conv1d_fn) and route its scan to `selective_scan_ref`.
    Returns a namespace with `selective_scan_ref` and `Mamba`, or None when mamba-ssm is absent.
    """
    try:
        import selective_scan_cuda  # noqa: F401
        have_kernels = True
    except ImportError:
        have_kernels = False
        sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
    try:
        from mamba_ssm.modules import mamba_simple
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    except ImportError:
        return None
    if not have_kernels:
        mamba_simple.causal_conv1d_fn = None
        mamba_simple.selective_scan_fn = selective_scan_ref
    return types.SimpleNamespace(selective_scan_ref=selective_scan_ref, Mamba=mamba_simple.Mamba)


@pytest.fixture(scope="session")
def oracle():
    ns = load_mamba_ssm_oracle()
    if ns is None:
        pytest.skip("mamba-ssm is not installed (make install puts it in .venv)")
    return ns


def pytest_collection_modifyitems(items):
    """The browser tests run last: they render the notebooks tests/test_notebooks.py has just
    executed into build/notebooks/ (stable sort: the rest keep their order)."""
    items.sort(key=lambda item: item.path.name == "test_browser.py")
