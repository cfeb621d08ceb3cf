"""`prs reproduce`: execute the book's notebooks under a profile with papermill, then build the book.

    prs reproduce --profile smoke|colab|full [--only NAME] [--force] [--output DIR] [--cwd DIR]
                  [--set NAME=VALUE] [--no-book]

The committed notebooks carry no outputs. Each is executed with the profile's parameters (plus
`profile`) into `<output>/executed/notebooks/NAME.ipynb`, never into the sources. Training inside
the notebooks is resumable: finished runs are reused and unfinished ones resume from their last
checkpoint, so rerunning the same command after an interruption continues where it stopped;
`--force` first deletes the run directories of the selected notebooks' grids.

The book is then built from the executed copies with Jupyter Book's execution off, so the HTML
shows exactly what papermill ran: `<output>/book_src/` mirrors the repository (`_config.yml`,
`_toc.yml`, `book/`, and the executed notebooks at `notebooks/`, each showing its parameters once:
papermill's injected cell of the values it ran with), so that launch buttons point at
`notebooks/NAME.ipynb` in the repository; `jupyter-book build -W --keep-going` turns it into
`<output>/html`. MathJax is served from the book itself (`html/_static/mathjax/`, one script tag)
when the `mathjax` package (django-static-mathjax) is installed, so the HTML also renders offline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import yaml

from prs import config as config_mod
from prs import experiments
from prs.errors import UserError

BOOK_FILES = ("_config.yml", "_toc.yml")
BOOK_DIRS = ("book",)
MATHJAX_PARTS = ("tex-mml-chtml.js", "a11y", "input", "output", "sre", "ui")  # what tex-mml-chtml loads
MATHJAX_EXTRA = "_mathjax"  # staged folder, copied to the HTML root as it is (html_extra_path)
MATHJAX_PATH = "mathjax/tex-mml-chtml.js"  # the one script tag, relative to _static: html/_static/mathjax/
BUILT_MARKER = ".prs-reproduce"  # in book_src/ and html/: made by this command, so it may replace them


# ----------------------------------------------------------------------------- parameters


def parse_overrides(assignments: Sequence[str]) -> dict:
    """{parameter: value} from NAME=VALUE items (notebook parameters are flat, unlike config keys)."""
    return dict(config_mod.parse_assignment(item, "NAME=VALUE", "epochs=1") for item in assignments)


def plan_parameters(profile: str, notebooks: list[str], overrides: dict) -> dict[str, dict]:
    """{notebook: parameters}; an override must name a parameter of at least one selected notebook."""
    params = {nb: experiments.notebook_parameters(profile, nb) for nb in notebooks}
    known = {name for p in params.values() for name in p}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(f"--set {unknown[0]}: not a parameter of {', '.join(notebooks)}; "
                        f"parameters: {', '.join(sorted(known))}")
    if "profile" in overrides:
        raise UserError("--set profile: use --profile to choose the profile")
    for p in params.values():
        p.update({k: v for k, v in overrides.items() if k in p})
    return {nb: experiments.check_parameters(nb, p) for nb, p in params.items()}


def select_notebooks(only: Sequence[str]) -> list[str]:
    for name in only:
        experiments.check_notebook(name)
    return [nb for nb in experiments.NOTEBOOKS if not only or nb in only]


def check_root(root: Path, build_book: bool) -> None:
    needed = [root / "notebooks"] + ([root / f for f in BOOK_FILES] if build_book else [])
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise UserError(f"--cwd {root}: not the repository root ({', '.join(missing)} missing); "
                        "run from the repository root or pass --cwd")


def runs_base(root: Path) -> Path:
    """Where relative run and data roots start: $PRS_ROOT if set, else the repository root (--cwd).
    The notebooks' kernels are given the same folder as $PRS_ROOT (prs.experiments.project_root)."""
    variable = os.environ.get(experiments.ROOT_VARIABLE)
    return experiments.project_root() if variable else root


@contextlib.contextmanager
def kernel_environment(base: Path):
    """$PRS_ROOT = base while papermill's kernels run (they inherit this process's environment)."""
    before = os.environ.get(experiments.ROOT_VARIABLE)
    os.environ[experiments.ROOT_VARIABLE] = str(base)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(experiments.ROOT_VARIABLE, None)
        else:
            os.environ[experiments.ROOT_VARIABLE] = before


def delete_runs(notebook: str, params: dict, base: Path, say) -> None:
    """--force: remove the run directories this notebook's grid uses (relative paths start at base)."""
    params = experiments.resolve_roots(params, base)
    for trial in experiments.unique_trials(experiments.notebook_trials(notebook, params)):
        run_dir = experiments.run_dir(trial)
        if run_dir.exists():
            shutil.rmtree(run_dir)
            say(f"  --force: deleted {run_dir}")


# ----------------------------------------------------------------------------- execution


def execute(notebook: str, params: dict, root: Path, executed_dir: Path, progress: bool) -> float:
    """Run one notebook with papermill; returns seconds. A failing cell is a UserError naming the copy."""
    import papermill

    source = root / "notebooks" / f"{notebook}.ipynb"
    target = executed_dir / "notebooks" / f"{notebook}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    try:
        papermill.execute_notebook(str(source), str(target), parameters=params, cwd=str(root),
                                   progress_bar=progress, log_output=True, report_mode=False)
    except papermill.PapermillExecutionError as e:
        raise UserError(f"notebook {notebook} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); "
                        f"the executed copy with the traceback is {target}") from None
    return time.perf_counter() - tick


# ----------------------------------------------------------------------------- the book


def mathjax_source() -> Path | None:
    """MathJax 3's es5 folder from the `mathjax` package (PyPI: django-static-mathjax), if installed."""
    try:
        import mathjax
    except ImportError:
        return None
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    return es5 if (es5 / "tex-mml-chtml.js").is_file() else None


def show_parameters_once(path: Path) -> bool:
    """Papermill puts the values a notebook ran with in a cell of its own (tagged `injected-parameters`)
    after the `parameters` cell of defaults; the book shows only that one, by tagging the defaults'
    cell `remove-cell` (their types and meanings: papermill --help-notebook). Returns whether it did."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    tags = [cell.metadata.get("tags", []) for cell in nb.cells]
    if not any("injected-parameters" in t for t in tags):
        return False
    for cell in nb.cells:
        cell_tags = cell.metadata.setdefault("tags", [])
        if "parameters" in cell_tags and "remove-cell" not in cell_tags:
            cell_tags.append("remove-cell")
    nbformat.write(nb, path)
    return True


def made_by_reproduce(folder: Path, root: Path) -> bool:
    """Is `folder` (an output's book_src/ or html/) one this command made, so that it may replace it?
    Yes when it holds BUILT_MARKER, is empty, or is a build from before the marker (book_src/ with
    the repository's own _toc.yml; html/ beside the jupyter_book/_build/html it was copied from)."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    if (folder / BUILT_MARKER).is_file() or not any(folder.iterdir()):
        return True
    if folder.name == "book_src":
        toc = folder / "_toc.yml"
        return toc.is_file() and toc.read_bytes() == (root / "_toc.yml").read_bytes()
    return (folder / "index.html").is_file() and (folder.parent / "jupyter_book" / "_build" / "html").is_dir()


def check_output(root: Path, output: Path) -> None:
    """--output: never delete a book_src/ or html/ there that this command did not make."""
    for folder in (output / "book_src", output / "html"):
        if not made_by_reproduce(folder, root):
            raise UserError(f"--output {output}: {folder} exists and was not made by prs reproduce (no {BUILT_MARKER} "
                            "in it); it would be replaced, so nothing was run: give a new or empty --output, or move "
                            "that folder")


def _replace_folder(folder: Path, root: Path) -> None:
    """Remove `folder` (ours, `made_by_reproduce`) so that it can be made again."""
    if not made_by_reproduce(folder, root):
        raise UserError(f"{folder} exists and was not made by prs reproduce; it is kept: move it or choose another "
                        "--output")
    if folder.exists():
        shutil.rmtree(folder)


def stage_book(root: Path, executed_dir: Path, book_src: Path, say) -> None:
    """Mirror the repository's book files into book_src, with the executed notebooks at notebooks/."""
    _replace_folder(book_src, root)
    book_src.mkdir(parents=True)
    (book_src / BUILT_MARKER).write_text("made by prs reproduce: replaced by its next build\n")
    for name in BOOK_FILES:
        shutil.copy2(root / name, book_src / name)
    for name in BOOK_DIRS:
        shutil.copytree(root / name, book_src / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    (book_src / "notebooks").mkdir()
    for notebook in experiments.NOTEBOOKS:
        executed = executed_dir / "notebooks" / f"{notebook}.ipynb"
        if executed.exists():
            shutil.copy2(executed, book_src / "notebooks" / executed.name)
            show_parameters_once(book_src / "notebooks" / executed.name)
        else:
            say(f"  {notebook} has not been executed yet: the book shows it without outputs")
            shutil.copy2(root / "notebooks" / executed.name, book_src / "notebooks" / executed.name)
    config = yaml.safe_load((book_src / "_config.yml").read_text())
    es5 = mathjax_source()
    if es5 is None:
        say("  MathJax is not installed locally (pip install django-static-mathjax): "
            "the book loads it from its CDN, so equations need the network")
    else:
        # Jupyter Book 1 adds every .js under the book's _static/ to every page as a <script>, so MathJax
        # must not be staged there (its components would all load at once, twice over, and clash). Sphinx
        # copies html_extra_path folders verbatim to the HTML root without scanning them: the files land
        # in html/_static/mathjax/ and only tex-mml-chtml.js is loaded (by mathjax_path); it loads the
        # parts it needs itself, on demand.
        target = book_src / MATHJAX_EXTRA / "_static" / "mathjax"
        target.mkdir(parents=True)
        for part in MATHJAX_PARTS:
            (shutil.copytree if (es5 / part).is_dir() else shutil.copy2)(es5 / part, target / part)
        sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {}) or {}
        config["sphinx"]["config"] = {
            **sphinx_config,
            "mathjax_path": MATHJAX_PATH,  # relative to _static
            "html_extra_path": [*sphinx_config.get("html_extra_path", []), MATHJAX_EXTRA],
        }
    (book_src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def jupyter_book_command() -> list[str]:
    script = Path(sys.executable).with_name("jupyter-book")
    if script.exists():
        return [str(script)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise UserError("jupyter-book is not installed; pip install 'prs[book]' (or -r requirements-lock.txt)")


def build_book(root: Path, output: Path, say) -> Path:
    executed_dir, book_src, html = output / "executed", output / "book_src", output / "html"
    stage_book(root, executed_dir, book_src, say)
    jb_dir = output / "jupyter_book"
    # --all: Sphinx would keep citations and labels formatted under an earlier _config.yml (seconds either way)
    command = jupyter_book_command() + ["build", str(book_src), "--path-output", str(jb_dir), "--builder", "html",
                                        "-W", "--keep-going", "--all"]
    say("building the book: " + " ".join(command))
    done = subprocess.run(command, cwd=book_src)
    if done.returncode != 0:
        raise UserError(f"jupyter-book build failed (exit {done.returncode}); see the warnings above")
    _replace_folder(html, root)
    shutil.copytree(jb_dir / "_build" / "html", html)
    (html / BUILT_MARKER).write_text("made by prs reproduce: replaced by its next build\n")
    return html


# ----------------------------------------------------------------------------- the command


def reproduce(profile: str = "smoke", only: Sequence[str] = (), force: bool = False, output: str | None = None,
              cwd: str = ".", assignments: Sequence[str] = (), build: bool = True, book_only: bool = False) -> int:
    """Execute the notebooks (all, or `only` these) under `profile` with papermill, then build the book.

    `assignments` are NAME=VALUE notebook-parameter overrides; `force` deletes the selected
    notebooks' runs first; `build=False` skips the book, `book_only` executes nothing. Every
    input is checked before anything runs or is deleted; errors name the command's flags.
    """
    say = print
    notebooks = select_notebooks(only)
    params = plan_parameters(profile, notebooks, parse_overrides(assignments))
    root = Path(cwd).resolve()
    check_root(root, build_book=build)
    output = Path(output).resolve() if output else root / "_build"
    executed_dir = output / "executed"
    for nb in notebooks:  # validate every grid before anything runs or is deleted
        experiments.notebook_trials(nb, params[nb])
    if book_only and (not build or force or only):
        raise UserError("--book-only: cannot be combined with --no-book, --force or --only")
    if build:
        check_output(root, output)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # papermill streams cell output here
    progress = sys.stderr.isatty()
    timings = {}
    tick = time.perf_counter()
    base = runs_base(root)
    if force:  # all at once, before anything runs: later notebooks reuse earlier ones' runs
        for nb in notebooks:
            delete_runs(nb, params[nb], base, say)
    for i, nb in enumerate([] if book_only else notebooks, 1):
        say(f"[{i}/{len(notebooks)}] {nb} (profile {profile}) -> {executed_dir / 'notebooks' / nb}.ipynb")
        with kernel_environment(base):
            timings[nb] = execute(nb, params[nb], root, executed_dir, progress)
        say(f"[{i}/{len(notebooks)}] {nb} done in {timings[nb]:.0f} s")
    if timings:
        record = executed_dir / "timings.json"
        previous = json.loads(record.read_text()) if record.exists() else {}
        previous.update({nb: {"profile": profile, "seconds": round(s, 1)} for nb, s in timings.items()})
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(previous, indent=1) + "\n")
    if build:
        book_tick = time.perf_counter()
        html = build_book(root, output, say)
        timings["book build"] = time.perf_counter() - book_tick
        say(f"book: {html / 'index.html'}")
    say("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f"; total {time.perf_counter() - tick:.0f} s")
    return 0
