"""Every numbered notebook of the course has the same frame: learning objectives and
prerequisites before its parameters, at least one figure, then "What you learned", 3-5
self-check questions and exercises at the end; links to the previous and next notebooks and to
the papers behind it; more prose than code, spread through the notebook (words of text
counted, not cells). 06a (one cell of 06's grid, run by 06) is not a lesson and is left out."""

from __future__ import annotations

import re

import jupytext
import pytest

from ssmamba_lite.course import runner
from tests.conftest import REPO

COURSE = runner.discover(REPO / "notebooks")
PAPER = re.compile(r"https?://(arxiv\.org|doi\.org|openaccess\.thecvf\.com|proceedings\.)")
WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
MIN_PARAGRAPH = 5               # words: fewer is a caption or a heading, not a paragraph
WORDS_PER_CODE_LINE = 3         # the notebooks have 4.8 to 12.7 today
MAX_CODE_WITHOUT_PROSE = 80     # lines of code between two paragraphs; the longest is 52


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


def prose_words(markdown: str) -> int:
    """Words of running text in a markdown cell: headings, code, formulas, link targets and
    HTML tags do not count."""
    text = re.sub(r"```.*?```|\$\$.*?\$\$", " ", markdown, flags=re.S)
    text = re.sub(r"`[^`]*`|\$[^$]*\$|\]\([^)]*\)|<[^>]+>", " ", text)
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return len(WORD.findall("\n".join(lines)))


def code_lines(code: str) -> int:
    """Lines of a code cell that hold code (not blank, not a comment)."""
    return sum(1 for line in code.splitlines() if line.strip() and not line.strip().startswith("#"))


def story_gaps(cells) -> tuple[int, int, int]:
    """(words of prose, lines of code, most lines of code in a row with no prose between)."""
    words = lines = run = longest = 0
    for kind, src, _ in cells:
        if kind == "markdown" and prose_words(src) >= MIN_PARAGRAPH:
            words += prose_words(src)
            run = 0
        elif kind == "code":
            lines += code_lines(src)
            run += code_lines(src)
            longest = max(longest, run)
    return words, lines, longest


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_markdown_carries_the_story(path):
    """The notebook is read, not only run: there is more prose than code, and the prose is
    spread through it (no long stretch of code that no text explains)."""
    words, lines, longest = story_gaps(_parts(path))
    assert words >= WORDS_PER_CODE_LINE * lines, \
        f"{path.name}: {words} words of prose for {lines} lines of code; want at least " \
        f"{WORDS_PER_CODE_LINE} words a line"
    assert longest <= MAX_CODE_WITHOUT_PROSE, \
        f"{path.name}: {longest} lines of code in a row without a paragraph between them " \
        f"(at most {MAX_CODE_WITHOUT_PROSE})"


def test_the_story_check_counts_text_not_cells():
    """Empty or heading-only markdown cells, and prose hidden in code blocks, carry no story."""
    heading = ("markdown", "## 3. Results", [])
    code = ("code", "\n".join(f"x{i} = {i}" for i in range(30)), [])
    paragraph = ("markdown", "The loss falls, then levels off: " + "the model learns. " * 4, [])
    assert story_gaps([heading, code, heading, code]) == (0, 60, 60)
    assert story_gaps([paragraph, code, paragraph, code]) == (36, 60, 30)
    assert prose_words("```python\nfor word in many words here\n```\n$a + b$ `x`") == 0
    assert code_lines("# a comment\n\ny = 1\n") == 1


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_at_least_one_figure(path):
    code = "\n".join(src for kind, src, _ in _parts(path) if kind == "code")
    assert "save_figure(" in code or "plt.show()" in code, f"{path.name}: no figure"
