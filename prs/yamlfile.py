"""Reading config YAML: strictly, and bounded in size.

`read_yaml` reads a config file or a packaged preset (`preset_names`) as a mapping; `yaml_data`
parses a YAML text with `StrictLoader`, yaml.safe_load's loader (nothing is evaluated) refusing
duplicate keys and bounding size, depth and alias expansion (its errors are yaml.YAMLError).
`read_yaml` turns everything wrong with a config file into a `UserError` naming the file and the fix.
"""

from __future__ import annotations

import re
import typing
from importlib import resources
from pathlib import Path

import yaml

from prs.errors import UserError


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("prs.presets").iterdir() if p.name.endswith(".yaml"))


# What a config may be: far more than any real one needs, far less than what hurts.
MAX_CONFIG_BYTES = 256 * 1024
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_NODES = 20_000  # values after expanding every alias


class YAMLLimit(yaml.YAMLError):
    """A YAML text beyond MAX_DEPTH or MAX_NODES (e.g. an alias bomb or a list nested 20,000 deep)."""


class StrictLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader (no tags that run code), stricter about what silently misleads:

    - a key given twice in one mapping is an error (safe_load keeps the last one);
    - `1e-3`, `1E5`, `1.0e3` are floats, as in YAML 1.2 (YAML 1.1 reads them as strings);
    - nesting deeper than MAX_DEPTH, or more than MAX_NODES values once aliases are expanded,
      is an error before anything is built (bounded alias expansion).
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLLimit(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, typing.Hashable) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key}' is given twice in one mapping; keep one", key_node.start_mark)
                seen.add(key) if isinstance(key, typing.Hashable) else None
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(  # floats with an exponent and no dot, or no sign in the exponent
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _check_expanded_size(root) -> None:
    """Values and nesting of the document once every alias is expanded, computed per distinct
    node (so in time linear in the text, however much the aliases would expand)."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height)
    started: set[int] = set()

    def measure(node) -> tuple[int, int]:
        if id(node) in done:
            return done[id(node)]
        if id(node) in started:
            raise YAMLLimit("an alias refers to a value that contains it")
        started.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            children = [measure(child) for child in node.value]
        elif isinstance(node, yaml.MappingNode):
            children = [measure(n) for pair in node.value for n in pair]
        else:
            children = []
        values = 1 + sum(c[0] for c in children)
        height = 1 + max((c[1] for c in children), default=0)
        if values > MAX_NODES:
            raise YAMLLimit(f"more than {MAX_NODES} values once its aliases are expanded")
        if height > MAX_DEPTH:
            raise YAMLLimit(f"nested more than {MAX_DEPTH} levels deep once its aliases are expanded")
        done[id(node)] = values, height
        return done[id(node)]

    measure(root)


def yaml_data(text: str):
    """Parse YAML text with StrictLoader (errors are yaml.YAMLError)."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _config_text(path: Path, name) -> str:
    """The text of a config file: UTF-8, no NUL bytes, at most MAX_CONFIG_BYTES."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(f"config '{name}': larger than {MAX_CONFIG_BYTES // 1024} KiB; a config is a short YAML file")
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"config '{name}': cannot be read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config '{name}': not UTF-8 text (binary, or UTF-16?); save it as UTF-8 YAML") from None
    if "\x00" in text:
        raise UserError(f"config '{name}': holds NUL bytes, so it is not a text file; save it as UTF-8 YAML")
    return text


def read_yaml(path_or_preset: str | Path) -> dict:
    """Read a YAML mapping from a file path, or from a packaged preset by name."""
    path = Path(path_or_preset)
    if path.suffix not in (".yaml", ".yml"):
        if str(path_or_preset) not in preset_names():
            raise UserError(
                f"config '{path_or_preset}': not a .yaml file nor a preset; presets: {', '.join(preset_names())}")
        text = resources.files("prs.presets").joinpath(f"{path_or_preset}.yaml").read_text()
    else:
        if not path.is_file():
            raise UserError(f"config file '{path}' does not exist")
        text = _config_text(path, path_or_preset)
    try:
        data = yaml_data(text)
    except YAMLLimit as e:
        raise UserError(f"config '{path_or_preset}': {e}; a config is a short mapping") from None
    except yaml.YAMLError as e:
        raise UserError(f"config '{path_or_preset}': not valid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise UserError(f"config '{path_or_preset}': nested too deeply; a config is a short mapping") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config '{path_or_preset}': the top level must be a mapping, got {type(data).__name__}")
    return data
