"""Sphinx extension of this book (loaded by _config.yml, `sphinx.local_extensions`).

Sphinx 7.4 writes an inline script that an extension registers after the builder has started (as
sphinx-togglebutton and sphinx-thebe do) twice on every page: the builder keeps it once with the
file name None and `prepare_writing` adds it again from the registry with the name ''. sphinx-thebe's
script declares `const THEBE_JS_URL`, so the second copy throws a SyntaxError in every reader's
console. This keeps the first of identical scripts.
"""


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


def setup(app):
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
