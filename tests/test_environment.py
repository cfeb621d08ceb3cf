"""environment.yml, environment-cuda.yml, requirements-lock.txt and pyproject.toml describe the same
installation: the lock pins what pyproject.toml asks for; environment.yml installs pyproject.toml's ranges
(anywhere), environment-cuda.yml the lock (Linux x86-64 with CUDA 13)."""

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


# conda-forge names of PyPI packages, where they differ
CONDA_NAMES = {"torch": "pytorch"}
FRONT_ENDS = {"jupyterlab", "notebook"}  # what opens the notebooks; not a dependency of the package


def environment(name: str) -> tuple[dict[str, str], list[str]]:
    """({conda package: version spec}, [pip lines]) of an environment file."""
    env = yaml.safe_load((ROOT / name).read_text())
    assert env["channels"] == ["conda-forge"], f"{name}: conda-forge only (defaults has other terms of use)"
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            assert list(dep) == ["pip"], f"{name}: unexpected entry {dep}"
            pip += dep["pip"]
        else:
            spec = dep.replace(" ", "")
            package = re.match(r"[A-Za-z0-9_.-]+", spec).group(0)
            conda[canonicalize_name(package)] = spec[len(package):]
    return conda, pip


def check_python(name: str, conda: dict) -> None:
    assert conda.get("python") == "=3.11", f"{name}: python=3.11"
    assert Version("3.11") in SpecifierSet(pyproject()["project"]["requires-python"])
    assert "pip" in conda, f"{name}: pip from conda"


def test_environment_yml_installs_pyproject_with_every_extra_and_torch_from_conda_forge():
    """environment.yml: torch/torchvision from conda-forge (CPU, MPS or CUDA build as the machine has),
    the rest from pyproject.toml's ranges with every extra, and a Jupyter front end."""
    conda, pip = environment("environment.yml")
    check_python("environment.yml", conda)
    project = pyproject()["project"]
    requirements = {canonicalize_name(Requirement(r).name): Requirement(r) for r in project["dependencies"]}
    from_conda = {name: spec for name, spec in conda.items() if name not in {"python", "pip"} | FRONT_ENDS}
    by_conda_name = {canonicalize_name(CONDA_NAMES.get(n, n)): n for n in requirements}
    for conda_name, spec in from_conda.items():
        assert conda_name in by_conda_name, \
            f"environment.yml: conda package {conda_name} is not a dependency in pyproject.toml"
        req = requirements[by_conda_name[conda_name]]
        assert SpecifierSet(spec) == req.specifier, \
            f"environment.yml: {conda_name}{spec} disagrees with pyproject's {req}"
    assert {"torch", "torchvision"} <= {by_conda_name[n] for n in from_conda}, \
        "torch and torchvision come from conda-forge together (a pip torch would be the Linux CUDA wheel)"
    assert conda.keys() & FRONT_ENDS, f"environment.yml: no Jupyter front end ({' or '.join(sorted(FRONT_ENDS))})"
    extras = sorted(project["optional-dependencies"])
    assert pip == [f"-e .[{','.join(extras)}]"], \
        f"environment.yml: pip installs this package with every extra of pyproject.toml ({extras}), nothing else"


def test_environment_cuda_yml_installs_the_pip_lock():
    conda, pip = environment("environment-cuda.yml")
    check_python("environment-cuda.yml", conda)
    assert set(conda) == {"python", "pip"}, "environment-cuda.yml: no conda package may shadow a pip-locked one"
    assert pip[:2] == ["-r requirements-lock.txt", "-e ."], "the lock file and this package"
    rest = {canonicalize_name(Requirement(line).name) for line in pip[2:]}
    assert rest and rest <= FRONT_ENDS, f"environment-cuda.yml: besides the lock, only a Jupyter front end: {pip[2:]}"
    assert not rest & set(lock()), "the front end is not pinned by the lock, so it cannot contradict it"


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
