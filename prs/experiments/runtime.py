"""What a notebook's first cell decides about the machine it runs on, once prs is installed: Colab or
not, which GPU (and whether it computes bf16), which profile, whether runs go to Google Drive, and
the commit of the installed package. The cell itself only installs prs on Colab and calls `set_up`.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata

from prs.errors import UserError
from prs.experiments.profiles import ROOT_VARIABLE, needs_gpu, profile_names

GPU_RUNTIME_PROFILE = "colab"  # what a Colab GPU runtime runs unless PROFILE says otherwise


@dataclass(frozen=True)
class Runtime:
    in_colab: bool
    gpu: str | None  # the CUDA device's name; None on a CPU
    native_bf16: bool  # the GPU computes bf16 in hardware (else precision auto is fp16)
    profile: str | None  # the profile to run; None: the parameters cell's values (or papermill's)
    drive: bool  # keep runs on Google Drive (Colab only)
    commit: str | None  # the commit pip installed prs from; None when prs was not installed from git

    def summary(self) -> str:
        gpu = (f"{self.gpu} ({'bf16' if self.native_bf16 else 'no native bf16: fp16'} autocast)" if self.gpu
               else "none, CPU only")
        profile = self.profile or "from the parameters cell below"
        parts = [f"GPU: {gpu}", f"profile: {profile}"]
        if self.in_colab:
            parts.append("runs kept on Google Drive" if self.drive else "runs kept in this session only")
        if self.commit:
            parts.append(f"prs installed from commit {self.commit[:12]}")
        return "; ".join(parts)


def choose_profile(requested: str | None, in_colab: bool, gpu: str | None) -> str | None:
    """`requested` if given (checked); else "colab" on a Colab GPU runtime; else None (the parameters cell)."""
    if requested is not None:
        if requested not in profile_names():
            raise UserError(f"PROFILE = {requested!r}: no such profile; choose one of {', '.join(profile_names())} "
                            "or None")
        return requested
    return GPU_RUNTIME_PROFILE if in_colab and gpu else None


def choose_drive(requested: bool | None, in_colab: bool, profile: str | None) -> bool:
    """Google Drive: as `requested`, else for GPU profiles on Colab (their runs outlive a session)."""
    if requested and not in_colab:
        raise UserError("DRIVE = True: Google Drive is mounted only on Colab; use DRIVE = None here")
    if requested is not None:
        return bool(requested)
    return in_colab and profile is not None and needs_gpu(profile)


def installed_commit(distribution: str = "prs") -> str | None:
    """The commit pip resolved when it installed `distribution` from a git URL (PEP 610's
    direct_url.json, vcs_info.commit_id); None for any other install."""
    try:
        text = metadata.distribution(distribution).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    return json.loads(text).get("vcs_info", {}).get("commit_id")


def warn_if_gpu_profile_on_cpu(profile: str, gpu: str | None) -> bool:
    """A loud warning (a banner on stderr and a Python warning) when a GPU profile runs without a GPU;
    returns whether it warned."""
    if gpu or not needs_gpu(profile):
        return False
    message = (f"profile '{profile}' is sized for a GPU, but no CUDA GPU is visible: it will train on the CPU, "
               "which takes days. On Colab choose Runtime > Change runtime type > GPU; elsewhere use "
               "PROFILE = 'smoke' or a GPU machine.")
    bar = "!" * 100
    print(f"{bar}\n!! WARNING: {message}\n{bar}", file=sys.stderr)
    warnings.warn(message, RuntimeWarning, stacklevel=3)  # the notebook's line
    return True


def cuda_device() -> tuple[str | None, bool]:
    """The first CUDA device's name and whether it computes bf16 natively; (None, False) without one."""
    import torch

    if not torch.cuda.is_available():
        return None, False
    return torch.cuda.get_device_name(0), torch.cuda.is_bf16_supported(including_emulation=False)


def set_up(profile: str | None = None, drive: bool | None = None, in_colab: bool | None = None) -> Runtime:
    """Decide the notebook's runtime and say it in one line.

    On Colab the installed commit becomes $PRS_COMMIT (the runs' provenance; there is no git checkout
    there) and, unless set, $PRS_ROOT becomes the working directory (/content), where relative run and
    data roots then start.
    """
    if in_colab is None:
        in_colab = "google.colab" in sys.modules
    gpu, bf16 = cuda_device()
    chosen = choose_profile(profile, in_colab, gpu)
    runtime = Runtime(in_colab=in_colab, gpu=gpu, native_bf16=bf16, profile=chosen,
                      drive=choose_drive(drive, in_colab, chosen), commit=installed_commit())
    if runtime.commit:
        os.environ["PRS_COMMIT"] = runtime.commit[:12]
    if in_colab and not os.environ.get(ROOT_VARIABLE):
        os.environ[ROOT_VARIABLE] = os.getcwd()
    print(runtime.summary())
    return runtime
