"""The course as a static website: the executed notebooks, with their figures, rendered by
MkDocs (Material theme) through mkdocs-jupyter.

    ssmamba-lite book                             execute the course, render build/book/
    ssmamba-lite book --from runs/20261130-0102   render an earlier `make tutorial` run
    ssmamba-lite book --from build/notebooks      or the test suite's small runs

Why MkDocs + Material + mkdocs-jupyter: all three install from PyPI (no Node), the build is
offline (theme fonts off, the search index is built locally and searched in the browser by
the theme's bundled lunr), and the pages keep every output of an executed notebook: figures as
inline PNG, tables, printed numbers. (Jupyter Book 1 on Sphinx + MyST-NB would do the same
with more machinery; Jupyter Book 2 runs on Node.)

Widgets: a headless run stores the widgets' state in the notebook; each widget view is
replaced by one line naming its controls and their values, followed by whatever its Output
areas held when the run ended (the course's explorers draw only when a control moves; their
notebooks draw the same figures statically in other cells). The controls work in JupyterLab, which
tests/test_browser.py checks in a real browser.

The landing page is the README's introduction and its README_SECTIONS; the pages of docs/
(and docs/figures/) follow the notebooks in the navigation. Links are rewritten for the site:
README's `docs/x.md` becomes `x.md`, a link to a notebook its page, a link to any other file of
the repository its bare text. The build is strict: a link between pages to a missing page, a
missing anchor or a missing image fails it with one line (tests/test_docs.py checks every
link of README.md and docs/ on the repository itself). The site lands in build/book/ (open
build/book/index.html, or serve it: `python -m http.server -d build/book`).
"""

from __future__ import annotations

import copy
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from ssmamba_lite.course.runner import NOTEBOOKS, REPO, discover

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
README_SECTIONS = ("Quick start", "The course (notebooks)", "Results", "Documentation")
DOCS = REPO / "docs"
# The reference pages in the order of the navigation; a page not named here comes after them.
DOCS_ORDER = ("scan", "model", "training", "mamim", "performance", "course", "course-staff",
              "datasets", "wsi", "sample-data")
# MkDocs' link checks, every one a warning, which `strict` turns into a failed build.
VALIDATION = {"omitted_files": "warn", "absolute_links": "warn", "unrecognized_links": "warn",
              "anchors": "warn"}
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^()\s]+)\)")
FENCE = re.compile(r"(?ms)^ *```.*?^ *```[^\n]*$")
MATHJAX = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
MATHJAX_CONFIG = """window.MathJax = {
  tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
        processEscapes: true}
};
"""


class BookError(ValueError):
    """An executed notebook is missing or failed, or a link of the site leads nowhere: the
    book would teach an error."""


# ---------------------------------------------------------------------------------------------
# Widgets -> static outputs.
# ---------------------------------------------------------------------------------------------
def _children(state: dict, model_id: str) -> list[str]:
    """Model ids a widget refers to ("IPY_MODEL_<id>" strings), depth first, itself first."""
    seen, stack, found = set(), [model_id], []
    while stack:
        mid = stack.pop()
        if mid in seen or mid not in state:
            continue
        seen.add(mid)
        found.append(mid)
        refs = re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[mid].get("state", {})))
        stack.extend(reversed(refs))
    return found


def static_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `nb` where every widget view is replaced by its stored figures and a line
    naming its controls; a view with no stored state becomes a line saying so."""
    nb = copy.deepcopy(nb)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW) if out.get("output_type") in (
                "display_data", "execute_result") else None
            if view is None:
                outputs.append(out)
                continue
            models = [state[m] for m in _children(state, view.get("model_id", ""))]
            controls = [f"{m['state']['description']} = {m['state']['value']!r}"
                        for m in models if m["state"].get("description")
                        and "value" in m["state"]]
            figures = any(m.get("model_name") == "OutputModel" and m["state"].get("outputs")
                          for m in models)
            note = ("Interactive in JupyterLab" + (f" (controls: {', '.join(controls)})"
                                                  if controls else "")
                    + (": the figure as the run left it." if figures else
                       ": move a control there to draw its figure."))
            outputs.append(nbformat.v4.new_output("display_data", data={
                "text/markdown": f"*{note}*", "text/plain": note}))
            for m in models:
                if m.get("model_name") == "OutputModel":
                    outputs.extend(nbformat.from_dict(o) for o in m["state"].get("outputs", []))
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return nb


# ---------------------------------------------------------------------------------------------
# The site.
# ---------------------------------------------------------------------------------------------
def github_slug(heading: str) -> str:
    """The anchor GitHub (and MkDocs, for headings of plain words) gives a heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown text's headings (code blocks left out)."""
    return {github_slug(h) for h in re.findall(r"(?m)^#{1,6} +(.+?) *$", FENCE.sub("", markdown))}


def site_link(target: str, source_dir: str, pages: dict[str, str],
              landing: set[str]) -> str | None:
    """Where a relative link of a file in `source_dir` (of the repository: "" or "docs") leads
    in the site, or None where the site has no such page (the link becomes its text)."""
    path, _, anchor = target.partition("#")
    if not path:
        return target if source_dir == "docs" or anchor in landing else None
    where = posixpath.normpath(posixpath.join(source_dir, path))
    if where.startswith("docs/"):
        return where[len("docs/"):] + (f"#{anchor}" if anchor else "")
    if where == "README.md":
        return "index.md" + (f"#{anchor}" if anchor in landing else "")
    stem = posixpath.splitext(posixpath.basename(where))[0]
    if posixpath.dirname(where) == "notebooks" and stem in pages:
        return pages[stem]
    return None


def site_links(text: str, source_dir: str, pages: dict[str, str], landing: set[str]) -> str:
    """`text` with every relative link and image pointed at the site (code blocks untouched)."""
    def one(m: re.Match) -> str:
        bang, label, target = m.groups()
        if re.match(r"[a-z]+:", target):
            return m.group(0)                           # https:, mailto: ...
        new = site_link(target, source_dir, pages, landing)
        return m.group(0) if new == target else (f"{bang}[{label}]({new})" if new else label)
    out, last = [], 0
    for block in FENCE.finditer(text):
        out += [LINK.sub(one, text[last:block.start()]), block.group(0)]
        last = block.end()
    return "".join(out + [LINK.sub(one, text[last:])])


def readme_landing(readme: Path, pages: dict[str, str]) -> str:
    """The README's introduction and its README_SECTIONS, notebook names linked to pages."""
    text = readme.read_text()
    parts = re.split(r"(?m)^(?=## )", text)
    keep = [parts[0]] + [p for p in parts[1:]
                         if p.splitlines()[0][3:].strip() in README_SECTIONS]
    body = "".join(keep)
    body = site_links(body, "", pages, anchors(body))
    for stem, page in pages.items():
        body = body.replace(f"| `{stem}` |", f"| [`{stem}`]({page}) |")
    return body


def doc_pages(docs: Path) -> list[Path]:
    """The Markdown pages of `docs`, in DOCS_ORDER, the others after them by name."""
    found = sorted(docs.glob("*.md")) if docs.is_dir() else []
    rank = {stem: i for i, stem in enumerate(DOCS_ORDER)}
    return sorted(found, key=lambda p: rank.get(p.stem, len(rank)))


def page_title(markdown: str, stem: str) -> str:
    """A page's first `# ` heading, else its file name."""
    m = re.search(r"(?m)^# +(.+?) *$", FENCE.sub("", markdown))
    return m.group(1).replace("`", "") if m else stem


def notebook_title(nb: nbformat.NotebookNode, stem: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"(?m)^#\s+(.+)$", cell.source)
            if m:
                title = m.group(1).strip()
                return title if title.startswith(stem[:2]) else f"{stem[:2]} · {title}"
    return stem


def executed_notebooks(folder: Path, course: list[Path]) -> dict[str, nbformat.NotebookNode]:
    """The executed copy of each course notebook in `folder`; a clear error for a missing one
    or one that stopped with an error."""
    found, missing, failed = {}, [], []
    for source in course:
        path = folder / f"{source.stem}.ipynb"
        if not path.is_file():
            missing.append(path.name)
            continue
        nb = nbformat.read(path, as_version=4)
        if any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", [])):
            failed.append(path.name)
        found[source.stem] = nb
    if missing:
        raise BookError(f"{folder}: no executed {', '.join(missing)} (run `ssmamba-lite "
                        f"tutorial --out {folder}` or `ssmamba-lite book` without --from)")
    if failed:
        raise BookError(f"{folder}: {', '.join(failed)} stopped with an error; fix and rerun "
                        f"them before building the book")
    return found


def write_site_source(notebooks: dict[str, nbformat.NotebookNode], src: Path,
                      readme: Path = REPO / "README.md", docs: Path = DOCS) -> Path:
    """A MkDocs project in `src`: docs/index.md, docs/notebooks/NN_name.ipynb, the pages and
    figures of `docs`, mkdocs.yml."""
    shutil.rmtree(src, ignore_errors=True)
    if docs.is_dir():
        shutil.copytree(docs, src / "docs", ignore=shutil.ignore_patterns("*.md", ".*"))
    (src / "docs" / "notebooks").mkdir(parents=True)
    pages = {stem: f"notebooks/{stem}.ipynb" for stem in notebooks}
    nav = [{"Home": "index.md"}]
    for stem, nb in notebooks.items():
        nbformat.write(static_widgets(nb), src / "docs" / pages[stem])
        nav.append({notebook_title(nb, stem): pages[stem]})
    landing = readme_landing(readme, pages)
    (src / "docs" / "index.md").write_text(landing)
    reference = []
    for page in doc_pages(docs):
        text = site_links(page.read_text(), "docs", pages, anchors(landing))
        (src / "docs" / page.name).write_text(text)
        reference.append({page_title(text, page.stem): page.name})
    if reference:
        nav.append({"Reference": reference})
    (src / "docs" / "javascripts").mkdir()
    (src / "docs" / "javascripts" / "mathjax.js").write_text(MATHJAX_CONFIG)
    config = {
        "site_name": "ssmamba_lite: the course",
        "site_description": "SSMamba (MAMIM, DMS, LPR) rebuilt to learn, run and ablate",
        "use_directory_urls": False,                # pages open from the file system too
        "strict": True,                             # a warning (a broken link) fails the build
        "validation": VALIDATION,
        "theme": {"name": "material", "font": False, "features": ["navigation.footer"]},
        "plugins": ["search", {"mkdocs-jupyter": {"execute": False, "include_source": False,
                                                  "ignore_h1_titles": True}}],
        "markdown_extensions": ["tables", "fenced_code", "toc"],
        # Equations: MathJax from its CDN when the reader is online (offline: the TeX source).
        "extra_javascript": ["javascripts/mathjax.js", MATHJAX],
        "nav": nav,
    }
    (src / "mkdocs.yml").write_text(json.dumps(config, indent=2))   # JSON is valid YAML
    return src


def mkdocs_failure(log: str, code: int) -> str:
    """One line for a failed build: its first warning or error, and how many more there were."""
    problems = [re.sub(r"^(WARNING|ERROR)\s*-\s*", "", line).strip()
                for line in log.splitlines() if re.match(r"(WARNING|ERROR)\b", line)]
    if not problems:
        lines = [line for line in log.splitlines() if line.strip()]
        return "mkdocs build failed: " + (lines[-1] if lines else f"exit {code}")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"mkdocs build failed: {problems[0]}{more}"


def build_book(executed: Path, out: Path, notebooks_dir: Path = NOTEBOOKS,
               echo=print, readme: Path = REPO / "README.md", docs: Path = DOCS) -> Path:
    """Render the executed course notebooks in `executed`, the README's landing sections and
    the pages of `docs` into a static site in `out`."""
    course = discover(notebooks_dir)
    notebooks = executed_notebooks(Path(executed), course)
    src = write_site_source(notebooks, Path(out).parent / (Path(out).name + "_src"),
                            readme=Path(readme), docs=Path(docs))
    echo(f"rendering {len(notebooks)} notebooks with MkDocs into {out} ...")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--clean",
                        "-f", str(src / "mkdocs.yml"), "-d", str(Path(out).resolve())],
                       capture_output=True, text=True, cwd=src,   # its cache: next to src
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    if r.returncode != 0:
        raise BookError(mkdocs_failure(r.stderr + r.stdout, r.returncode))
    index = Path(out) / "index.html"
    echo(f"site: {index.resolve()}  (serve it: python -m http.server -d {out})")
    return index
