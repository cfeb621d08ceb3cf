"""The notebooks' first cell, as Colab meets it: prs.experiments.set_up picks the profile, Drive and
provenance for the runtime; the cell itself only installs prs and calls it."""

import json
import os
import types
import warnings
from pathlib import Path

import nbformat
import pytest

from prs import experiments as ex
from prs.errors import UserError
from prs.experiments import runtime

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("requested, in_colab, gpu, expected", [
    (None, True, "Tesla T4", "colab"),  # a Colab GPU runtime runs the colab profile
    (None, True, None, None),  # a Colab CPU runtime: the parameters cell (smoke)
    (None, False, "NVIDIA H200", None),  # elsewhere the parameters cell or papermill decides
    ("full", True, "Tesla T4", "full"),
    ("smoke", True, "Tesla T4", "smoke"),
])
def test_profile_choice(requested, in_colab, gpu, expected):
    assert runtime.choose_profile(requested, in_colab, gpu) == expected


def test_an_unknown_profile_is_one_line_naming_the_choices():
    with pytest.raises(UserError, match=r"^PROFILE = 'ful': no such profile; choose one of colab, full, smoke"):
        runtime.choose_profile("ful", True, None)


@pytest.mark.parametrize("requested, in_colab, profile, expected", [
    (None, True, "colab", True), (None, True, "full", True),  # GPU profiles keep runs on Drive
    (None, True, "smoke", False), (None, True, None, False),  # smoke is not worth a Drive prompt
    (True, True, "smoke", True), (False, True, "full", False),  # unless asked
    (None, False, "full", False),
])
def test_drive_is_mounted_for_gpu_profiles_or_when_asked(requested, in_colab, profile, expected):
    assert runtime.choose_drive(requested, in_colab, profile) is expected


def test_drive_off_colab_is_an_error():
    with pytest.raises(UserError, match="only on Colab"):
        runtime.choose_drive(True, False, "full")


class FakeDistribution:
    def __init__(self, direct_url):
        self.direct_url = direct_url

    def read_text(self, name):
        assert name == "direct_url.json"
        return self.direct_url


@pytest.mark.parametrize("direct_url, expected", [
    (json.dumps({"url": "https://github.com/o/r", "vcs_info": {"vcs": "git", "requested_revision": "main",
                                                              "commit_id": "0123456789abcdef0123"}}),
     "0123456789abcdef0123"),
    (json.dumps({"url": "file:///work/main", "dir_info": {"editable": True}}), None),
    (None, None),  # installed from an index: no direct_url.json
])
def test_installed_commit_is_the_one_pip_resolved(direct_url, expected, monkeypatch):
    monkeypatch.setattr(runtime.metadata, "distribution", lambda name: FakeDistribution(direct_url))
    assert runtime.installed_commit() == expected


def test_a_gpu_profile_on_a_cpu_warns_loudly(capsys):
    with pytest.warns(RuntimeWarning, match="profile 'full' is sized for a GPU, but no CUDA GPU is visible"):
        assert runtime.warn_if_gpu_profile_on_cpu("full", None) is True
    assert "!! WARNING: profile 'full'" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runtime.warn_if_gpu_profile_on_cpu("smoke", None) is False
        assert runtime.warn_if_gpu_profile_on_cpu("colab", "Tesla T4") is False


def test_notebook_params_warn_when_a_gpu_profile_runs_on_the_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "cuda_device", lambda: (None, False))
    with pytest.warns(RuntimeWarning, match="profile 'colab' is sized for a GPU"):
        ex.notebook_params("01_data_scale", {}, profile="colab")


def test_set_up_on_a_colab_t4(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(runtime, "cuda_device", lambda: ("Tesla T4", False))
    monkeypatch.setattr(runtime, "installed_commit", lambda: "0123456789abcdef0123")
    monkeypatch.delenv("PRS_ROOT", raising=False)
    monkeypatch.setenv("PRS_COMMIT", "unknown")
    monkeypatch.chdir(tmp_path)
    result = runtime.set_up(None, drive=None, in_colab=True)
    assert result == runtime.Runtime(in_colab=True, gpu="Tesla T4", native_bf16=False, profile="colab", drive=True,
                                     commit="0123456789abcdef0123")
    assert os.environ["PRS_COMMIT"] == "0123456789ab", "the runs record the commit pip installed"
    assert os.environ["PRS_ROOT"] == str(tmp_path), "relative roots start at Colab's working folder"
    line = capsys.readouterr().out.strip()
    assert "Tesla T4 (no native bf16: fp16 autocast)" in line and "profile: colab" in line
    assert "Google Drive" in line and "0123456789ab" in line


def test_the_set_up_cell_runs_outside_colab(monkeypatch, capsys):
    """The committed cell, executed as it is: no install, no Drive, the parameters cell decides."""
    monkeypatch.setattr(runtime, "cuda_device", lambda: (None, False))
    for name in ex.NOTEBOOKS:
        cell = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells[1]
        namespace = {}
        exec(compile(cell.source, f"{name}:set-up", "exec"), namespace)  # noqa: S102 (our notebook)
        assert namespace["IN_COLAB"] is False and namespace["PROFILE"] is None
        assert namespace["RUNTIME"].drive is False and namespace["RUNTIME"].gpu is None
        assert "GPU: none, CPU only" in capsys.readouterr().out


def test_the_set_up_cell_shows_pips_error(monkeypatch):
    """On Colab a failed install raises with pip's own output, not a bare CalledProcessError."""
    import subprocess
    import sys

    cell = nbformat.read(ROOT / "notebooks" / "01_data_scale.ipynb", as_version=4).cells[1]
    failed = types.SimpleNamespace(returncode=1, stdout="", stderr="ERROR: Could not find a version that satisfies")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: failed)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(RuntimeError, match=r"pip install failed \(exit 1\):\nERROR: Could not find a version"):
        exec(compile(cell.source, "set-up", "exec"), {})  # noqa: S102
