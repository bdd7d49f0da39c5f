"""Every numbered notebook of the course has the same frame: learning objectives and
prerequisites before its parameters, at least one figure, then "What you learned", 3-5
self-check questions and exercises at the end; links to the previous and next notebooks and to
the papers behind it; at least as many markdown cells as code cells. 06a (one cell of 06's
grid, run by 06) is not a lesson and is left out."""

from __future__ import annotations

import re

import jupytext
import pytest

from ssmamba_lite.course import runner
from tests.conftest import REPO

COURSE = runner.discover(REPO / "notebooks")
PAPER = re.compile(r"https?://(arxiv\.org|doi\.org|openaccess\.thecvf\.com|proceedings\.)")


def _parts(path):
    nb = jupytext.read(path)
    cells = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]
    return cells


def _first(cells, pattern):
    rx = re.compile(pattern, re.I | re.M)
    return next((i for i, (kind, src, _) in enumerate(cells)
                 if kind == "markdown" and rx.search(src)), None)


def test_the_course_is_what_this_file_checks():
    assert len(COURSE) >= 10 and all(p.stem[:2].isdigit() for p in COURSE)


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_objectives_and_prerequisites_come_first(path):
    cells = _parts(path)
    params = next(i for i, (_, _, tags) in enumerate(cells) if "parameters" in tags)
    for heading in (r"^#+\s*Learning objectives", r"^#+\s*Prerequisites"):
        i = _first(cells, heading)
        assert i is not None and i < params, f"{path.name}: a '{heading}' heading before the " \
                                             f"parameters cell"


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_summary_self_check_and_exercises_close_the_notebook(path):
    cells = _parts(path)
    found = {name: _first(cells, rf"^#+\s*{name}") for name in
             ("What you learned", "Self-check", "Exercises")}
    assert None not in found.values(), f"{path.name}: headings missing: " \
        f"{[k for k, v in found.items() if v is None]}"
    assert found["What you learned"] < found["Self-check"], f"{path.name}: summary, then self-check"
    assert found["What you learned"] > len(cells) // 2, f"{path.name}: the summary belongs at the end"
    text = "\n".join(src for kind, src, _ in cells[found["Self-check"]:] if kind == "markdown")
    questions = set(re.findall(r"\*\*Q(\d+)\b", text))
    assert 3 <= len(questions) <= 5, f"{path.name}: {len(questions)} self-check questions " \
                                     f"(**Q1** ... after the Self-check heading); want 3-5"


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_links_to_neighbours_and_papers(path):
    text = "\n".join(src for kind, src, _ in _parts(path) if kind == "markdown")
    i = COURSE.index(path)
    for j in (i - 1, i + 1):
        if 0 <= j < len(COURSE):
            assert f"({COURSE[j].stem}.ipynb)" in text, \
                f"{path.name}: no markdown link to {COURSE[j].stem}.ipynb"
    assert PAPER.search(text), f"{path.name}: no link to a paper (arxiv.org, doi.org, ...)"


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_markdown_carries_the_story(path):
    cells = _parts(path)
    markdown = sum(kind == "markdown" for kind, _, _ in cells)
    code = sum(kind == "code" for kind, _, _ in cells)
    assert markdown >= code, f"{path.name}: {markdown} markdown cells, {code} code cells"


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_at_least_one_figure(path):
    code = "\n".join(src for kind, src, _ in _parts(path) if kind == "code")
    assert "save_figure(" in code or "plt.show()" in code, f"{path.name}: no figure"
