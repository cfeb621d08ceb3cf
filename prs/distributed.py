"""Training on several processes (`torchrun --nproc_per_node=N -m prs train ...`).

DistributedDataParallel with NCCL on GPUs and gloo on CPU: each rank takes a disjoint shard of
every global batch, BatchNorm uses the whole batch's statistics (`sync_batchnorm`: torch's
SyncBatchNorm on CUDA, `GlooSyncBatchNorm` on CPU, where torch's does not run), and losses and
accuracies are summed over ranks (`sum_across_ranks`). In a single process every function here
is a no-op or the identity.

The process group's timeout is $PRS_DDP_TIMEOUT_S seconds (default 600, not torch's 30 minutes):
long enough for rank 0's checkpoint write and a first compiled step, short enough that a rank
that died or was stopped ends the run in minutes. The rank that notices says so in one line
(`peer_failure`); the last checkpoint is kept and the same command resumes.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import nn


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, as torchrun sets them (0, 1 alone)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init(device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU); returns this rank's device."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s()))
    return device


DEFAULT_TIMEOUT_S = 600


def timeout_s() -> float:
    """The process group's timeout: $PRS_DDP_TIMEOUT_S, else DEFAULT_TIMEOUT_S."""
    from prs.errors import UserError

    raw = os.environ.get("PRS_DDP_TIMEOUT_S", str(DEFAULT_TIMEOUT_S))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UserError(f"PRS_DDP_TIMEOUT_S: must be a number of seconds > 0, got {raw!r}")
    return value


# What torch's collectives say when another rank is gone (gloo and NCCL wordings).
_PEER_GONE = ("Timed out", "timed out", "Connection closed", "Connection reset", "Broken pipe", "NCCL", "gloo")


def peer_failure(error: BaseException, rank: int, where) -> Exception | None:
    """A one-line RunFailure for a collective that failed because another rank died or stopped
    answering; None if `error` is something else (then it is raised as it is)."""
    from prs.errors import RunFailure

    text = str(error)
    if not (isinstance(error, dist.DistError) or (isinstance(error, RuntimeError)
                                                  and any(s in text for s in _PEER_GONE))):
        return None
    first = " ".join(text.split())[:160]
    return RunFailure(f"rank {rank}: another process of this run died or stopped answering within "
                      f"{timeout_s():.0f} s ({first}); the last checkpoint is kept in {where}: rerun the same "
                      "command to resume (PRS_DDP_TIMEOUT_S sets the wait)")


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def sum_across_ranks(*values: torch.Tensor) -> list[torch.Tensor]:
    """Sums over the processes of a distributed run (unchanged in a single process)."""
    if not _initialized():
        return list(values)
    stacked = torch.stack([v.double() for v in values])
    dist.all_reduce(stacked)
    return list(stacked.unbind())


def wrap(model: nn.Module, device: torch.device, find_unused_parameters: bool) -> nn.Module:
    """DistributedDataParallel around `model` (whose gradients it then averages over ranks)."""
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               find_unused_parameters=find_unused_parameters)


def barrier() -> None:
    if _initialized():
        dist.barrier()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.forward(ctx, grad)


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with the statistics of the whole distributed batch, for CPU (gloo) runs.

    torch's SyncBatchNorm is CUDA-only (DDP refuses it on CPU), and plain BatchNorm would
    normalise each rank's part of the batch on its own, so that a run on N processes would
    not compute what one process with the same global batch computes. This one sums the
    per-channel count, sum and squared deviation over the ranks with all-reduces whose
    backward all-reduces the gradients, so it matches one process up to rounding (in
    float64, gradients agree to 1e-14). Same parameters, buffers and state-dict keys as
    nn.BatchNorm2d; evaluation uses the running statistics.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims, shape = [0, 2, 3], (1, -1, 1, 1)
        count = all_reduce(torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype, device=x.device))
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.square().sum(dims)) / count  # biased, as BatchNorm normalises with
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / (count - 1), momentum)  # unbiased, as BatchNorm keeps
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch statistics over all ranks: torch's SyncBatchNorm on CUDA, GlooSyncBatchNorm on CPU.
    Parameters and buffers are kept, so the state dict and a checkpoint do not change."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                sync = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats)
                sync.weight, sync.bias = child.weight, child.bias
                sync.running_mean, sync.running_var = child.running_mean, child.running_var
                sync.num_batches_tracked = child.num_batches_tracked
                setattr(parent, name, sync)
    return model
