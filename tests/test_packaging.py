"""Install files agree with each other: pyproject.toml, environment.yml and the Makefile."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    assert any(str(d).startswith("python=3.11") for d in deps)
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    listed = [p for p in pip if not p.startswith("-") and p not in ("wheel", "packaging", "ninja")]
    assert listed == PYPROJECT["project"]["dependencies"], "environment.yml's pip list drifted"
    editable = next(p for p in pip if p.startswith("-e"))
    extras = re.search(r"\[(.*)\]", editable).group(1).split(",")
    assert "notebooks" in extras
    for extra in extras:
        assert extra in PYPROJECT["project"]["optional-dependencies"], extra


def test_makefile_builds_the_pinned_cuda_extra():
    makefile = (REPO / "Makefile").read_text()
    pins = re.search(r"^MAMBA_PKGS := (.*)$", makefile, re.M).group(1).split()
    assert sorted(pins) == sorted(PYPROJECT["project"]["optional-dependencies"]["cuda"])


def test_console_script_points_at_the_cli():
    assert PYPROJECT["project"]["scripts"]["ssmamba-lite"] == "ssmamba_lite.cli:main"
