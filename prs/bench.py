"""`prs bench`: the project's engine against the loop a user would write, measured.

Both sides train the same registered model with the same batch size on the same device:

  usual   torchvision CIFAR100 + DataLoader (workers = cores, PIL crop/flip/normalise) +
          plain AdamW + autocast (bf16 on CUDA) - the standard PyTorch recipe;
  engine  prs.data.DeviceLoader (uint8 data on the device, batched crop/flip there) + fused
          AdamW + bf16 autocast + channels_last for convolutional models + ConViT's attention
          fused (prs.models.use_fused_attention) (+ torch.compile on request), through
          prs.engine.train_epoch, the step every run uses.

They alternate (usual, engine, usual, engine, ...) so drifting clocks or a busy machine hit
both alike; each round times `steps` steps after `warmup` untimed ones, and the medians are
reported. On CUDA the model FLOPs per image (forward + backward, counted by
torch.utils.flop_counter) give the model-FLOPs utilisation against the device's dense bf16 peak.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from prs import data, models, reparam
from prs.config import AugmentConfig, DataConfig, TrainConfig
from prs.errors import RunFailure, UserError
from prs.engine import build_optimizer, train_epoch
from prs.lr_schedule import build_lr_scheduler
from prs.env import autocast_dtype, device_name, git_commit, pick_device, synchronize, versions
from prs.runs import atomic_write_text

# Dense bf16 tensor-core peaks (vendor figures, FLOP/s) for the model-FLOPs utilisation.
PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}
# What the shared checks call the settings they refuse: bench's flags (it has no data ratio).
FLAG_NAMES = data.SettingNames(batch_size="--batch-size", ratio=None)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def flops_per_image(model, device, batch: int = 8) -> float:
    """Forward + backward FLOPs per 32x32 image, counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, 3, 32, 32, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def _cycle(loader, epoch_start: int = 0):
    """Batches forever, across epochs."""
    for epoch in itertools.count(epoch_start):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader


class _Take:
    """The next n batches of an endless iterator, as a loader for train_epoch."""

    def __init__(self, it, n):
        self.it, self.n = it, n

    def __iter__(self):
        return itertools.islice(self.it, self.n)


def is_convolutional(name: str) -> bool:
    return models.family(name) in models.CONVOLUTIONAL


def make_model(name: str, device, switched: bool, engine: bool):
    """The benchmarked model; the engine's has ConViT's attention fused and, if convolutional, is channels_last."""
    model = models.create(name).to(device)
    if engine:
        models.use_fused_attention(model)
    if switched:
        reparam.switch_to_attention(model, reparam.switchable_layers(model))
    if engine and is_convolutional(name):
        model = model.to(memory_format=torch.channels_last)
    return model


def usual_loop(model_name, dataset, root, batch_size, device, switched):
    """The loop a user would write: returns step() -> images in that step."""
    import torchvision.transforms as T
    from torch.utils.data import DataLoader

    train_ds, _ = data.load_datasets(dataset, root)
    train_ds.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(data.CIFAR100_MEAN, data.CIFAR100_STD)])
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=os.cpu_count(),
                        pin_memory=device.type == "cuda", persistent_workers=True)
    model = make_model(model_name, device, switched, engine=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    amp = torch.bfloat16 if device.type == "cuda" else None
    batches = _cycle(loader)

    def run(steps):
        model.train()
        for x, y in itertools.islice(batches, steps):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model, run


def engine_loop(model_name, dataset, root, batch_size, device, switched, compile_model):
    """The project's engine, stepped through prs.engine.train_epoch."""
    model = make_model(model_name, device, switched, engine=True)
    conv = is_convolutional(model_name)
    t = TrainConfig(epochs=1000, batch_size=batch_size, lr=1e-3, weight_decay=0.05, channels_last=conv,
                    compile=compile_model)
    dcfg = DataConfig(dataset=dataset, root=root, loader="device", augment=AugmentConfig(crop_padding=4, flip=True))
    train_loader, _, _ = data.build_loaders(dcfg, batch_size, 1000, device, seed=0, channels_last=conv,
                                            names=FLAG_NAMES)
    opt = build_optimizer(model, t)
    sched = build_lr_scheduler(opt, t, len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    amp = autocast_dtype("bf16", device) if device.type == "cuda" else None  # as the usual loop: same dtype both sides
    net = torch.compile(model) if compile_model else model
    batches = _cycle(train_loader)
    step = [0]

    def run(steps):
        _, step[0] = train_epoch(net, _Take(batches, steps), opt, sched, scaler, torch.nn.CrossEntropyLoss(), None,
                                 t, amp, device, step[0])
    return model, run


def bench(model_name: str = "resnet18", dataset: str = "synthetic", root=None, batch_size: int = 256,
          steps: int = 50, warmup: int = 10, rounds: int = 3, device: str = "auto", switched: bool = False,
          compile_model: bool = False, output: str | Path | None = "benchmarks/results.json") -> dict:
    """Time both loops, alternating; append the record to `output` (JSON list); return it."""
    models.check_name(model_name, setting="--model")
    for name, value in {"--steps": steps, "--rounds": rounds, "--batch-size": batch_size}.items():
        if value <= 0:
            raise UserError(f"{name}: must be > 0, got {value}")
    if warmup < 0:
        raise UserError(f"--warmup: must be >= 0, got {warmup}")
    if switched and models.family(model_name) != "hybrid":
        raise UserError(f"--switched: model '{model_name}' has no switchable layers; use a hybrid model "
                        f"({', '.join(models.names('hybrid'))})")
    dev = pick_device(device, setting="--device")
    data.check_dataset_name(dataset, setting="--dataset")
    if output:
        read_records(Path(output))  # a file that cannot take the record is refused before minutes of measuring
    sides = {"usual": usual_loop(model_name, dataset, root, batch_size, dev, switched),
             "engine": engine_loop(model_name, dataset, root, batch_size, dev, switched, compile_model)}
    rates: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for name, (_, run) in sides.items():
            if warmup:  # zero steps would be an epoch of no images (a division by zero in train_epoch)
                run(warmup)
            synchronize(dev)
            tick = time.perf_counter()
            run(steps)
            synchronize(dev)
            rates[name].append(steps * batch_size / (time.perf_counter() - tick))
    usual, engine = statistics.median(rates["usual"]), statistics.median(rates["engine"])
    flops = flops_per_image(sides["usual"][0], dev)
    peak = peak_flops(dev)
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": device_name(dev), "commit": git_commit(),
        "versions": versions(), "model": model_name, "switched": switched, "dataset": dataset,
        "batch_size": batch_size, "steps": steps, "warmup": warmup, "rounds": rounds, "compile": compile_model,
        "usual_img_s": usual, "engine_img_s": engine, "speedup": engine / usual, "rates": rates,
        "train_flops_per_image": flops,
        "engine_mfu": engine * flops / peak if peak else None, "usual_mfu": usual * flops / peak if peak else None,
    }
    if output:
        append_record(Path(output), record)
    return record


def read_records(path: Path) -> list:
    """The records in `path` (a JSON list; [] if it does not exist yet); a UserError if it cannot take one more."""
    if path.exists():
        try:
            records = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise UserError(f"--output {path}: not a JSON list of records ({type(e).__name__}); repair or move it, "
                            "or give another --output") from None
        if not isinstance(records, list):
            raise UserError(f"--output {path}: holds a JSON {type(records).__name__}, not a list of records; "
                            "repair or move it, or give another --output")
        return records
    folder = next(p for p in [path.parent, *path.parent.parents] if p.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UserError(f"--output {path}: cannot create it under {folder}; give a writable --output")
    return []


def append_record(path: Path, record: dict) -> None:
    """Append to the JSON list in `path`. Should the file have become unreadable while measuring,
    the record goes to a new file beside it (named in the RunFailure), never lost."""
    try:
        records = read_records(path)
    except UserError as e:
        from prs.runs import free_name

        aside = free_name(path.parent, path.stem + ".new", path.suffix or ".json")
        atomic_write_text(aside, json.dumps([record], indent=1))
        raise RunFailure(f"{e}; this measurement was written to {aside}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(records + [record], indent=1))


def format_record(r: dict) -> str:
    mfu = f"  MFU engine {100 * r['engine_mfu']:.1f}% / usual {100 * r['usual_mfu']:.1f}%" if r["engine_mfu"] else ""
    switched = " (all switched)" if r["switched"] else ""
    return (f"{r['model']}{switched} batch {r['batch_size']} on {r['device']}: usual {r['usual_img_s']:.0f} img/s, "
            f"engine {r['engine_img_s']:.0f} img/s, x{r['speedup']:.2f}{mfu}")
