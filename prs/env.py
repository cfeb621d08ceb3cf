"""Where a run executes and with what: the device, autocast precision, waiting for the GPU, and
provenance (the commit and a hash of any uncommitted change, package versions, the device's name)."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

import prs
from prs.errors import UserError


def pick_device(name: str, setting: str = "train.device") -> torch.device:
    """The torch device `name` asks for ("auto": CUDA when visible); errors name `setting`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{setting}: '{name}' asked for, but no CUDA GPU is visible; use cpu or auto")
    if name.startswith("cuda:") and name[5:].isdigit() and int(name[5:]) >= torch.cuda.device_count():
        raise UserError(f"{setting}: '{name}' asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are "
                        f"visible (cuda:0 .. cuda:{torch.cuda.device_count() - 1}); use cuda or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{setting}: 'mps' asked for, but this machine has no Apple GPU (MPS); use cpu or auto")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise UserError(f"{setting}: '{name}' is not a device prs trains on; use auto, cpu, cuda, cuda:N or mps")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"{setting}: '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None


def autocast_dtype(precision: str, device: torch.device, setting: str = "train.precision") -> torch.dtype | None:
    """The autocast dtype of a precision setting on `device`; None = float32 throughout. "auto" is
    bf16 on a GPU that computes in bf16 natively (Ampere and later), fp16 (with loss scaling) on
    older ones such as Colab's T4, where bf16 is only emulated, and float32 off CUDA."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if native_bf16(device) else torch.float16
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype is not None and device.type != "cuda":
        raise UserError(f"{setting}: {precision} autocast is for CUDA; on {device.type} use fp32 or auto")
    return dtype


def native_bf16(device: torch.device) -> bool:
    """Whether the CUDA `device` computes in bf16 in hardware (not emulated)."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the GPU (for timing); nothing to wait for elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- provenance


def git_commit(root: str | Path | None = None) -> str:
    """The commit of the checkout at `root` (default: this package's), e.g. "e1eae30ed1af"; with
    uncommitted changes to tracked files "e1eae30ed1af-dirty-<first 8 hex of the diff's sha256>",
    so that two different edits of one commit are told apart. $PRS_COMMIT where there is no git
    (a copied tree, a pip install on Colab), else "unknown"."""
    root = Path(__file__).resolve().parent.parent if root is None else Path(root)
    fallback = os.environ.get("PRS_COMMIT", "unknown")
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return fallback
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=root, capture_output=True, timeout=5).stdout
        commit = sha.stdout.strip()[:12]
        return f"{commit}-dirty-{hashlib.sha256(diff).hexdigest()[:8]}" if diff else commit
    except (OSError, subprocess.SubprocessError):
        return fallback


def versions() -> dict:
    import timm
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "numpy": np.__version__, "prs": prs.__version__}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
