"""The training engine: one function, `train(cfg)`, for every model, schedule and dataset.

A run lives in `<run.root>/<model>-<config hash>/`: config.yaml, results.json (rewritten
atomically every epoch, `finished` at the end) and checkpoint.pt (+ checkpoint.prev.pt,
the one before). Running the same config again reuses a finished run or resumes an
unfinished one; nothing is silently overwritten (`force=True` starts over explicitly).

Every epoch draws its shuffling, augmentation, Mixup and stochastic depth from
(seed, epoch), so a run resumed from an epoch checkpoint retraces the uninterrupted run.
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


def build_optimizer(model: nn.Module, t: TrainConfig, gate_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW or SGD with three groups: decayed weights; biases, norms and embeddings without
    decay; and the gates and positional weights of switchable layers, without decay and
    with their LR multiplied by `gate_lr_scale` (timm's schedulers honour `lr_scale`).
    Attention parameters are in from the start: while a layer is a convolution they get no
    gradient, hence no update and no decay."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay, gates = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith(("gate_logit", "pos_weight")) and isinstance(
                model.get_submodule(name.rsplit(".", 1)[0]), reparam.ReparamConv2d):
            gates.append(p)
        elif p.ndim <= 1 or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if gates:
        groups.append({"params": gates, "weight_decay": 0.0, "lr_scale": gate_lr_scale})
    fused = next(model.parameters()).is_cuda or None
    if t.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=t.lr, fused=fused)
    else:
        opt = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, fused=fused)
    for group in opt.param_groups:
        group["initial_lr"] = t.lr  # what timm's schedulers scale (times lr_scale) from
        group["lr"] = t.lr * group.get("lr_scale", 1.0)
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


def seed_epoch(seed: int, epoch: int) -> None:
    """Python, NumPy (timm's Mixup) and torch (stochastic depth) RNGs for this epoch."""
    s = seed * 100_003 + epoch + 1  # epoch -1 seeds model initialisation
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


# ----------------------------------------------------------------------------- provenance


def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip()[:12] + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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
    """Write to a temporary file, keep the last good checkpoint as .prev, then rename."""
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    current = run_dir / CHECKPOINT
    if current.exists():
        os.replace(current, run_dir / PREVIOUS)
    os.replace(tmp, current)


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
            top5 = model(x).topk(5, dim=-1).indices
            hits = top5 == y[:, None]
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
            total += y.numel()
    return {"test_top1": 100.0 * correct1.item() / total, "test_top5": 100.0 * correct5.item() / total}


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
    metrics = {"train_loss": loss_sum.item() / seen, "train_top1": 100.0 * correct.item() / seen, "images": seen}
    return metrics, step


def train(cfg: Config, *, force: bool = False, progress: bool | None = None, previous_checkpoint: bool = False,
          verbose: bool = True) -> dict:
    """Train (or resume, or reuse) the run for `cfg`; return its results dict."""
    rank, world = _distributed()
    run_dir = run_dir_for(cfg)
    say = print if verbose and rank == 0 else (lambda *a, **k: None)
    results_path = run_dir / RESULTS
    if run_dir.exists() and force and rank == 0:
        shutil.rmtree(run_dir)
    if results_path.exists() and not force:
        existing = json.loads(results_path.read_text())
        if existing.get("finished"):
            say(f"reusing finished run {run_dir}")
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
    train_loader, test_loader, data_info = data.build_loaders(
        cfg.data, t.batch_size // world, t.eval_batch_size, device, t.seed, rank=rank, world_size=world)
    if len(train_loader) == 0:
        raise UserError(f"train.batch_size: {t.batch_size} is larger than the training set "
                        f"({data_info['train_size']} images at data.ratio={cfg.data.ratio}); lower it")

    model = models.create(cfg.model.name, num_classes=data_info["num_classes"], drop_path=cfg.model.drop_path,
                          **({"switchable_stages": cfg.model.switchable_stages}
                             if cfg.model.switchable_stages is not None else {})).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    layers = reparam.switchable_layers(model)
    sched = schedule.create(cfg.schedule, epochs=t.epochs)
    if sched.name != "never" and not layers:
        raise UserError(f"schedule '{sched.name}': model '{cfg.model.name}' has no switchable layers; "
                        "use a hybrid_* model or schedule 'never'")
    switch_epochs = sched.switch_epochs(layers)

    optimizer = build_optimizer(model, t, cfg.switch.gate_lr_scale)
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
    ckpt_path = run_dir / (PREVIOUS if previous_checkpoint else CHECKPOINT)
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])  # restores which layers are attention
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start_epoch, step = state["epoch"], state["step"]
        results.update(history=state["history"], switch_events=state["switch_events"],
                       wall_time_s=state["wall_time_s"])
        say(f"resuming {run_dir} after epoch {start_epoch}")
    elif previous_checkpoint:
        raise UserError(f"--previous-checkpoint: {ckpt_path} does not exist")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False))

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            nn.SyncBatchNorm.convert_sync_batchnorm(model) if models.family(model) in ("resnet", "hybrid") else model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(layers))  # the set of used parameters changes at a switch
    if t.compile:
        net = torch.compile(net)

    bar = None
    if _show_progress(progress) and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=(t.epochs - start_epoch) * steps_per_epoch, desc=run_dir.name, unit="step")
    for epoch in range(start_epoch, t.epochs):
        due = [n for n in layers if switch_epochs[n] is not None and switch_epochs[n] <= epoch
               and n not in reparam.attention_layers(model)]
        if due:
            reparam.switch_to_attention(model, due, gate_logit=cfg.switch.gate_logit, locality=cfg.switch.locality)
            results["switch_events"].append({"epoch": epoch, "layers": due})
            say(f"epoch {epoch}: switched {len(due)} layer(s) to attention: {', '.join(due)}")
        seed_epoch(t.seed, epoch)
        train_loader.set_epoch(epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tick = time.perf_counter()
        metrics, step = train_epoch(net, train_loader, optimizer, lr_scheduler, scaler, criterion, mixup, t,
                                    amp_dtype, device, step, bar)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - tick
        if not math.isfinite(metrics["train_loss"]):
            raise TrainingDiverged(f"loss became {metrics['train_loss']} in epoch {epoch}; stopped. The last good "
                                   f"checkpoint (after epoch {epoch}) is kept in {run_dir}; lower train.lr or set "
                                   "train.grad_clip")
        metrics.update(evaluate(model, test_loader, amp_dtype, device))
        row = {"epoch": epoch + 1, **metrics, "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": seconds,
               "images_per_s": world * metrics.pop("images") / seconds,
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
    return results


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
    kwargs = {"switchable_stages": cfg.model.switchable_stages} if cfg.model.switchable_stages is not None else {}
    model = models.create(cfg.model.name, num_classes=results["data"]["num_classes"], **kwargs)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg
