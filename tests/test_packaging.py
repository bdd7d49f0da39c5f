"""Install files agree with each other: pyproject.toml, environment.yml and the Makefile."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
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


@pytest.mark.slow
def test_the_wheel_carries_the_samples_and_the_shipped_weights(tmp_path):
    """`pip wheel` of the repository's files holds every file of sample_data/, the course's
    pretrained weights included (package data: pyproject's sample_data/**/*)."""
    src = tmp_path / "src"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard", "pyproject.toml", "README.md",
                             "ssmamba_lite", "data_scripts"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("ssmamba_lite-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    samples = {str(p.relative_to(src)) for p in (src / "ssmamba_lite" / "sample_data").rglob("*")
               if p.is_file()}
    assert samples and samples <= names, sorted(samples - names)[:5]
    weights = {n for n in samples if n.startswith("ssmamba_lite/sample_data/weights/")}
    if (REPO / "ssmamba_lite" / "sample_data" / "weights").is_dir():
        assert {"ssmamba_lite/sample_data/weights/mamim/encoder.safetensors",
                "ssmamba_lite/sample_data/weights/idc_classifier/model.safetensors",
                "ssmamba_lite/sample_data/weights/README.md"} <= weights
