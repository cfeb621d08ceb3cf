"""The smoke book end to end.

`prs reproduce --profile smoke` runs once per session (into a temporary build folder, with its own
runs and data): papermill executes every notebook, Jupyter Book builds the HTML with warnings as
errors. Then: the committed notebooks are untouched, nbval re-executes the executed copies, and
headless Chromium opens every chapter to check that its figures loaded, its equations were typeset
and its citations resolved. In CI (CI=true) the browser check must run; elsewhere it is skipped,
with a message, when Chromium is missing.
"""

import functools
import html as html_lib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

import yaml

from prs import cli
from prs import experiments as ex
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
        assert (src / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()


# ----------------------------------------------------------------------------- slow: the smoke book


def _digest(paths):
    return {p.name: p.read_bytes() for p in paths}


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke_book")
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    before = _digest(sources)
    env = {**os.environ, "PRS_DATA": str(tmp / "data")}
    command = [sys.executable, "-m", "prs", "reproduce", "--profile", "smoke", "--output", str(tmp / "_build"),
               "--set", f"run_root={tmp / 'runs'}"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
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
def test_nbval_validates_the_executed_notebooks(smoke_book):
    """nbval re-executes each executed copy (runs are reused) and fails on any error."""
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
               *sorted(str(p) for p in smoke_book.executed.glob("*.ipynb"))]
    done = subprocess.run(command, cwd=smoke_book.tmp, env=smoke_book.env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", done.stdout)


@pytest.mark.slow
def test_book_has_every_chapter_and_offline_mathjax(smoke_book):
    for chapter in CHAPTERS:
        assert (smoke_book.html / f"{chapter}.html").is_file(), f"missing {chapter}.html"
    assert (smoke_book.html / "_static" / "mathjax" / "tex-mml-chtml.js").is_file(), \
        "MathJax is served by the book (pip install django-static-mathjax)"
    page = (smoke_book.html / "notebooks" / "01_data_scale.html").read_text()
    assert "https://colab.research.google.com/github/" in page
    assert "/blob/main/notebooks/01_data_scale.ipynb" in page, "the Colab button opens the repository's notebook"


# ----------------------------------------------------------------------------- slow: the browser check

PROBE = """<!doctype html><html><body><pre id="report">pending</pre>
<iframe id="page" src="{src}" style="width:1280px;height:4000px"></iframe>
<script>
const frame = document.getElementById("page");
frame.addEventListener("load", () => {{
  const doc = frame.contentDocument;
  for (const img of doc.images) {{ img.loading = "eager"; }}
  setTimeout(() => {{
    const maths = [...doc.querySelectorAll(".math")];
    const report = {{
      title: doc.title,
      h1: [...doc.querySelectorAll("article h1, main h1")].map(h => h.textContent.trim()),
      images: [...doc.images].filter(i => !i.closest("header, nav, .navbar, .bd-sidebar-primary"))
                .map(i => ({{src: i.getAttribute("src"), width: i.naturalWidth}})),
      math: maths.length,
      typeset: maths.filter(m => m.querySelector("mjx-container")).length,
      math_errors: doc.querySelectorAll("mjx-merror").length,
      citations: [...doc.querySelectorAll("a[href*='references.html#']")].map(a => a.getAttribute("href")),
      ids: [...doc.querySelectorAll("[id]")].map(e => e.id),
      unresolved: doc.body.innerText.includes("??"),
    }};
    document.getElementById("report").textContent = JSON.stringify(report);
  }}, 6000);
}});
</script></body></html>"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def chromium_binary():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("CI: Debian's chromium is required for the browser check (scripts/test.sh installs it as root)")
    pytest.skip("browser check skipped: chromium is not installed (apt-get install chromium; CI installs it)")


@pytest.fixture(scope="session")
def browser_reports(smoke_book, tmp_path_factory):
    binary = chromium_binary()
    probes = smoke_book.html / "_probe"
    probes.mkdir(exist_ok=True)
    handler = functools.partial(QuietHandler, directory=str(smoke_book.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = tmp_path_factory.mktemp("chromium-profile")
    reports = {}
    try:
        for chapter in CHAPTERS:
            probe = probes / (chapter.replace("/", "__") + ".html")
            probe.write_text(PROBE.format(src=f"/{chapter}.html"))
            url = f"http://127.0.0.1:{server.server_address[1]}/_probe/{probe.name}"
            done = subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                   "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                   "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=30000",
                                   "--dump-dom", url], capture_output=True, text=True, timeout=120)
            match = re.search(r'<pre id="report">(.*?)</pre>', done.stdout, re.S)
            assert match and match.group(1) != "pending", f"{chapter}: the page did not load in Chromium"
            reports[chapter] = json.loads(html_lib.unescape(match.group(1)))
    finally:
        server.shutdown()
        shutil.rmtree(probes, ignore_errors=True)
    return reports


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_renders_in_chromium(browser_reports, chapter):
    report = browser_reports[chapter]
    assert report["h1"], f"{chapter}: no title rendered"
    assert not report["unresolved"], f"{chapter}: '??' in the page (an unresolved reference)"
    broken = [img["src"] for img in report["images"] if img["width"] <= 0]
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


@pytest.mark.slow
def test_citations_point_at_entries_of_the_references_page(browser_reports):
    ids = set(browser_reports["book/references"]["ids"])
    for chapter in CITING_CHAPTERS:
        for href in browser_reports[chapter]["citations"]:
            assert href.split("#", 1)[1] in ids, f"{chapter}: citation {href} has no entry"
