"""The smoke book end to end.

`prs reproduce --profile smoke` runs once per session (into a temporary build folder, with its own
runs and data): papermill executes every notebook, Jupyter Book builds the HTML with warnings as
errors. Then: the committed notebooks are untouched, nbval re-executes the executed copies, and
headless Chromium opens every chapter to check that its figures loaded at a legible size, its
equations were typeset by the one MathJax, its citations resolved (author-year), and that its console
shows no error and no request failed (tests/browser_check.py; its own test below shows it catches
each kind). In CI (CI=true) the browser checks must run; elsewhere they are skipped, with a message,
when Chromium is missing.
"""

import contextlib
import functools
import http.server
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

import yaml

from browser_check import OVERFLOW_JS, Browser, overflow_problems
from prs import cli
from prs import experiments as ex
from prs import plots
from prs import reproduce

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ["book/intro"] + [f"notebooks/{n}" for n in ex.NOTEBOOKS] + ["book/decisions", "book/cost",
                                                                       "book/references"]
MATH_CHAPTERS = ["book/intro"] + [f"notebooks/{n}" for n in ex.NOTEBOOKS]
CITING_CHAPTERS = ["book/intro"] + [f"notebooks/{n}" for n in ex.NOTEBOOKS] + ["book/decisions"]


# ----------------------------------------------------------------------------- fast: the command's input checks


@pytest.mark.parametrize("argv, expected", [
    (["reproduce", "--profile", "huge"], "choose one of colab, full, smoke"),
    (["reproduce", "--only", "05_extra"], "choose one of 01_data_scale, 02_fourier"),
    (["reproduce", "--set", "epochz=1"], "not a parameter"),
    (["reproduce", "--set", "epochs"], "expected NAME=VALUE"),
    (["reproduce", "--cwd", "/"], "not the repository root"),
])
def test_reproduce_rejects_bad_input_in_one_line(argv, expected, capsys, tmp_path):
    assert cli.main(argv + ["--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir()), "nothing is written on bad input"


def test_force_deletes_exactly_the_runs_of_the_selected_notebooks(tmp_path):
    params = {nb: {**ex.notebook_parameters("smoke", nb), "run_root": str(tmp_path / "runs")} for nb in ex.NOTEBOOKS}
    dirs = {nb: {ex.run_dir(t) for t in ex.notebook_trials(nb, params[nb])} for nb in ex.NOTEBOOKS}
    for d in set().union(*dirs.values()):
        d.mkdir(parents=True)
    deleted = []
    reproduce.delete_runs("01_data_scale", params["01_data_scale"], tmp_path, deleted.append)
    assert len(deleted) == len(dirs["01_data_scale"]) == 12
    assert set((tmp_path / "runs").iterdir()) == set().union(*dirs.values()) - dirs["01_data_scale"]


def test_staged_book_mirrors_the_repository_with_the_executed_notebooks(tmp_path):
    executed = tmp_path / "executed" / "notebooks"
    executed.mkdir(parents=True)
    nb = nbformat.read(ROOT / "notebooks" / "01_data_scale.ipynb", as_version=4)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    nbformat.write(nb, executed / "01_data_scale.ipynb")
    notes = []
    reproduce.stage_book(ROOT, tmp_path / "executed", tmp_path / "src", notes.append)
    src = tmp_path / "src"
    assert (src / "_toc.yml").read_text() == (ROOT / "_toc.yml").read_text()
    assert (src / "book" / "references.bib").is_file() and (src / "book" / "intro.md").is_file()
    staged = nbformat.read(src / "notebooks" / "01_data_scale.ipynb", as_version=4)
    assert staged.cells[0].outputs[0]["text"] == "ran\n", "the executed copy is staged"
    assert (src / "notebooks" / "02_fourier.ipynb").read_bytes() == (ROOT / "notebooks" / "02_fourier.ipynb").read_bytes()
    assert any("02_fourier has not been executed" in n for n in notes)
    config = yaml.safe_load((src / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    if reproduce.mathjax_source() is not None:
        assert config["sphinx"]["config"]["mathjax_path"] == "mathjax/tex-mml-chtml.js"
        assert (src / reproduce.MATHJAX_EXTRA / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()


def test_jupyter_book_adds_no_mathjax_script_and_reads_the_citation_style(tmp_path):
    """Jupyter Book's own config step, on the staged book: every .js under _static/ would become a
    <script> on every page, so MathJax's only script is mathjax_path; the citation style is a Sphinx
    setting (Jupyter Book ignores it at the top level of _config.yml)."""
    from jupyter_book.config import get_final_config

    reproduce.stage_book(ROOT, tmp_path / "executed", tmp_path / "src", lambda _: None)
    src = tmp_path / "src"
    sphinx_config, _ = get_final_config(user_yaml=src / "_config.yml", sourcedir=src,
                                        cli_config={"latex_individualpages": False})
    assert not [js for js in sphinx_config.get("html_js_files", []) if "mathjax" in str(js).lower()]
    assert sphinx_config["bibtex_reference_style"] == "author_year_round"
    assert sphinx_config["bibtex_default_style"] == "authoryear"
    assert "bibtex_reference_style" not in yaml.safe_load((ROOT / "_config.yml").read_text())
    if reproduce.mathjax_source() is not None:
        assert sphinx_config["mathjax_path"] == reproduce.MATHJAX_PATH
        assert reproduce.MATHJAX_EXTRA in sphinx_config["html_extra_path"]


def book_extension():
    """The book's local Sphinx extension, book/_ext/book_assets.py, as a module."""
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        import book_assets
    finally:
        sys.path.remove(str(ROOT / "book" / "_ext"))
    return book_assets


def test_references_are_labelled_author_year():
    """book/_ext/book_assets.py's pybtex style, on the book's own references.bib."""
    import pybtex.database

    book_assets = book_extension()
    entries = pybtex.database.parse_file(ROOT / "book" / "references.bib").entries
    style = book_assets.AuthorYearStyle()
    labels = {entry.key: label for entry, label in zip(style.sort(entries.values()),
                                                         style.format_labels(style.sort(entries.values())))}
    assert labels["lee2022prs"] == "Lee et al., 2022"
    assert labels["park2022vits"] == "Park and Kim, 2022"
    assert labels["krizhevsky2009cifar"] == "Krizhevsky, 2009"
    assert sorted(labels[k] for k in ("dascoli2021tcnn", "dascoli2021convit")) == \
        ["d'Ascoli et al., 2021a", "d'Ascoli et al., 2021b"]
    assert len(set(labels.values())) == len(labels), "labels are unique"


def test_inline_scripts_that_sphinx_writes_twice_are_written_once():
    """Sphinx 7.4 keeps a late-registered inline script as file name None and again as ''."""
    from sphinx.builders.html._assets import _JavaScript

    book_assets = book_extension()
    thebe = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("_static/a.js", priority=500), _JavaScript(None, body=thebe, priority=500),
               _JavaScript("", body=thebe, priority=500), _JavaScript("", body="var other = 1", priority=500),
               _JavaScript("_static/a.js", priority=500)]
    context = {"script_files": scripts}
    book_assets.drop_duplicate_scripts(None, "page", "page.html", context, None)
    assert context["script_files"] is scripts, "the list the template reads is edited in place"
    assert [(js.filename or "", js.attributes.get("body")) for js in scripts] == \
        [("_static/a.js", None), ("", thebe), ("", "var other = 1")]


def test_the_book_shows_the_parameters_papermill_ran_with_once(tmp_path):
    """The staged copy keeps papermill's injected cell and removes the cell of defaults before it."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    executed = tmp_path / "executed" / "notebooks"
    executed.mkdir(parents=True)
    nb = load_notebook_node(str(ROOT / "notebooks" / "01_data_scale.ipynb"))  # as papermill reads it
    nbformat.write(parameterize_notebook(nb, {"epochs": 1}), executed / "01_data_scale.ipynb")
    reproduce.stage_book(ROOT, tmp_path / "executed", tmp_path / "src", lambda _: None)
    staged = nbformat.read(tmp_path / "src" / "notebooks" / "01_data_scale.ipynb", as_version=4)
    tags = {c.get("id"): c.metadata.get("tags", []) for c in staged.cells}
    (defaults,) = [t for t in tags.values() if "parameters" in t]
    (injected,) = [t for t in tags.values() if "injected-parameters" in t]
    assert "remove-cell" in defaults and "remove-cell" not in injected
    assert sum("remove-cell" in t for t in tags.values()) == 1, "nothing else is removed"
    assert "hide-input" in staged.cells[1].metadata.get("tags", []), "the set-up cell stays collapsed"
    unexecuted = nbformat.read(tmp_path / "src" / "notebooks" / "02_fourier.ipynb", as_version=4)
    assert not any("remove-cell" in c.metadata.get("tags", []) for c in unexecuted.cells), \
        "without papermill's cell the defaults are the only parameters shown"


def test_the_book_extension_serves_its_style_sheet(tmp_path):
    """A one-page Sphinx build with book_assets: prs-book.css is copied and every page links it."""
    from sphinx.cmd.build import build_main

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
                                 "extensions = ['book_assets']\n")
    (src / "index.rst").write_text("Title\n=====\n\nText.\n")
    assert build_main(["-q", "-b", "html", str(src), str(tmp_path / "html")]) == 0
    css = tmp_path / "html" / "_static" / "prs-book.css"
    assert css.read_text() == (ROOT / "book" / "_ext" / "static" / "prs-book.css").read_text()
    assert 'href="_static/prs-book.css' in (tmp_path / "html" / "index.html").read_text()


# ----------------------------------------------------------------------------- slow: the smoke book


def _digest(paths):
    return {p.name: p.read_bytes() for p in paths}


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """The smoke book, built here; or, with PRS_SMOKE_BOOK=DIR, the one that `prs reproduce --profile
    smoke --output DIR` built before (to iterate on the book's checks without training again; run
    with the same PRS_DATA, and keep its runs)."""
    tmp = tmp_path_factory.mktemp("smoke_book")
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    before = _digest(sources)
    if os.environ.get("PRS_SMOKE_BOOK"):
        build = Path(os.environ["PRS_SMOKE_BOOK"]).resolve()
        assert (build / "html" / "index.html").is_file(), f"PRS_SMOKE_BOOK={build}: no book built there"
        return SimpleNamespace(build=build, html=build / "html", sources=sources, before=before,
                               executed=build / "executed" / "notebooks", env=dict(os.environ), tmp=tmp, log="")
    env = {**os.environ, "PRS_DATA": str(tmp / "data")}
    command = [sys.executable, "-m", "prs", "reproduce", "--profile", "smoke", "--output", str(tmp / "_build"),
               "--set", f"run_root={tmp / 'runs'}"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"prs reproduce failed (exit {done.returncode}):\n{log[-6000:]}"
    return SimpleNamespace(build=tmp / "_build", html=tmp / "_build" / "html", sources=sources, before=before,
                           executed=tmp / "_build" / "executed" / "notebooks", env=env, tmp=tmp, log=log)


@pytest.mark.slow
def test_committed_notebooks_are_untouched_by_reproduce(smoke_book):
    assert _digest(smoke_book.sources) == smoke_book.before


@pytest.mark.slow
@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_executed_notebook_ran_every_cell_with_figures_and_a_verdict(smoke_book, name):
    nb = nbformat.read(smoke_book.executed / f"{name}.ipynb", as_version=4)
    assert nb.metadata["papermill"]["parameters"]["profile"] == "smoke"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every cell was executed"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error outputs: {[e.ename for e in errors]}"
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook shows at least one figure"
    verdict = "".join(o["data"].get("text/markdown", "") for o in code[-1].outputs if "data" in o)
    assert "In this run the paper's claim" in verdict and "not evidence about the paper" in verdict


@pytest.mark.slow
def test_smoke_book_runs_the_negative_control_and_it_is_not_held(smoke_book):
    """Two resnet_tiny arms that differ only in their seeds, decided by claim 4's rule (notebook 04)."""
    nb = nbformat.read(smoke_book.executed / "04_prs_cifar100.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and "ex.control_verdict(" in c.source]
    text = "".join(o["data"].get("text/markdown", "") for o in cell.outputs if "data" in o)
    assert "In this run the negative control" in text and "the control passed" in text
    assert "negative control held" not in text and "Numbers: control B − control A" in text


@pytest.mark.slow
def test_nbval_validates_the_executed_notebooks(smoke_book):
    """nbval re-executes each executed copy (runs are reused) and fails on any error."""
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
               *sorted(str(p) for p in smoke_book.executed.glob("*.ipynb"))]
    done = subprocess.run(command, cwd=smoke_book.tmp, env=smoke_book.env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", done.stdout)


@pytest.mark.slow
def test_book_has_every_chapter_and_offline_mathjax_loaded_once(smoke_book):
    for chapter in CHAPTERS:
        assert (smoke_book.html / f"{chapter}.html").is_file(), f"missing {chapter}.html"
    assert (smoke_book.html / "_static" / "mathjax" / "tex-mml-chtml.js").is_file(), \
        "MathJax is served by the book (pip install django-static-mathjax)"
    for chapter in CHAPTERS:
        page = (smoke_book.html / f"{chapter}.html").read_text()
        scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
        mathjax = [src for src in scripts if "mathjax" in src.lower()]
        expected = 1 if chapter in MATH_CHAPTERS else len(mathjax[:1])  # Sphinx adds it to pages with math
        assert len(mathjax) == expected and all("_static/mathjax/tex-mml-chtml.js" in src for src in mathjax), \
            f"{chapter}: MathJax must be one script tag, tex-mml-chtml.js; found {mathjax}"
    page = (smoke_book.html / "notebooks" / "01_data_scale.html").read_text()
    assert "https://colab.research.google.com/github/" in page
    assert "/blob/main/notebooks/01_data_scale.ipynb" in page, "the Colab button opens the repository's notebook"


# ----------------------------------------------------------------------------- the browser check

# What each chapter reports, evaluated in the page once its images have loaded and MathJax is done.
REPORT_JS = """(() => {
  const maths = [...document.querySelectorAll(".math")];
  return {
    h1: [...document.querySelectorAll("article h1, main h1")].map(h => h.textContent.trim()),
    images: [...document.images].filter(i => !i.closest("header, nav, .navbar, .bd-sidebar-primary"))
              .map(i => ({src: i.getAttribute("src"), natural: i.naturalWidth,
                          shown: i.getBoundingClientRect().width})),
    math: maths.length,
    typeset: maths.filter(m => m.querySelector("mjx-container")).length,
    math_errors: document.querySelectorAll("mjx-merror").length,
    citations: [...document.querySelectorAll("a[href*='references.html#']")]
                 .map(a => ({href: a.getAttribute("href"), text: a.textContent.trim()})),
    ids: [...document.querySelectorAll("[id]")].map(e => e.id),
    unresolved: document.body.innerText.includes("??"),
    script_tags: [...document.querySelectorAll("script[src]")].map(s => s.getAttribute("src")),
    labels: [...document.querySelectorAll(".citation .label")].map(l => l.textContent.replace(/[\\[\\]]/g, "")),
  };
})()"""
YEAR = re.compile(r"\b(19|20)\d\d[a-z]?\b")  # "Lee et al., 2022", or "2020" of "Cordonnier et al. (2020)"
# JavaScript a page may fetch: 2.9 MB now, of which the theme's icon font script (fontawesome.js) is
# 1.5 MB and MathJax 1.2 MB; 6.7 MB in 70 scripts while MathJax's parts were all loaded as scripts.
JS_BUDGET = 3_500_000


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """An HTTP server on 127.0.0.1 for `directory`; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def chromium_binary():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("CI: Debian's chromium is required for the browser check (scripts/test.sh installs it as root)")
    pytest.skip("browser check skipped: chromium is not installed (apt-get install chromium; CI installs it)")


def test_browser_check_reports_errors_failed_loads_and_foreign_requests(tmp_path):
    """The checker itself: each kind of problem on a small site is caught; a clean page has none."""
    binary = chromium_binary()
    site = tmp_path / "site"
    site.mkdir()
    (site / "ok.js").write_text("window.okLoaded = true;" + " " * 977)  # 1000 bytes
    pages = {
        "clean": '<script src="ok.js"></script><p>fine</p><script>console.log("just a log")</script>',
        "throws": '<script>throw new Error("deliberate exception")</script>',
        "console": '<script>console.error("deliberate console error")</script>',
        "missing_image": '<img src="missing.png" alt="">',
        "missing_script": '<script src="missing.js"></script>',
        "foreign": '<img src="http://localhost:{port}/ok.js" alt="">',
    }
    with serve(site) as base, Browser(binary, tmp_path / "profile") as browser:
        port = base.rsplit(":", 1)[1]
        results = {}
        for name, body in pages.items():
            (site / f"{name}.html").write_text(f"<!doctype html><html><body>{body.format(port=port)}</body></html>")
            results[name] = browser.open_page(f"{base}/{name}.html", report_js="document.title", timeout=30)
    assert results["clean"].problems() == []
    assert results["clean"].scripts == [(f"{base}/ok.js", 1000)]
    assert any("deliberate exception" in e for e in results["throws"].errors), results["throws"].errors
    assert any("deliberate console error" in e for e in results["console"].errors), results["console"].errors
    assert f"{base}/missing.png (HTTP 404)" in results["missing_image"].failed_loads
    assert f"{base}/missing.js (HTTP 404)" in results["missing_script"].failed_loads
    assert results["foreign"].foreign == [f"http://localhost:{port}/ok.js"]
    for name in pages:
        assert (name == "clean") != bool(results[name].problems()), f"{name}: {results[name].problems()}"


PHONE_WIDTH = 420  # px: the narrowest screen the book is checked on


def test_overflow_check_finds_what_widens_a_phone_width_page(tmp_path):
    """The 420-px check on small pages: a wide box is caught and named; a box that scrolls is not;
    the book's style sheet keeps a wide display equation and a long title inside the screen."""
    binary = chromium_binary()
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(ROOT / "book" / "_ext" / "static" / "prs-book.css", site / "prs-book.css")
    equation = ('<div class="math"><mjx-container display="true" style="display: block">'
                '<span style="display: inline-block; width: 900px">E = mc^2</span></mjx-container></div>')
    title = '<h1 style="font-size: 72px">Reparameterization Scheduling</h1>'
    pages = {
        "fits": "<p>a short page</p>",
        "wide": '<div class="wide" style="width: 1000px">too wide</div>',
        "scrolls": '<div style="overflow-x: auto"><div style="width: 1000px">scrolls in its box</div></div>',
        "equation_unstyled": equation,
        "equation": equation,
        "title_unstyled": title,
        "title": title,
    }
    with serve(site) as base, Browser(binary, tmp_path / "profile", width=PHONE_WIDTH) as browser:
        reports = {}
        for name, body in pages.items():
            style = "" if name.endswith("unstyled") or name in ("fits", "wide", "scrolls") else \
                '<link rel="stylesheet" href="prs-book.css">'
            (site / f"{name}.html").write_text(f'<!doctype html><html lang="en"><head>{style}</head>'
                                               f'<body style="margin: 0">{body}</body></html>')
            result = browser.open_page(f"{base}/{name}.html", report_js=OVERFLOW_JS, timeout=30)
            reports[name] = result.report
    assert reports["fits"]["viewport"] == PHONE_WIDTH and overflow_problems(reports["fits"]) == []
    (problem,) = overflow_problems(reports["wide"])
    assert problem.startswith(f"the page is 1000 px wide on a {PHONE_WIDTH} px screen: div.wide reaches 1000 px")
    assert overflow_problems(reports["scrolls"]) == []
    assert overflow_problems(reports["equation_unstyled"]) and overflow_problems(reports["title_unstyled"]), \
        "without the style sheet these pages overflow (else this test checks nothing)"
    assert overflow_problems(reports["equation"]) == [] and overflow_problems(reports["title"]) == []


def png_dpi(path: Path) -> float:
    """Horizontal resolution from a PNG's pHYs chunk (dots per inch); 0 when it has none."""
    data = path.read_bytes()
    at = data.find(b"pHYs")
    if at < 0:
        return 0.0
    per_unit, _, unit = struct.unpack(">IIB", data[at + 4:at + 13])
    return per_unit * 0.0254 if unit == 1 else 0.0


@pytest.fixture(scope="session")
def browser_results(smoke_book, tmp_path_factory):
    binary = chromium_binary()
    results = {}
    with serve(smoke_book.html) as base, Browser(binary, tmp_path_factory.mktemp("chromium-profile")) as browser:
        for chapter in CHAPTERS:
            results[chapter] = browser.open_page(f"{base}/{chapter}.html", report_js=REPORT_JS, timeout=90)
    sizes = ", ".join(f"{c}: {len(r.scripts)} scripts, {r.script_bytes / 1e6:.2f} MB" for c, r in results.items())
    print(f"JavaScript per page: {sizes}")
    return results


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_renders_in_chromium_without_console_errors(browser_results, chapter):
    result = browser_results[chapter]
    report = result.report
    assert not result.problems(), f"{chapter}: " + "\n".join(result.problems())
    assert report["h1"], f"{chapter}: no title rendered"
    assert not report["unresolved"], f"{chapter}: '??' in the page (an unresolved reference)"
    broken = [img["src"] for img in report["images"] if img["natural"] <= 0]
    assert not broken, f"{chapter}: images that did not load: {broken}"
    if chapter.startswith("notebooks/"):
        assert report["images"], f"{chapter}: no figures"
    assert report["typeset"] == report["math"], \
        f"{chapter}: {report['math'] - report['typeset']} of {report['math']} equations were not typeset by MathJax"
    assert report["math_errors"] == 0, f"{chapter}: MathJax reported errors"
    if chapter in MATH_CHAPTERS:
        assert report["math"] > 0, f"{chapter}: no equations found"
    if chapter in CITING_CHAPTERS:
        assert report["citations"], f"{chapter}: no resolved citation links"
    alpha = [c["text"] for c in report["citations"] if not YEAR.search(c["text"])]
    assert not alpha, f"{chapter}: citations not in author-year form (alpha labels?): {alpha}"


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_loads_mathjax_once_and_little_javascript(browser_results, chapter):
    result = browser_results[chapter]
    has_math = result.report["math"] > 0  # Sphinx adds MathJax only to pages with math
    tags = [src for src in result.report["script_tags"] if "mathjax" in src.lower()]
    assert len(tags) == has_math and all("_static/mathjax/tex-mml-chtml.js" in src for src in tags), \
        f"{chapter}: MathJax script tags {tags}"
    fetched = [url for url, _ in result.scripts if url.split("?")[0].endswith("/tex-mml-chtml.js")]
    assert len(fetched) == has_math, f"{chapter}: tex-mml-chtml.js fetched {len(fetched)} times"
    assert result.script_bytes <= JS_BUDGET, \
        f"{chapter}: {result.script_bytes} bytes of JavaScript in {len(result.scripts)} scripts (budget {JS_BUDGET})"


@pytest.mark.slow
@pytest.mark.parametrize("chapter", [c for c in CHAPTERS if c.startswith("notebooks/")])
def test_figures_are_legible_at_the_width_the_book_shows_them(browser_results, smoke_book, chapter):
    """Every figure: at least 150 dpi, and its tick labels at least 9 pt as the page shows them."""
    tick_pt = min(plots.BOOK_STYLE["xtick.labelsize"], plots.BOOK_STYLE["ytick.labelsize"])
    figures = [image for image in browser_results[chapter].report["images"] if "_images/" in image["src"]]
    assert figures, f"{chapter}: no figures"
    for image in figures:
        path = (smoke_book.html / chapter).parent / image["src"]
        dpi = png_dpi(path)
        assert dpi >= 150, f"{chapter}: {image['src']} is {dpi:.0f} dpi"
        shown_pt = tick_pt * dpi * image["shown"] / (96.0 * image["natural"])
        assert shown_pt >= 9.0, (f"{chapter}: {image['src']} ({image['natural']} px) is shown {image['shown']:.0f} px "
                                 f"wide: its {tick_pt} pt tick labels read as {shown_pt:.1f} pt")


@pytest.fixture(scope="session")
def phone_results(smoke_book, tmp_path_factory):
    binary = chromium_binary()
    with serve(smoke_book.html) as base, \
            Browser(binary, tmp_path_factory.mktemp("chromium-phone"), width=PHONE_WIDTH) as browser:
        return {chapter: browser.open_page(f"{base}/{chapter}.html", report_js=OVERFLOW_JS, timeout=90)
                for chapter in CHAPTERS}


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_fits_a_phone_width_screen(phone_results, chapter):
    """At 420 px nothing widens the page: equations and tables scroll in their box, titles wrap."""
    result = phone_results[chapter]
    assert not result.problems(), f"{chapter} at {PHONE_WIDTH} px: " + "\n".join(result.problems())
    assert overflow_problems(result.report) == [], f"{chapter}: " + "\n".join(overflow_problems(result.report))


@pytest.mark.slow
def test_citations_point_at_entries_of_the_references_page(browser_results):
    labels = browser_results["book/references"].report["labels"]
    assert labels and all(YEAR.search(label) for label in labels), f"references not labelled author-year: {labels}"
    ids = set(browser_results["book/references"].report["ids"])
    for chapter in CITING_CHAPTERS:
        for citation in browser_results[chapter].report["citations"]:
            href = citation["href"]
            assert href.split("#", 1)[1] in ids, f"{chapter}: citation {href} has no entry"
