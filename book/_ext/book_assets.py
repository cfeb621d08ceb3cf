"""Sphinx extension of this book (loaded by _config.yml, `sphinx.local_extensions`).

1. Author-year citations. `author_year_round` (`bibtex_reference_style`) is sphinxcontrib-bibtex's
   author_year style in round brackets, "(Lee et al., 2022)", "Cordonnier et al. (2020)". pybtex's
   styles label the references page alpha-style ([LLR+22]); the `authoryear` style
   (`bibtex_default_style`) is pybtex's `alpha` style with labels such as [Lee et al., 2022], a letter
   added where two entries would share one (2021a, 2021b).

2. One copy of each inline script. Sphinx 7.4 writes an inline script that an extension registers
   after the builder has started (as sphinx-togglebutton and sphinx-thebe do) twice on every page:
   the builder keeps it once with the file name None and `prepare_writing` adds it again from the
   registry with the name ''. sphinx-thebe's script declares `const THEBE_JS_URL`, so the second
   copy threw a SyntaxError in every reader's console.

3. The book's own style sheet, `static/prs-book.css`: chapters readable on a 420-px-wide screen
   (equations and tables scroll in their own box, long titles wrap). It is served from its own
   static folder, not the book root's `_static/`, whose every file Jupyter Book adds to each page.
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from string import ascii_lowercase

import sphinxcontrib.bibtex.plugin
from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels import BaseLabelStyle
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle


def _round() -> BracketStyle:
    return BracketStyle(left="(", right=")")


@dataclass
class RoundAuthorYear(AuthorYearReferenceStyle):
    bracket_parenthetical: BracketStyle = field(default_factory=_round)
    bracket_textual: BracketStyle = field(default_factory=_round)
    bracket_author: BracketStyle = field(default_factory=_round)
    bracket_label: BracketStyle = field(default_factory=_round)
    bracket_year: BracketStyle = field(default_factory=_round)


def _last_name(person) -> str:
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year(entry) -> str:
    """'Lee et al., 2022', 'Park and Kim, 2022', 'Krizhevsky, 2009'."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in persons]
    if not names:
        who = entry.fields.get("title", entry.key).split(":")[0]
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year(entry) for entry in sorted_entries]
        counts, used = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                used[label] += 1
                label += ascii_lowercase[used[label] - 1]
            yield label


class AuthorYearStyle(AlphaStyle):
    default_label_style = AuthorYearLabels


def _script_key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    return (getattr(script, "filename", script) or "", getattr(script, "priority", 500),
            tuple(sorted((name, str(value)) for name, value in attributes.items())))


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


STATIC = Path(__file__).resolve().parent / "static"
STYLE_SHEET = "prs-book.css"


def add_static_folder(app, config) -> None:
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def setup(app):
    app.connect("config-inited", add_static_folder)
    app.add_css_file(STYLE_SHEET)
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle, force=True)
    sphinxcontrib.bibtex.plugin.register_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_round",
                                                RoundAuthorYear, force=True)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
