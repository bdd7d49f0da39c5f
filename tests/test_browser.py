"""The course where people meet it, in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium): the website `ssmamba-lite book` builds, and the widget
explorers of notebooks 03 and 04 in JupyterLab. Screenshots land in build/screenshots/.

The site is rendered from the executed notebooks that tests/test_notebooks.py leaves in
build/notebooks/ (it runs first); missing or stale, they are executed here with the same small
parameters. Without a browser the tests skip, saying what to install (.ci/run installs it).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from ssmamba_lite.course import book, runner
from tests.conftest import REPO
from tests.test_notebooks import (
    BUILD,
    CLASS_FOLDERS,
    COURSE,
    copy_class_folders,
    small_parameters,
)

SHOTS = REPO / "build" / "screenshots"
TRACEBACK = "Traceback (most recent call last)"


def _browser_paths():
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                    "google-chrome"))), None)
    return chromium, shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = _browser_paths()
    if not (chromium and driver):
        pytest.skip("no chromium + chromedriver here: `apt-get install chromium "
                    "chromium-driver` (Debian; .ci/run does it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    b = webdriver.Chrome(options=options, service=Service(driver))
    b.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield b
    b.quit()


def _wait(predicate, timeout: float, what: str, poll: float = 0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The website.
# ---------------------------------------------------------------------------------------------
def _executed_course(tmp: Path) -> Path:
    """build/notebooks when it holds every course notebook, executed without error and newer
    than its source; else the course executed here with the small parameters."""
    def fresh(nb: Path) -> bool:
        ex = BUILD / f"{nb.stem}.ipynb"
        return ex.is_file() and ex.stat().st_mtime >= nb.stat().st_mtime and not any(
            o.get("output_type") == "error" for c in nbformat.read(ex, 4).cells
            for o in c.get("outputs", []))
    if all(map(fresh, COURSE)):
        return BUILD
    folders = copy_class_folders(tmp / "class_folders")
    out = tmp / "executed"
    for nb in COURSE:
        params = small_parameters(nb)
        if params.get("data_dir") == CLASS_FOLDERS:
            params["data_dir"] = str(folders)
        params["output_dir"] = str(out / nb.stem)
        runner.execute_notebook(nb, out / f"{nb.stem}.ipynb", params, cwd=tmp, cell_timeout=300)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("book")
    index = book.build_book(_executed_course(tmp), tmp / "site", echo=lambda *a, **k: None)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=index.parent)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", index.parent
    server.shutdown()


def _page_state(browser) -> dict:
    return browser.execute_script("""
        const imgs = [...document.querySelectorAll('article img')];
        // parsed to the end (the footer is the last element) and every image decoded
        const parsed = document.readyState === 'complete' && !!document.querySelector('footer');
        return {complete: parsed && imgs.every(i => i.complete), n: imgs.length,
                broken: imgs.filter(i => i.naturalWidth === 0).length,
                text: document.body.innerText,
                source: document.body.textContent,   // all text, whatever the layout
                nav: [...document.querySelectorAll('nav a.md-nav__link[href$=".html"]')]
                     .map(a => a.href)};""")


def test_the_site_has_every_notebook_with_its_figures(site, browser):
    base, root = site
    browser.get(base + "index.html")
    state = _wait(lambda: (s := _page_state(browser))["complete"] and s, 30, "the landing page")
    assert "Quick start" in state["source"] and "03_lpr_and_dms" in state["source"]
    pages = list(dict.fromkeys(u for u in state["nav"] if "/notebooks/" in u))
    assert [u.rsplit("/", 1)[1] for u in pages] == [f"{nb.stem}.html" for nb in COURSE]
    figures = 0
    for url in pages:
        browser.get(url)
        state = _wait(lambda: (s := _page_state(browser))["complete"] and s, 30,
                      f"the images of {url}")
        assert state["broken"] == 0, f"{url}: {state['broken']} of {state['n']} images broken"
        assert TRACEBACK not in state["source"], f"{url} shows a Python traceback"
        assert state["source"].count("\n") > 20, f"{url} is nearly empty"
        figures += state["n"]
        if "03_lpr_and_dms" in url:
            assert "Interactive in JupyterLab (controls: direction = 0" in state["source"]
            assert "move a control there to draw its figure" in state["source"]
            browser.save_screenshot(str(SHOTS / "book_03_lpr_and_dms.png"))
    assert figures >= len(pages)
    index = (root / "search" / "search_index.json").read_text()
    assert all(f"notebooks/{nb.stem}.html" in index for nb in COURSE)


def test_the_site_search_finds_a_notebook(site, browser):
    from selenium.webdriver.common.by import By

    base, _ = site
    browser.get(base + "index.html")
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    if not box.is_displayed():                                   # narrow window: an icon first
        browser.find_element(By.CSS_SELECTOR, "label[for='__search']").click()
    _wait(box.is_displayed, 10, "the search box")
    box.click()
    # a word only notebook 02 uses: the search joins words with OR, and common ones ("order",
    # "hold") match most pages, pushing the notebook out of the first results shown
    box.send_keys("discretisation")

    def hrefs():                                   # read in one go: the list redraws as it types
        return browser.execute_script("return [...document.querySelectorAll("
                                      "'.md-search-result__item a')].map(a => a.href)")
    _wait(lambda: any("02_selective_scan_from_scratch" in h for h in hrefs()), 30,
          "a search result in notebook 02")


# ---------------------------------------------------------------------------------------------
# JupyterLab: the explorers answer their controls.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a token, serving notebooks 03 and 04 with the small
    parameters of tests/test_notebooks.py written into their parameters cells."""
    import papermill

    root = tmp_path_factory.mktemp("lab")
    for stem in ("03_lpr_and_dms", "04_mamim_pretraining"):
        source = REPO / "notebooks" / f"{stem}.ipynb"
        params = small_parameters(source.with_suffix(".py"))
        params["output_dir"] = str(root / stem)
        papermill.execute_notebook(str(source), str(root / f"{stem}.ipynb"), parameters=params,
                                   prepare_only=True, kernel_name="python3", progress_bar=False)
    port, token = _free_port(), "ssmamba-lite-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"),
           "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces")}
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser",
                             f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
                             "--LabApp.expose_app_in_browser=True",       # as Galata does
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
                            + (["--allow-root"] if os.geteuid() == 0 else []),   # CI containers
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).status
        except OSError:
            return None
    try:
        _wait(up, 90, f"JupyterLab on {url} (log: {root / 'lab.log'})", poll=1)
        yield url, token
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


_SLIDER_IMAGE = """
    const box = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .widget-vbox')]
        .find(b => b.querySelector('.widget-slider'));
    if (!box) return null;
    const img = box.querySelector('.widget-output img');
    return img ? img.src : '';"""


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["03_lpr_and_dms", "04_mamim_pretraining"])
def test_the_explorer_redraws_when_its_slider_moves(lab, browser, stem):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, token = lab
    browser.get(f"{url}/lab/tree/{stem}.ipynb?token={token}&reset")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), 90,
          f"{stem} to open in JupyterLab")
    _wait(lambda: "Idle" in browser.execute_script(
        "return document.body.innerText"), 90, "the kernel to start")
    # The Run menu's "Run All Cells", through the app's command registry
    _wait(lambda: browser.execute_script("return !!(window.jupyterapp && "
                                         "jupyterapp.commands.isEnabled('notebook:run-all-cells'))"),
          60, "JupyterLab's run-all command")
    browser.execute_script("jupyterapp.commands.execute('notebook:run-all-cells')")
    empty = _wait(lambda: browser.execute_script(_SLIDER_IMAGE) is not None, 240,
                  f"{stem}'s explorer")
    assert empty and browser.execute_script(_SLIDER_IMAGE) == ""    # draws on a move only
    handle = browser.find_element(
        By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .widget-slider .noUi-handle")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)
    first = _wait(lambda: browser.execute_script(_SLIDER_IMAGE), 120,
                  f"{stem}'s figure after the slider moved")
    handle.send_keys(Keys.ARROW_RIGHT)
    second = _wait(lambda: (s := browser.execute_script(_SLIDER_IMAGE)) and s != first and s,
                   120, f"{stem}'s figure to change after the slider moved again")
    assert first.startswith("data:image/png") and second.startswith("data:image/png")
    browser.save_screenshot(str(SHOTS / f"lab_{stem}.png"))
    errors = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type="
                                                    "'application/vnd.jupyter.stderr']")
    assert not any(TRACEBACK in e.text for e in errors)


def test_the_book_refuses_a_missing_or_failed_notebook(tmp_path):
    with pytest.raises(book.BookError, match="no executed 00_setup_and_tour.ipynb"):
        book.build_book(tmp_path, tmp_path / "site")
    for nb in COURSE:
        cell = nbformat.v4.new_code_cell("1 / 0")
        cell.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError",
                                               evalue="division by zero", traceback=[])] \
            if nb.stem.startswith("05") else []
        nbformat.write(nbformat.v4.new_notebook(cells=[cell]), tmp_path / f"{nb.stem}.ipynb")
    with pytest.raises(book.BookError, match="05_finetuning.ipynb stopped with an error"):
        book.build_book(tmp_path, tmp_path / "site")
    assert not (tmp_path / "site").exists()
