"""environment.yml, requirements-lock.txt and pyproject.toml describe the same installation."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements-lock.txt: '{line}' is not pinned with =="
        pins[canonicalize_name(name)] = Version(version)
    return pins


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_installs_python_311_and_the_pip_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and re.match(r"python\b", d)]
    assert python == ["python=3.11"]
    assert Version("3.11") in SpecifierSet(pyproject()["project"]["requires-python"])
    pip = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pip == [["-r requirements-lock.txt", "-e ."]], "pip section: the lock file and this package, nothing else"
    # no conda package may shadow a pip-locked one
    conda = {canonicalize_name(re.split(r"[=<>]", d)[0]) for d in deps if isinstance(d, str)}
    assert conda <= {"python", "pip"}, f"conda packages besides python and pip: {conda - {'python', 'pip'}}"


def test_lock_satisfies_every_requirement_of_the_package_and_its_extras():
    pins = lock()
    project = pyproject()["project"]
    requirements = list(project["dependencies"])
    for extra in ("book", "test"):
        requirements += project["optional-dependencies"][extra]
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is required by pyproject.toml but not pinned in requirements-lock.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements-lock.txt pins {req.name}=={pins[name]}, outside pyproject's '{req.specifier}'"


def test_setup_script_installs_the_locked_torch_pair_first():
    script = (ROOT / "scripts" / "setup-venv.sh").read_text()
    pins = lock()
    for name in ("torch", "torchvision"):
        assert f"{name}=={pins[name]}" in script, f"setup-venv.sh must install the locked {name}"
    assert "-r requirements-lock.txt -e ." in script
