"""The README and the pages of docs/ hold together: every relative link and image leads to a
file of the repository, every `#anchor` into a Markdown file to one of its headings (links in
fenced code blocks are left alone, http(s) and mailto links are not followed), the README stays
a front door of one screen, and every page of docs/ is reachable (in the website's navigation,
`book.DOCS_ORDER`, or in the README's Documentation section). No network, no MkDocs run: the
website's strict build (`ssmamba-lite book`) checks the same links again when it renders them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssmamba_lite.course import book

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_LINES = 200
EXTERNAL = re.compile(r"(https?|mailto):", re.I)


def broken_links(path: Path) -> list[str]:
    """Every relative link or image of the Markdown file `path` that leads nowhere: a missing
    file, or an `#anchor` that no heading of the Markdown file it points into gives."""
    text = path.read_text()
    # fenced code blocks blanked out, their lines kept, so that line numbers stay right
    body = book.FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    problems = []
    for m in book.LINK.finditer(body):
        target = m.group(3)
        if EXTERNAL.match(target):
            continue
        where = f"{path.name}:{body.count(chr(10), 0, m.start()) + 1}: {target}"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part) if file_part else path
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in book.anchors(dest.read_text()):
            problems.append(f"{where}: no heading gives this anchor")
    return problems


def section(markdown: str, title: str) -> str:
    """The `## title` section of a Markdown text ("" when there is none)."""
    for part in re.split(r"(?m)^(?=## )", book.FENCE.sub("", markdown)):
        if part.startswith("## ") and part.splitlines()[0][3:].strip() == title:
            return part
    return ""


def unreachable_pages(readme: Path, docs: Path, order: tuple[str, ...]) -> list[str]:
    """The pages of `docs` that neither `order` (the website's navigation) names nor the
    README's Documentation section links."""
    index = section(readme.read_text(), "Documentation")
    listed = {(readme.parent / m.group(3).partition("#")[0]).resolve()
              for m in book.LINK.finditer(index) if not EXTERNAL.match(m.group(3))}
    return sorted(p.name for p in docs.glob("*.md")
                  if p.stem not in order and p.resolve() not in listed)


# ------------------------------------------------------------------------- the repository
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_link_and_image_of_the_docs_resolves(page):
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_the_readme_fits_on_one_screen():
    lines = len(README.read_text().splitlines())
    assert lines <= README_LINES, (f"README.md has {lines} lines (at most {README_LINES}): "
                                   f"move the details into a page of docs/")


def test_the_readme_has_the_sections_the_website_lands_on():
    text = README.read_text()
    for title in book.README_SECTIONS:
        assert section(text, title), f"README.md has no '## {title}' (book.README_SECTIONS)"
    assert re.search(r"(?m)^\| `\d\d_\w+` \|", section(text, "The course (notebooks)")), \
        "the course table's rows must read | `NN_name` | (the website links them)"


def test_every_docs_page_is_reachable_and_has_a_title():
    assert not unreachable_pages(README, DOCS, book.DOCS_ORDER), \
        "pages of docs/ neither in book.DOCS_ORDER nor in the README's Documentation section"
    missing = [stem for stem in book.DOCS_ORDER if not (DOCS / f"{stem}.md").is_file()]
    assert not missing, f"book.DOCS_ORDER names pages that docs/ lacks: {missing}"
    for page in DOCS.glob("*.md"):
        first = next(line for line in page.read_text().splitlines()
                     if line.strip() and not line.startswith("<!--"))
        assert first.startswith("# "), f"{page.name} does not start with a '# Title' heading"


# ------------------------------------------------------------------------------ the checks
def test_the_checks_catch_a_broken_link_an_anchor_and_an_unlisted_page(tmp_path):
    """The checks above fail where they should (no test that cannot fail)."""
    docs = tmp_path / "docs"
    (docs / "figures").mkdir(parents=True)
    (docs / "figures" / "here.png").write_bytes(b"")
    (docs / "a.md").write_text("# A\n\n## Real heading\n\n[back](../README.md#intro)\n")
    (docs / "stray.md").write_text("# Stray\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Intro\n\n"
        "[fine](docs/a.md#real-heading) [fine too](#intro) ![fig](docs/figures/here.png)\n"
        "[gone](docs/missing.md)\n"
        "[bad anchor](docs/a.md#no-such-heading)\n"
        "![no image](docs/figures/none.png)\n"
        "[web](https://example.org/x.md) [mail](mailto:a@example.org)\n"
        "```\n[in a code block](docs/nowhere.md)\n```\n"
        "## Documentation\n\n- [A](docs/a.md)\n")
    assert broken_links(readme) == [
        "README.md:4: docs/missing.md: no such file",
        "README.md:5: docs/a.md#no-such-heading: no heading gives this anchor",
        "README.md:6: docs/figures/none.png: no such file",
    ]
    assert broken_links(docs / "a.md") == []
    assert unreachable_pages(readme, docs, ()) == ["stray.md"]
    assert unreachable_pages(readme, docs, ("stray",)) == []


def tiny_book(tmp_path: Path, page: str) -> dict[str, Path]:
    """A one-notebook course, a README with the landing sections and one docs page holding
    `page`: what `book.build_book` needs, in seconds."""
    import nbformat

    notebooks = tmp_path / "notebooks"
    executed = tmp_path / "executed"
    docs = tmp_path / "docs"
    for folder in (notebooks, executed, docs):
        folder.mkdir(parents=True)
    (notebooks / "00_intro.py").write_text("# %% [markdown]\n# # 00 · Intro\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 00 · Intro"),
                                         nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, executed / "00_intro.ipynb")
    readme = tmp_path / "README.md"
    readme.write_text("# tiny\n\n" + "".join(f"## {s}\n\nText.\n\n" for s in book.README_SECTIONS))
    (docs / "scan.md").write_text("# The scan\n\n## Speed\n\n" + page + "\n")
    return {"executed": executed, "notebooks_dir": notebooks, "readme": readme, "docs": docs}


def test_the_website_build_fails_on_a_broken_link_with_one_line(tmp_path):
    """The strict MkDocs build of `make book`: a good page renders, a link to a missing page
    or anchor stops the build with a one-line BookError that names it."""
    pytest.importorskip("mkdocs")
    quiet = {"echo": lambda *a, **k: None}
    good = tiny_book(tmp_path / "good", "See [speed](#speed) and [the intro](../README.md).")
    index = book.build_book(out=tmp_path / "good" / "site", **good, **quiet)
    assert (index.parent / "scan.html").is_file()
    for broken in ("[gone](missing.md)", "[gone](#no-such-heading)"):
        folder = tmp_path / f"bad{len(broken)}"
        with pytest.raises(book.BookError) as err:
            book.build_book(out=folder / "site", **tiny_book(folder, broken), **quiet)
        message = str(err.value)
        assert "\n" not in message and message.startswith("mkdocs build failed"), message
        assert "missing.md" in message or "no-such-heading" in message, message
