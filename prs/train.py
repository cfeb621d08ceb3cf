"""The training engine: one function, `train(cfg)`, for every model, schedule and dataset.

A run lives in `<run.root>/<model>-<config hash>/`: config.yaml, results.json (rewritten
atomically every epoch, `finished` at the end) and checkpoint.pt (+ checkpoint.prev.pt,
the one before). Running the same config again reuses a finished run or resumes an
unfinished one; nothing is silently overwritten (`force=True` starts over explicitly, and
only once the config, data and model have been checked). Nothing is written before then.

Every epoch draws its shuffling, augmentation, Mixup and stochastic depth from
(seed, epoch), so a run resumed from an epoch checkpoint retraces the uninterrupted run.
A loss or weight that is not finite at the end of an epoch stops the run (TrainingDiverged)
before that epoch is saved.

`torchrun --nproc_per_node=N -m prs train ...` trains with DistributedDataParallel (NCCL on
GPUs, gloo on CPU): each rank takes a disjoint shard of every global batch, BatchNorm uses
the whole batch's statistics (GlooSyncBatchNorm on CPU, where torch's SyncBatchNorm does not
run), losses and accuracies are summed over ranks, switches happen on every rank at the same
epoch, and only rank 0 writes. Stochastic depth and Mixup draw per rank.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import prs
from prs import config as config_mod
from prs import data, models, reparam, schedule
from prs.config import Config, TrainConfig
from prs.errors import UserError

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
RESULTS = "results.json"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- set-up


def run_dir_for(cfg: Config) -> Path:
    return Path(cfg.run.root) / f"{cfg.model.name}-{config_mod.config_hash(cfg)}"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device: '{name}' asked for, but no CUDA GPU is visible; use train.device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device: '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    """The registered model a config names (switchable stages only where the config sets them),
    with timm's ConViT attention swapped for its fused twin (same parameters and function)."""
    stages = {} if cfg.model.switchable_stages is None else {"switchable_stages": cfg.model.switchable_stages}
    model = models.create(cfg.model.name, num_classes=num_classes, drop_path=cfg.model.drop_path, **stages)
    return models.use_fused_attention(model)


def switch_settings(cfg: Config) -> dict:
    """The keyword arguments of reparam.switch_to_attention from a config's `switch` section."""
    sw = cfg.switch
    return {"form": sw.form, "gate_logit": sw.gate_logit, "locality": sw.locality,
            "content_locality": sw.content_locality, "query_init": sw.query_init, "bounded_gate": sw.bounded_gate}


def compile_for_switches(net: nn.Module, switch_events: int, backend: str = "inductor") -> nn.Module:
    """torch.compile with room for one graph per layer configuration a schedule passes through.

    A switch changes a guarded Python attribute (the layer's mode), so dynamo compiles a new
    graph; past its recompile limit (8 per code object) it would run the rest of training
    eagerly, with only a log warning. Raised here to cover every configuration, plus spares.
    """
    import torch._dynamo

    needed = switch_events + 1 + 2
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, needed)
    return torch.compile(net, backend=backend)


def synchronize(device: torch.device) -> None:
    """Wait for the GPU (for timing); nothing to wait for elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_optimizer(model: nn.Module, t: TrainConfig, gate_lr_scale: float = 1.0,
                    qk_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW or SGD with up to four groups: decayed weights; biases, norms and embeddings without
    decay; the gates and positional/bias weights of switchable layers, without decay and with
    their LR multiplied by `gate_lr_scale`; and (when `qk_lr_scale` != 1) the q/k projections of
    switchable layers, decayed, with their LR multiplied by `qk_lr_scale` (timm's schedulers honour
    `lr_scale`). Attention parameters are in from the start: while a layer is a convolution they
    get no gradient, hence no update and no decay."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    switchable = {name for name, m in model.named_modules() if isinstance(m, reparam.ReparamConv2d)}
    decay, no_decay, gates, qk = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner, _, leaf = name.rpartition(".")
        if owner in switchable and leaf in ("gate", "pos_weight", "content_pos_weight"):
            gates.append(p)
        elif qk_lr_scale != 1.0 and owner.endswith(".qk") and owner[:-3] in switchable:
            qk.append(p)
        elif p.ndim <= 1 or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "lr_scale": gate_lr_scale})
    if qk:
        groups.append({"params": qk, "weight_decay": t.weight_decay, "lr_scale": qk_lr_scale})
    fused = next(model.parameters()).is_cuda or None
    if t.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=t.lr, fused=fused)
    else:
        opt = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, fused=fused)
    for group in opt.param_groups:
        group["initial_lr"] = t.lr  # what timm's schedulers scale (times lr_scale) from
        group["lr"] = t.lr * group.get("lr_scale", 1.0)
    if switchable:  # bounded gates are projected back into [0, 1] after every step
        opt.register_step_post_hook(lambda *_: reparam.project_(model))
    return opt


def build_lr_scheduler(optimizer, t: TrainConfig, steps_per_epoch: int):
    """timm's schedulers, updated every step."""
    from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler

    warmup = int(round(t.warmup_epochs * steps_per_epoch))
    if t.lr_schedule == "cosine":
        return CosineLRScheduler(optimizer, t_initial=t.epochs * steps_per_epoch, warmup_t=warmup,
                                 warmup_lr_init=t.lr * 1e-3 if warmup else 0.0, warmup_prefix=True,
                                 lr_min=0.0, t_in_epochs=False)
    return MultiStepLRScheduler(optimizer, decay_t=[m * steps_per_epoch for m in t.milestones], decay_rate=t.gamma,
                                warmup_t=warmup, warmup_lr_init=t.lr * 1e-3 if warmup else 0.0, t_in_epochs=False)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Python, NumPy (timm's Mixup) and torch (stochastic depth) RNGs for this epoch.

    Each rank of a distributed run gets its own stream (rank 0's is the single-process one),
    so that stochastic depth and Mixup draw independently for each rank's part of the batch.
    """
    s = seed * 100_003 + epoch + 1  # epoch -1 seeds model initialisation
    if rank:
        s = data.epoch_seed(s, rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


# ----------------------------------------------------------------------------- provenance


def git_commit() -> str:
    """The checkout's commit (+ "-dirty"), or $PRS_COMMIT where there is no git (a copied tree,
    a pip install on Colab), else "unknown"."""
    root = Path(__file__).resolve().parent.parent
    fallback = os.environ.get("PRS_COMMIT", "unknown")
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return fallback
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip()[:12] + ("-dirty" if dirty else "")
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


# ----------------------------------------------------------------------------- files


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Write to a temporary file, keep the last good checkpoint as .prev, then rename.

    A kill between the two renames leaves only .prev, which `checkpoint_to_resume` then uses.
    """
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    current = run_dir / CHECKPOINT
    if current.exists():
        os.replace(current, run_dir / PREVIOUS)
    os.replace(tmp, current)


def checkpoint_to_resume(run_dir: Path, previous: bool = False) -> Path | None:
    """checkpoint.pt, or checkpoint.prev.pt when asked for or when it is the only one (a kill
    between the renames of `save_checkpoint`), or None for a fresh start."""
    current, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if previous:
        if not prev.exists():
            raise UserError(f"--previous-checkpoint: {prev} does not exist")
        return prev
    if current.exists():
        return current
    return prev if prev.exists() else None


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same thing to the user
        prev = path.with_name(PREVIOUS)
        hint = (f"; the previous good checkpoint {prev} is kept: rerun with --previous-checkpoint to use it"
                if prev.exists() and prev != path else "; delete the run directory to start over")
        raise UserError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}){hint}") from None


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- the loop


def _distributed() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _sum_across_ranks(*values: torch.Tensor) -> list[torch.Tensor]:
    """Sums over the processes of a distributed run (unchanged in a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    stacked = torch.stack([v.double() for v in values])
    dist.all_reduce(stacked)
    return list(stacked.unbind())


def _all_finite(model: nn.Module) -> bool:
    return bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as dist

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


def _show_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return sys.stderr.isatty() and not os.environ.get("CI")


def evaluate(model: nn.Module, loader, amp_dtype, device) -> dict:
    model.eval()
    correct1 = torch.zeros((), device=device)
    correct5 = torch.zeros((), device=device)
    total = 0
    with torch.no_grad(), _autocast(device, amp_dtype):
        for x, y in loader:
            logits = model(x)
            top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # top-k of all classes when fewer
            hits = top5 == y[:, None]
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
            total += y.numel()
    # Ranks hold disjoint shards of the test set: sum the counts, never average accuracies.
    correct1, correct5, total = _sum_across_ranks(correct1, correct5, torch.tensor(total, device=device))
    return {"test_top1": 100.0 * correct1.item() / total.item(), "test_top5": 100.0 * correct5.item() / total.item()}


def _autocast(device, amp_dtype):
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()


def train_epoch(model, loader, optimizer, lr_scheduler, scaler, criterion, mixup, t: TrainConfig, amp_dtype,
                device, step: int, bar=None) -> tuple[dict, int]:
    """One epoch. The loss and accuracy stay on the device until the end (no per-step sync)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    for x, y in loader:
        targets = mixup(x, y) if mixup is not None else (x, y)
        x_in, y_in = targets
        with _autocast(device, amp_dtype):
            logits = model(x_in)
            loss = criterion(logits, y_in)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if t.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        lr_scheduler.step_update(num_updates=step)
        loss_sum += loss.detach().float() * y.numel()
        correct += (logits.detach().argmax(-1) == y).sum()
        seen += y.numel()
        if bar is not None:
            bar.update(1)
    loss_sum, correct, seen_all = _sum_across_ranks(loss_sum, correct, torch.tensor(seen, device=device))
    seen = int(seen_all.item())  # all ranks agree on the loss, so they all stop together if it is not finite
    metrics = {"train_loss": loss_sum.item() / seen, "train_top1": 100.0 * correct.item() / seen, "images": seen}
    return metrics, step


def train(cfg: Config, *, force: bool = False, progress: bool | None = None, previous_checkpoint: bool = False,
          verbose: bool = True) -> dict:
    """Train (or resume, or reuse) the run for `cfg`; return its results dict."""
    rank, world = _distributed()
    run_dir = run_dir_for(cfg)
    say = print if verbose and rank == 0 else (lambda *a, **k: None)
    results_path = run_dir / RESULTS
    if force and previous_checkpoint:
        raise UserError("--force starts over and --previous-checkpoint resumes: give one of them")
    if results_path.exists() and not force:
        try:
            existing = json.loads(results_path.read_text())
        except ValueError:
            raise UserError(f"{results_path} is not valid JSON; rerun with --force to start this run over") from None
        if existing.get("finished"):
            say(f"reusing finished run {run_dir} (--force to train it again)")
            return existing

    device = pick_device(cfg.train.device)
    if world > 1:
        device = _init_distributed(device)
    t = cfg.train
    amp_dtype = autocast_dtype(t.precision, device)
    if amp_dtype is not None and device.type != "cuda":
        raise UserError(f"train.precision: {t.precision} autocast is for CUDA; on {device.type} use fp32 or auto")

    seed_epoch(t.seed, -1)
    if t.batch_size % world:
        raise UserError(f"train.batch_size: {t.batch_size} is not divisible by the {world} processes")
    try:
        train_loader, test_loader, data_info = data.build_loaders(
            cfg.data, t.batch_size // world, t.eval_batch_size, device, t.seed, rank=rank, world_size=world,
            channels_last=t.channels_last)
    except OSError as e:  # e.g. data.root is a file, or not writable for the synthetic set
        raise UserError(f"data.root: cannot read the data under '{data.data_root(cfg.data.root)}' "
                        f"({e.strerror or e}); point data.root at a data folder") from None

    model = build_model(cfg, data_info["num_classes"]).to(device)
    if world > 1:
        model = sync_batchnorm(model, device)  # before the optimizer; the parameters stay the same
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    layers = reparam.switchable_layers(model)
    sched = schedule.create(cfg.schedule, epochs=t.epochs)
    if sched.name != "never" and not layers:
        raise UserError(f"schedule '{sched.name}': model '{cfg.model.name}' has no switchable layers; "
                        "use a hybrid_* model or schedule 'never'")
    switch_epochs = sched.switch_epochs(layers)

    optimizer = build_optimizer(model, t, cfg.switch.gate_lr_scale, cfg.switch.qk_lr_scale)
    steps_per_epoch = len(train_loader)
    lr_scheduler = build_lr_scheduler(optimizer, t, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    mixup = data.build_mixup(cfg.data.augment, data_info["num_classes"])
    if mixup is not None:
        from timm.loss import SoftTargetCrossEntropy

        criterion = SoftTargetCrossEntropy()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.data.augment.label_smoothing)

    results = {
        "config": config_mod.to_dict(cfg), "config_hash": config_mod.config_hash(cfg), "run_dir": str(run_dir),
        "model": {"name": cfg.model.name, "family": models.family(model),
                  "parameters": sum(p.numel() for p in model.parameters()), "switchable_layers": layers},
        "data": data_info, "schedule": sched.to_dict(), "switch_epochs": switch_epochs, "switch_events": [],
        "history": [], "final": None, "wall_time_s": 0.0, "throughput_img_s": None, "commit": git_commit(),
        "versions": versions(), "device": device_name(device), "world_size": world, "finished": False,
    }
    start_epoch, step = 0, 0
    ckpt_path = None if force else checkpoint_to_resume(run_dir, previous_checkpoint)
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path)
        _check_checkpoint_matches(state, ckpt_path, results)
        try:
            model.load_state_dict(state["model"])  # restores which layers are attention
            optimizer.load_state_dict(state["optimizer"])
            lr_scheduler.load_state_dict(state["lr_scheduler"])
            scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"checkpoint {ckpt_path} does not fit this run's model or optimizer "
                            f"({type(e).__name__}); rerun with --force to start over") from None
        start_epoch, step = state["epoch"], state["step"]
        results.update(history=state["history"], switch_events=state["switch_events"],
                       wall_time_s=state["wall_time_s"])
        say(f"resuming {run_dir} after epoch {start_epoch} from {ckpt_path.name}")
    # Everything has been checked: only now is anything deleted or written.
    if rank == 0:
        _prepare_run_dir(run_dir, cfg, force, previous_checkpoint)

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(layers))  # the set of used parameters changes at a switch
    if t.compile:
        net = compile_for_switches(net, len({e for e in switch_epochs.values() if e is not None}))

    bar = None
    if _show_progress(progress) and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=(t.epochs - start_epoch) * steps_per_epoch, desc=run_dir.name, unit="step")
    for epoch in range(start_epoch, t.epochs):
        due = [n for n in layers if switch_epochs[n] is not None and switch_epochs[n] <= epoch
               and n not in reparam.attention_layers(model)]
        if due:
            reparam.switch_to_attention(model, due, **switch_settings(cfg))
            results["switch_events"].append({"epoch": epoch, "layers": due})
            say(f"epoch {epoch}: switched {len(due)} layer(s) to attention: {', '.join(due)}")
        seed_epoch(t.seed, epoch, rank)
        train_loader.set_epoch(epoch)
        synchronize(device)
        tick = time.perf_counter()
        metrics, step = train_epoch(net, train_loader, optimizer, lr_scheduler, scaler, criterion, mixup, t,
                                    amp_dtype, device, step, bar)
        synchronize(device)
        seconds = time.perf_counter() - tick
        if not math.isfinite(metrics["train_loss"]) or not _all_finite(model):
            what = (f"the loss became {metrics['train_loss']}" if not math.isfinite(metrics["train_loss"])
                    else "a weight became NaN or infinite")
            kept = (f"the last good checkpoint (after epoch {epoch}) is kept in {run_dir}" if epoch
                    else f"no checkpoint was written (it diverged in the first epoch), see {run_dir}")
            raise TrainingDiverged(f"{what} in epoch {epoch + 1}; stopped, {kept}; lower train.lr or set "
                                   "train.grad_clip")
        metrics.update(evaluate(model, test_loader, amp_dtype, device))
        row = {"epoch": epoch + 1, **metrics, "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": seconds,
               "images_per_s": metrics.pop("images") / seconds,  # all ranks' images
               "attention_layers": len(reparam.attention_layers(model))}
        results["history"].append(row)
        results["wall_time_s"] += seconds
        if bar is not None:
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", top1=f"{row['test_top1']:.1f}",
                            img_s=f"{row['images_per_s']:.0f}")
        say(f"epoch {epoch + 1}/{t.epochs}  loss {row['train_loss']:.4f}  train {row['train_top1']:.2f}%  "
            f"test {row['test_top1']:.2f}% (top-5 {row['test_top5']:.2f}%)  {row['images_per_s']:.0f} img/s")
        if rank == 0:
            save_checkpoint(run_dir, {
                "config_hash": results["config_hash"], "train_indices_sha": data_info["train_indices_sha"],
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                "epoch": epoch + 1, "step": step, "history": results["history"],
                "switch_events": results["switch_events"], "wall_time_s": results["wall_time_s"]})
            atomic_write_text(results_path, json.dumps(results, indent=1))
    if bar is not None:
        bar.close()
    last = results["history"][-1]
    results["final"] = {"test_top1": last["test_top1"], "test_top5": last["test_top5"]}
    imgs = sum(r["images_per_s"] * r["epoch_time_s"] for r in results["history"])
    results["throughput_img_s"] = imgs / max(results["wall_time_s"], 1e-9)
    results["finished"] = True
    if rank == 0:
        atomic_write_text(results_path, json.dumps(results, indent=1))
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every rank returns only once rank 0 has written the results
    return results


def _check_checkpoint_matches(state: dict, path: Path, results: dict) -> None:
    """A checkpoint resumes only the run it was written for, on the same training images."""
    expected = {"config_hash": results["config_hash"], "train_indices_sha": results["data"]["train_indices_sha"]}
    for key, now in expected.items():
        then = state.get(key, now)
        if then != now:
            what = "another config" if key == "config_hash" else "other training images (a different data set or root)"
            raise UserError(f"checkpoint {path} was written for {what} ({key} {then}, now {now}); "
                            "point data.root at the data it was trained on, or rerun with --force to start over")


def _prepare_run_dir(run_dir: Path, cfg: Config, force: bool, previous_checkpoint: bool) -> None:
    """Create (or, with force, recreate) the run directory and write its config.yaml."""
    try:
        if force and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if previous_checkpoint and (run_dir / CHECKPOINT).exists():
            # Set the damaged checkpoint aside (not deleted) so that it never becomes checkpoint.prev.pt.
            os.replace(run_dir / CHECKPOINT, run_dir / "checkpoint.damaged.pt")
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False))
    except OSError as e:
        raise UserError(f"run.root: cannot write the run directory {run_dir} ({e.strerror or e}); "
                        "set run.root to a writable folder") from None


def _init_distributed(device: torch.device) -> torch.device:
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def load_trained(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, Config]:
    """The trained model of a run (layers switched as they were), in eval mode, and its config."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = config_mod.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    results = json.loads((run_dir / RESULTS).read_text())
    state = load_checkpoint(run_dir / CHECKPOINT)
    model = build_model(cfg, results["data"]["num_classes"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg
