"""The committed notebooks, the table of contents and the Colab links (static checks, no execution)."""

import ast
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from prs import experiments as ex

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = {name: ROOT / "notebooks" / f"{name}.ipynb" for name in ex.NOTEBOOKS}
COLAB = "https://colab.research.google.com/github/"


def load(name):
    return nbformat.read(NOTEBOOKS[name], as_version=4)


def book_config():
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def source_file(entry):
    """The file a toc entry names (entries have no suffix)."""
    for suffix in (".ipynb", ".md"):
        if (ROOT / f"{entry}{suffix}").exists():
            return ROOT / f"{entry}{suffix}"
    return None


@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = load(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: a cell has outputs; clear them before committing"
            assert cell.execution_count is None, f"{name}: a cell has an execution count"


@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_parameters_cell_defaults_equal_the_smoke_profile(name):
    cells = [c for c in load(name).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: needs exactly one cell tagged 'parameters' (Colab cannot show tags)"
    namespace = {}
    exec(compile(cells[0].source, f"{name}:parameters", "exec"), {}, namespace)  # literals only
    namespace.pop("__annotations__", None)  # the types papermill --help-notebook shows
    assert namespace == ex.notebook_parameters("smoke", name)


@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_parameters_cell_holds_only_literal_assignments(name):
    cell = next(c for c in load(name).cells if "parameters" in c.metadata.get("tags", []))
    for node in ast.parse(cell.source).body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), f"{name}: parameters cell must only assign values"
        ast.literal_eval(node.value)  # papermill replaces these; they must be plain values


@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_first_cell_sets_up_colab_without_pins_and_colab_steps_are_guarded(name):
    nb = load(name)
    first = nb.cells[0] if nb.cells[0].cell_type == "code" else nb.cells[1]
    assert nb.cells.index(first) <= 1, f"{name}: the Colab set-up must come first (after the title)"
    assert "google.colab" in first.source and "IN_COLAB" in first.source
    assert "pip" in first.source and "install" in first.source
    assert not re.search(r"(torch|numpy|torchvision)\s*[=<>~]=", first.source), "no torch/numpy pins on Colab"
    assert "ex.set_up(PROFILE, drive=DRIVE, in_colab=IN_COLAB)" in first.source, \
        "the set-up cell hands the runtime's decisions to prs.experiments.set_up (tested there)"
    assert "capture_output=True" in first.source and "pip.stderr" in first.source, "pip's own error is shown"
    assert "hide-input" in first.metadata.get("tags", []), "the book collapses the set-up: the narrative comes first"
    assert '"full"' in first.source, "the set-up cell says how to switch to the full profile"
    install = re.search(r'git\+(https://\S+?)@(\w+)"', first.source)
    assert install and install.group(1) == book_config()["repository"]["url"] and install.group(2) == "main"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            if "google.colab import" in line or "drive.mount" in line:
                guard = [prev for prev in lines[:i] if prev.startswith("if IN_COLAB")]
                assert guard and line.startswith((" ", "\t")), f"{name}: Colab-only step not under 'if IN_COLAB'"


@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_notebook_ends_with_a_computed_verdict(name):
    last_code = [c for c in load(name).cells if c.cell_type == "code"][-1]
    assert "_verdict(" in last_code.source and ".markdown(" in last_code.source


def test_notebook_specs_agree_with_the_profiles_the_toc_and_the_notebooks():
    """One spec per notebook: the profiles have exactly its parameters, _toc.yml lists exactly the
    specs' notebooks in order, and each notebook collects its parameters, runs its spec's grid
    and ends with its spec's verdict."""
    names = [s.name for s in ex.SPECS]
    assert tuple(names) == ex.NOTEBOOKS and len(set(names)) == len(names)
    for profile in ex.profile_names():
        assert list(ex.read_profile(profile)["notebooks"]) == names, profile
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    (experiments,) = [part for part in toc["parts"] if part["caption"] == "The experiments"]
    assert [chapter["file"] for chapter in experiments["chapters"]] == [f"notebooks/{n}" for n in names]
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(names)
    for spec in ex.SPECS:
        assert spec.claim == ex.PAPER_CLAIMS[spec.name] and spec.claim
        code = "\n".join(c.source for c in load(spec.name).cells if c.cell_type == "code")
        assert f'ex.notebook_params("{spec.name}", globals()' in code, spec.name
        assert f'ex.notebook_trials("{spec.name}", params)' in code, spec.name
        last = [c for c in load(spec.name).cells if c.cell_type == "code"][-1]
        assert f"ex.{spec.verdict.__name__}(" in last.source, (spec.name, spec.verdict.__name__)


def test_every_notebook_and_page_is_in_the_toc_and_exists():
    files = toc_files()
    for name in ex.NOTEBOOKS:
        assert f"notebooks/{name}" in files
    for entry in files:
        assert source_file(entry) is not None, f"_toc.yml names {entry}, which does not exist"
    for page in ("book/intro", "book/decisions", "book/cost", "book/references"):
        assert page in files


def test_book_config_is_what_the_build_relies_on():
    config = book_config()
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    for hidden in (".venv", "_build", ".pytest_cache", ".notes"):
        assert hidden in config["exclude_patterns"]
    assert config["repository"]["branch"] == "main"
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["bibtex_bibfiles"] == ["book/references.bib"]


def test_launch_urls_point_at_files_in_the_repository():
    """sphinx-book-theme's Colab URL: {colab}/github/{org}/{repo}/blob/{branch}/{path_to_book}/{page}.ipynb"""
    config = book_config()
    repo = config["repository"]
    org_repo = repo["url"].removeprefix("https://github.com/")
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", org_repo), "repository.url must be https://github.com/ORG/REPO"
    prefix = repo.get("path_to_book", "").strip("/")
    for entry in toc_files():
        if not entry.startswith("notebooks/"):
            continue
        path = f"{prefix}/{entry}.ipynb" if prefix else f"{entry}.ipynb"
        assert (ROOT / path).is_file(), f"the launch button of {entry} would open {path}, missing from the repo"


def test_readme_colab_badges_match_the_repository_setting():
    readme = (ROOT / "README.md").read_text()
    org_repo = book_config()["repository"]["url"].removeprefix("https://github.com/")
    links = re.findall(re.escape(COLAB) + r"([^/]+/[^/]+)/blob/([^/]+)/([^)\s]+)", readme)
    assert sorted(path for _, _, path in links) == sorted(f"notebooks/{n}.ipynb" for n in ex.NOTEBOOKS)
    for repo, branch, path in links:
        assert repo == org_repo and branch == "main" and (ROOT / path).is_file()


def test_readme_gives_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/book.sh" in readme and "bash scripts/test.sh" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("bash scripts/test.sh")


def test_references_cover_every_citation():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    for key in ("lee2022prs", "dascoli2021tcnn", "dascoli2021convit", "cordonnier2020relationship",
                "park2022vits", "touvron2021deit", "he2016resnet", "wightman2019timm"):
        assert key in keys
    texts = [source_file(entry).read_text() for entry in toc_files()]
    cited = {k.strip() for text in texts for group in re.findall(r"\{cite[:\w]*\}`([^`]+)`", text)
             for k in group.split(",")}
    assert cited and cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"


def test_cost_page_lists_each_profiles_training_plan():
    rows = {}
    for line in (ROOT / "book" / "cost.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in ex.profile_names():
            for model in cells[1].split(" / "):
                rows[(cells[0], model)] = (int(cells[2].removesuffix(" each")), float(cells[3].removesuffix(" each")))
    for profile in ex.profile_names():
        for plan in ex.training_plan(profile):
            assert rows.get((profile, plan["model"])) == (plan["runs"], pytest.approx(plan["dataset_passes"])), \
                f"book/cost.md: update the row of {profile} / {plan['model']}"
