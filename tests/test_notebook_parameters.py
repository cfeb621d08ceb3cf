"""The notebooks' parameters as papermill and a CI engineer meet them: `papermill --help-notebook`
gives every one a type and a description, list and dict parameters given as text are read as YAML
(or refused in one line), and relative run and data roots resolve against the repository (or
$PRS_ROOT), never against the kernel's working directory."""

import ast
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from prs import experiments as ex
from prs import reproduce
from prs.errors import UserError
from prs.experiments import profiles

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def conforms(value, annotation) -> bool:
    """isinstance for the annotations the parameters cells use: str, int, float, bool, dict, list[X],
    dict[K, V], Optional[X]."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        return any(conforms(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
    return isinstance(value, annotation)


@pytest.mark.parametrize("name", ex.NOTEBOOKS)
def test_papermill_help_gives_every_parameter_a_type_and_a_description(name):
    inferred = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
    assert list(inferred) == ex.parameter_names(name), "papermill must see every parameter, in order"
    smoke = ex.notebook_parameters("smoke", name)
    for parameter, info in inferred.items():
        assert info["inferred_type_name"] not in ("None", ""), f"{name}: {parameter} has no type"
        assert info["help"], f"{name}: {parameter} has no description"
        assert ast.literal_eval(info["default"]) == smoke[parameter], \
            f"{name}: papermill reads {parameter}'s default as {info['default']!r} (one line per parameter)"
        annotation = eval(info["inferred_type_name"], {"Optional": typing.Optional})  # noqa: S307 (our notebooks)
        for profile in ex.profile_names():
            value = ex.notebook_parameters(profile, name)[parameter]
            assert conforms(value, annotation), \
                f"{name}: {parameter} is {info['inferred_type_name']}, but profile {profile} gives {value!r}"


def test_conforms_tells_types_apart():
    assert conforms([0, None], list[typing.Optional[int]]) and not conforms([0.5], list[int])
    assert conforms(1, float) and not conforms(True, int) and not conforms("x", typing.Optional[list[int]])
    assert conforms({"a": {}}, dict[str, dict]) and not conforms({"a": 1}, dict[str, dict])


@pytest.mark.parametrize("text, expected", [("0.1,0.5,1.0", [0.1, 0.5, 1.0]), ("[0.25, 1.0]", [0.25, 1.0]),
                                            (" 0.5 ", [0.5])])
def test_a_list_parameter_given_as_text_is_read_as_yaml(text, expected):
    params = {**ex.notebook_parameters("smoke", "01_data_scale"), "ratios": text}
    assert ex.check_parameters("01_data_scale", params)["ratios"] == expected


def test_dict_parameters_given_as_text_and_none_where_a_profile_has_none():
    params = {**ex.notebook_parameters("smoke", "04_prs_cifar100"),
              "schedules": "{prs: {name: prs, first: 2, last: 1}}", "switchable_stages": None}
    checked = ex.check_parameters("04_prs_cifar100", params)
    assert checked["schedules"] == {"prs": {"name": "prs", "first": 2, "last": 1}}
    assert checked["switchable_stages"] is None  # colab and full give null: the model's default


@pytest.mark.parametrize("notebook, name, value, expected", [
    ("01_data_scale", "ratios", 0.5, "-p ratios '[0.25, 0.5, 1.0]'"),
    ("01_data_scale", "ratios", "[0.1, ", "expected a list, got '[0.1, '"),
    ("04_prs_cifar100", "schedules", "prs: {name: prs", "-y 'schedules: {prs: {name: prs, first: 2, last: 1}}'"),
    ("01_data_scale", "models", None, "parameter models: expected a list"),
])
def test_a_parameter_of_the_wrong_kind_is_one_clear_line(notebook, name, value, expected):
    params = {**ex.notebook_parameters("smoke", notebook), name: value}
    with pytest.raises(UserError) as error:
        ex.check_parameters(notebook, params)
    message = str(error.value)
    assert expected in message and "\n" not in message and message.startswith(f"parameter {name}: ")


def test_prs_reproduce_reads_set_values_the_same_way():
    params = reproduce.plan_parameters("smoke", ["01_data_scale"], reproduce.parse_overrides(["ratios=0.5,1.0"]))
    assert params["01_data_scale"]["ratios"] == [0.5, 1.0]


# ----------------------------------------------------------------------------- run and data roots


def test_relative_roots_start_at_the_repository_whatever_the_working_directory(tmp_path):
    """As nbval runs an executed notebook: a kernel started in another folder finds the same runs."""
    code = ("import json; from prs import experiments as ex; "
            "p = ex.notebook_params('01_data_scale', {}, profile='smoke'); "
            "print(json.dumps([p['run_root'], p['data_root']]))")
    env = {k: v for k, v in ENV.items() if k not in ("PRS_ROOT", "PRS_DATA")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f'["{ROOT}/runs/smoke", "{ROOT}/data"]'
    assert list(tmp_path.iterdir()) == []


def test_prs_root_names_the_folder_roots_start_at(tmp_path, monkeypatch):
    monkeypatch.delenv("PRS_DATA", raising=False)
    monkeypatch.setenv("PRS_ROOT", str(tmp_path))
    params = ex.notebook_params("01_data_scale", {}, profile="smoke")
    assert (params["run_root"], params["data_root"]) == (str(tmp_path / "runs/smoke"), str(tmp_path / "data"))
    absolute = ex.resolve_roots({"run_root": "/elsewhere/runs", "data_root": "/elsewhere/data"})
    assert absolute == {"run_root": "/elsewhere/runs", "data_root": "/elsewhere/data"}
    monkeypatch.setenv("PRS_DATA", "/shared/data")
    assert ex.resolve_roots({"run_root": "runs", "data_root": None})["data_root"] is None, "$PRS_DATA decides"
    monkeypatch.setenv("PRS_ROOT", "relative/folder")
    with pytest.raises(UserError, match=r"^\$PRS_ROOT: 'relative/folder' must be an absolute path"):
        ex.resolve_roots({"run_root": "runs", "data_root": None})


def test_without_a_checkout_or_prs_root_a_relative_root_is_an_error(tmp_path, monkeypatch):
    """A wheel install (site-packages) has no repository to start at: say so, do not guess the cwd."""
    monkeypatch.delenv("PRS_ROOT", raising=False)
    monkeypatch.setattr(profiles, "__file__", str(tmp_path / "site-packages" / "prs" / "experiments" / "profiles.py"))
    with pytest.raises(UserError, match=r"set \$PRS_ROOT .* or give absolute paths"):
        ex.resolve_roots({"run_root": "runs/smoke", "data_root": "/data"})
    assert ex.resolve_roots({"run_root": "/runs", "data_root": "/data"}) == {"run_root": "/runs", "data_root": "/data"}


def test_prs_reproduce_gives_its_kernels_the_folder_it_resolves_against(tmp_path, monkeypatch):
    monkeypatch.delenv("PRS_ROOT", raising=False)
    assert reproduce.runs_base(tmp_path) == tmp_path
    with reproduce.kernel_environment(tmp_path):
        assert os.environ["PRS_ROOT"] == str(tmp_path) and ex.project_root() == tmp_path
    assert "PRS_ROOT" not in os.environ
    monkeypatch.setenv("PRS_ROOT", "/cache")
    assert reproduce.runs_base(tmp_path) == Path("/cache"), "a PRS_ROOT the user set wins over --cwd"
