"""prs.env: devices and precision named after the setting, and the provenance of a run."""

import contextlib
import subprocess

import pytest
import torch

from prs import env
from prs.errors import UserError


def test_device_and_precision_errors_name_the_setting_they_are_given():
    assert env.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match=r"^--device: 'nonsense' is not a device"):
        env.pick_device("nonsense", setting="--device")
    assert env.autocast_dtype("auto", torch.device("cpu")) is None
    with pytest.raises(UserError, match=r"^train.precision: bf16 autocast is for CUDA; on cpu use fp32 or auto"):
        env.autocast_dtype("bf16", torch.device("cpu"))


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_precision_is_fp16_on_gpus_without_native_bf16(native, expected, monkeypatch):
    """A T4 emulates bf16 (slowly): `auto` gives it fp16, which train() pairs with loss scaling."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True:
                        asked.append(including_emulation) or native)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    assert env.autocast_dtype("auto", torch.device("cuda")) == expected
    assert asked == [False], "emulated bf16 does not count"
    assert env.autocast_dtype("fp32", torch.device("cuda")) is None


def git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=root, check=True,
                   capture_output=True)


def test_git_commit_tells_uncommitted_edits_apart(tmp_path, tmp_path_factory, monkeypatch):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "one")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert env.git_commit(tmp_path) == sha[:12]
    (tmp_path / "untracked.py").write_text("ignored\n")
    assert env.git_commit(tmp_path) == sha[:12], "untracked files do not make a checkout dirty"
    (tmp_path / "a.py").write_text("x = 2\n")
    first = env.git_commit(tmp_path)
    (tmp_path / "a.py").write_text("x = 3\n")
    second = env.git_commit(tmp_path)
    assert first.startswith(f"{sha[:12]}-dirty-") and len(first) == 12 + len("-dirty-") + 8
    assert second.startswith(f"{sha[:12]}-dirty-") and second != first
    (tmp_path / "a.py").write_text("x = 2\n")
    assert env.git_commit(tmp_path) == first, "the same edit gives the same hash"
    monkeypatch.setenv("PRS_COMMIT", "from-the-environment")
    assert env.git_commit(tmp_path_factory.mktemp("not_a_checkout")) == "from-the-environment"
