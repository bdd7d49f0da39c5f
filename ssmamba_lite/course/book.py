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

The landing page is the README's introduction, quick start and course table; the site lands
in build/book/ (open build/book/index.html, or serve it: `python -m http.server -d build/book`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from ssmamba_lite.course.runner import NOTEBOOKS, REPO, discover

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
README_SECTIONS = ("Quick start", "The course (notebooks)")
MATHJAX = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
MATHJAX_CONFIG = """window.MathJax = {
  tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
        processEscapes: true}
};
"""


class BookError(ValueError):
    """An executed notebook is missing or failed: the book would teach an error."""


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
def readme_landing(readme: Path, pages: dict[str, str]) -> str:
    """The README's introduction and its README_SECTIONS, notebook names linked to pages."""
    text = readme.read_text()
    parts = re.split(r"(?m)^(?=## )", text)
    keep = [parts[0]] + [p for p in parts[1:]
                         if p.splitlines()[0][3:].strip() in README_SECTIONS]
    body = "".join(keep)
    body = re.sub(r"\[([^\]]+)\]\((?!https?:)([^)]+)\)", r"\1", body)  # repo links, anchors
    for stem, page in pages.items():
        body = body.replace(f"| `{stem}` |", f"| [`{stem}`]({page}) |")
    return body


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
                      readme: Path = REPO / "README.md") -> Path:
    """A MkDocs project in `src`: docs/index.md, docs/notebooks/NN_name.ipynb, mkdocs.yml."""
    shutil.rmtree(src, ignore_errors=True)
    (src / "docs" / "notebooks").mkdir(parents=True)
    pages = {stem: f"notebooks/{stem}.ipynb" for stem in notebooks}
    nav = [{"Home": "index.md"}]
    for stem, nb in notebooks.items():
        nbformat.write(static_widgets(nb), src / "docs" / pages[stem])
        nav.append({notebook_title(nb, stem): pages[stem]})
    (src / "docs" / "index.md").write_text(readme_landing(readme, pages))
    (src / "docs" / "javascripts").mkdir()
    (src / "docs" / "javascripts" / "mathjax.js").write_text(MATHJAX_CONFIG)
    config = {
        "site_name": "ssmamba_lite: the course",
        "site_description": "SSMamba (MAMIM, DMS, LPR) rebuilt to learn, run and ablate",
        "use_directory_urls": False,                # pages open from the file system too
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


def build_book(executed: Path, out: Path, notebooks_dir: Path = NOTEBOOKS,
               echo=print) -> Path:
    """Render the executed course notebooks in `executed` into a static site in `out`."""
    course = discover(notebooks_dir)
    notebooks = executed_notebooks(Path(executed), course)
    src = write_site_source(notebooks, Path(out).parent / (Path(out).name + "_src"))
    echo(f"rendering {len(notebooks)} notebooks with MkDocs into {out} ...")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--clean", "--quiet",
                        "-f", str(src / "mkdocs.yml"), "-d", str(Path(out).resolve())],
                       capture_output=True, text=True, cwd=src,   # its cache: next to src
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    if r.returncode != 0:
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        raise BookError("mkdocs build failed: " + (lines[-1] if lines else f"exit {r.returncode}"))
    index = Path(out) / "index.html"
    echo(f"site: {index.resolve()}  (serve it: python -m http.server -d {out})")
    return index
