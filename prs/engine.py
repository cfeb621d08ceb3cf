"""The training engine: optimizer, per-epoch seeding, one epoch, evaluation, and `fit`.

The learning-rate schedule it steps is built by `prs.lr_schedule`.

`fit` is the loop every run goes through (`prs.train.train` builds its pieces from a config):
each epoch switches the layers that are due, reseeds every RNG from (seed, epoch), trains, stops
the run if the loss or a weight is no longer finite (TrainingDiverged, before that epoch is
kept), evaluates, and records a history row. Since every epoch draws its shuffling,
augmentation, Mixup and stochastic depth from (seed, epoch), a run resumed from an epoch
checkpoint retraces the uninterrupted run. In a distributed run the losses and accuracies are
summed over ranks, so all ranks agree and stop together.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from prs import data, diagnostics, reparam
from prs.config import TrainConfig
from prs.distributed import sum_across_ranks
from prs.env import autocast, synchronize


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- optimizer, loss, compilation


def param_groups(model: nn.Module, t: TrainConfig, gate_lr_scale: float = 1.0, qk_lr_scale: float = 1.0) -> list[dict]:
    """Decayed weights; biases, norms and embeddings without decay; the gates and positional/bias
    weights of switchable layers, without decay and with their LR multiplied by `gate_lr_scale`;
    and (when `qk_lr_scale` != 1) the q/k projections of switchable layers, decayed, with their LR
    multiplied by `qk_lr_scale` (timm's schedulers honour `lr_scale`). Attention parameters are in
    from the start: while a layer is a convolution they get no gradient, hence no update and no decay."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    switchable = set(reparam.switchable_layers(model))
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
    return groups


def build_optimizer(model: nn.Module, t: TrainConfig, gate_lr_scale: float = 1.0,
                    qk_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW or SGD over `param_groups`, fused on CUDA. With switchable layers, a step hook
    projects bounded gates back into [0, 1] after every step (`reparam.project_`)."""
    groups = param_groups(model, t, gate_lr_scale, qk_lr_scale)
    fused = next(model.parameters()).is_cuda or None
    if t.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=t.lr, fused=fused)
    else:
        opt = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, fused=fused)
    for group in opt.param_groups:
        group["initial_lr"] = t.lr  # what timm's schedulers scale (times lr_scale) from
        group["lr"] = t.lr * group.get("lr_scale", 1.0)
    if reparam.switchable_layers(model):
        opt.register_step_post_hook(lambda *_: reparam.project_(model))
    return opt


def build_criterion(augment, num_classes: int) -> tuple[nn.Module, Callable | None]:
    """The loss and the Mixup/CutMix mixer (None without it), whose soft targets need timm's
    SoftTargetCrossEntropy; the config's label smoothing goes to whichever makes the targets."""
    mixup = data.build_mixup(augment, num_classes)
    if mixup is None:
        return nn.CrossEntropyLoss(label_smoothing=augment.label_smoothing), None
    from timm.loss import SoftTargetCrossEntropy

    return SoftTargetCrossEntropy(), mixup


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


# ----------------------------------------------------------------------------- RNG


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


# ----------------------------------------------------------------------------- one epoch


def train_epoch(model, loader, optimizer, lr_scheduler, scaler, criterion, mixup, t: TrainConfig, amp_dtype,
                device, step: int, bar=None) -> tuple[dict, int]:
    """One epoch. The loss and accuracy stay on the device until the end (no per-step sync)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    for x, y in loader:
        x_in, y_in = mixup(x, y) if mixup is not None else (x, y)
        with autocast(device, amp_dtype):
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
    loss_sum, correct, seen_all = sum_across_ranks(loss_sum, correct, torch.tensor(seen, device=device))
    seen = int(seen_all.item())  # all ranks agree on the loss, so they all stop together if it is not finite
    metrics = {"train_loss": loss_sum.item() / seen, "train_top1": 100.0 * correct.item() / seen, "images": seen}
    return metrics, step


def evaluate(model: nn.Module, loader, amp_dtype, device) -> dict:
    """Test top-1 and top-5; once layers have switched, also the collapse gap ("collapse": the same
    test set with every switched layer put back to its convolution, `diagnostics.CollapseGap`)."""
    model.eval()
    correct1 = torch.zeros((), device=device)
    correct5 = torch.zeros((), device=device)
    collapse = diagnostics.CollapseGap(device) if reparam.attention_layers(model) else None
    total = 0
    with torch.no_grad(), autocast(device, amp_dtype):
        for x, y in loader:
            logits = model(x)
            top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # "top-5" of fewer classes: all of them
            hits = top5 == y[:, None]
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
            total += y.numel()
            if collapse is not None:
                with reparam.as_convolutions(model):
                    collapse.update(logits, model(x), y)
    # Ranks hold disjoint shards of the test set: sum the counts, never average accuracies.
    correct1, correct5, total = sum_across_ranks(correct1, correct5, torch.tensor(total, device=device))
    out = {"test_top1": 100.0 * correct1.item() / total.item(), "test_top5": 100.0 * correct5.item() / total.item()}
    if collapse is not None:
        out["collapse"] = collapse.result()
    return out


def check_finite(loss: float, model: nn.Module, epoch: int, where) -> None:
    """Stop the run (TrainingDiverged) when epoch `epoch` left a loss or a weight that is not finite."""
    if math.isfinite(loss) and bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all()):
        return
    what = f"the loss became {loss}" if not math.isfinite(loss) else "a weight became NaN or infinite"
    kept = (f"the last good checkpoint (after epoch {epoch}) is kept in {where}" if epoch
            else f"no checkpoint was written (it diverged in the first epoch), see {where}")
    raise TrainingDiverged(f"{what} in epoch {epoch + 1}; stopped, {kept}; lower train.lr or set train.grad_clip")


# ----------------------------------------------------------------------------- the loop


@dataclass
class Parts:
    """What a training step uses. `net` is what runs the batches: the model itself, or the
    model wrapped for DistributedDataParallel and/or torch.compile (same parameters)."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    mixup: Callable | None
    amp_dtype: torch.dtype | None
    device: torch.device

    def state_dict(self) -> dict:
        """What a checkpoint keeps of them: weights (and which layers are attention), optimizer,
        LR schedule, grad scaler and every RNG."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.lr_scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])  # restores which layers are attention
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])


@dataclass
class Switches:
    """When each switchable layer becomes attention ({layer: epoch or None}, in depth order), and how."""

    epochs: dict[str, int | None]
    settings: dict = field(default_factory=dict)  # reparam.switch_to_attention's keyword arguments

    def due(self, model: nn.Module, epoch: int) -> list[str]:
        done = set(reparam.attention_layers(model))
        return [n for n, e in self.epochs.items() if e is not None and e <= epoch and n not in done]

    @property
    def events(self) -> int:
        """How many distinct epochs switch something (each is a new graph for torch.compile)."""
        return len({e for e in self.epochs.values() if e is not None})


@dataclass
class FitState:
    """Where a fit stands: epochs done, optimizer steps, history rows, switch events, seconds trained."""

    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    switch_events: list = field(default_factory=list)
    wall_time_s: float = 0.0
    qk_at_switch: dict = field(default_factory=dict)  # {layer: its q/k weights when it switched}

    @classmethod
    def from_checkpoint(cls, state: dict) -> FitState:
        return cls(state["epoch"], state["step"], state["history"], state["switch_events"], state["wall_time_s"],
                   state.get("qk_at_switch", {}))  # checkpoints from before the diagnostics lack it

    def checkpoint(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "history": self.history, "switch_events": self.switch_events,
                "wall_time_s": self.wall_time_s, "qk_at_switch": self.qk_at_switch}


EpochHook = Callable[[nn.Module, dict], None]  # (model, history row): may add fields to the row


def fit(parts: Parts, train_loader, test_loader, t: TrainConfig, switches: Switches, state: FitState, *,
        rank: int = 0, say: Callable = print, bar=None, hooks: Sequence[EpochHook] = (),
        on_epoch_end: Callable[[FitState], None] | None = None, where: object = "the run directory") -> FitState:
    """Train from epoch `state.epoch` to `t.epochs`; `state` is updated and returned.

    Once a layer has switched, each row also holds the mechanism diagnostics: "collapse" (test loss
    and top-1 with every switched layer put back to its convolution, from `evaluate`) and
    "mechanism" (per switched layer: gates, content fraction, attention distances on the first 64
    test images, and how far q/k moved since the layer switched; `diagnostics.mechanism_record`).
    Every row holds "mean_attention_distance_px": how far the model's spatial-mixing layers reach on
    those images, in input pixels (`diagnostics.mean_attention_distance_px`; the claims order models
    by it).
    After each epoch's evaluation every hook(model, row) may add fields to the history row;
    then `on_epoch_end(state)` runs (the caller's checkpoint). `where` is named when the run diverges.
    """
    model = parts.model
    probe = _first_images(test_loader, 64)
    for epoch in range(state.epoch, t.epochs):
        due = switches.due(model, epoch)
        if due:
            reparam.switch_to_attention(model, due, **switches.settings)
            state.qk_at_switch.update(diagnostics.qk_snapshot(model, due))
            state.switch_events.append({"epoch": epoch, "layers": due})
            say(f"epoch {epoch}: switched {len(due)} layer(s) to attention: {', '.join(due)}")
        seed_epoch(t.seed, epoch, rank)
        train_loader.set_epoch(epoch)
        synchronize(parts.device)
        tick = time.perf_counter()
        metrics, state.step = train_epoch(parts.net, train_loader, parts.optimizer, parts.lr_scheduler, parts.scaler,
                                          parts.criterion, parts.mixup, t, parts.amp_dtype, parts.device, state.step,
                                          bar)
        synchronize(parts.device)
        seconds = time.perf_counter() - tick
        check_finite(metrics["train_loss"], model, epoch, where)
        metrics.update(evaluate(model, test_loader, parts.amp_dtype, parts.device))
        row = {"epoch": epoch + 1, **metrics, "lr": parts.optimizer.param_groups[0]["lr"], "epoch_time_s": seconds,
               "images_per_s": metrics["images"] / seconds,  # all ranks' images
               "attention_layers": len(reparam.attention_layers(model)),
               "mean_attention_distance_px": diagnostics.mean_attention_distance_px(model, probe())}
        if row["attention_layers"]:
            row["mechanism"] = diagnostics.mechanism_record(model, probe(), state.qk_at_switch)
        for hook in hooks:
            hook(model, row)
        state.history.append(row)
        state.wall_time_s += seconds
        state.epoch = epoch + 1
        _report(row, t.epochs, say, bar)
        if on_epoch_end is not None:
            on_epoch_end(state)
    return state


def _first_images(loader, n: int) -> Callable[[], torch.Tensor]:
    """The first `n` test images (a fixed probe for the mechanism diagnostics), read on first use."""
    cache: list[torch.Tensor] = []  # the probe, once read

    def probe() -> torch.Tensor:
        if not cache:
            batches, seen = [], 0
            for x, _ in loader:
                batches.append(x)
                seen += len(x)
                if seen >= n:
                    break
            cache.append(torch.cat(batches)[:n])
        return cache[0]

    return probe


def _report(row: dict, epochs: int, say: Callable, bar) -> None:
    if bar is not None:
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", top1=f"{row['test_top1']:.1f}",
                        img_s=f"{row['images_per_s']:.0f}")
    say(f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  train {row['train_top1']:.2f}%  "
        f"test {row['test_top1']:.2f}% (top-5 {row['test_top5']:.2f}%)  {row['images_per_s']:.0f} img/s")


def progress_bar(progress: bool | None, total: int, desc: str):
    """A tqdm bar over `total` steps, or None: `progress` None means on in a terminal, off in CI."""
    if progress is None:
        progress = sys.stderr.isatty() and not os.environ.get("CI")
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step")
