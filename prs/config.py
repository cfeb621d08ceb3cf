"""Experiment configuration: typed, validated, hashed.

A config is data. It is read from YAML with `yaml.safe_load` (nothing is evaluated),
checked field by field against the dataclasses below (unknown keys, wrong types and
out-of-range values are a `UserError` naming the field), and hashed so that a run
directory belongs to exactly one config.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from prs.errors import UserError


@dataclass
class ModelConfig:
    name: str = "resnet_tiny"
    drop_path: float = 0.0
    # Hybrids only: which ResNet stages (1-4) hold switchable 3x3 convolutions; None = model default.
    switchable_stages: list[int] | None = None


@dataclass
class AugmentConfig:
    crop_padding: int = 4
    flip: bool = True
    # timm RandAugment config string, e.g. "rand-m9-n2-mstd1.0"; needs loader "torchvision".
    randaugment: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0


@dataclass
class DataConfig:
    # "cifar100", "synthetic" (CIFAR-100 files written offline) or "imagefolder:<path>".
    dataset: str = "cifar100"
    root: str | None = None  # None: $PRS_DATA, else ./data
    download: bool = False
    ratio: float = 1.0
    subset_seed: int = 0
    # "device": uint8 tensors on the training device, augmented there; "torchvision": PIL DataLoader.
    loader: str = "device"
    num_workers: int = 2
    image_size: int = 32
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 128
    eval_batch_size: int = 500
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    lr_schedule: str = "cosine"  # cosine | step
    warmup_epochs: float = 0.0
    milestones: list[int] = field(default_factory=list)  # step schedule, in epochs
    gamma: float = 0.2
    grad_clip: float | None = None
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere) | fp32 | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class SwitchConfig:
    # How a switched layer mixes its convolution's taps with content attention (prs/reparam.py):
    # "linear" (gate g = a plain parameter, exact at the switch) or "sigmoid" (ConViT's gate,
    # exact only as gate_logit and locality grow).
    form: str = "linear"
    # "sigmoid" only: gate logit lambda and locality alpha of the positional attention at the switch.
    gate_logit: float = 10.0
    locality: float = 12.0
    # Relative-position bias in the content logits at the switch: a soft bump of this strength on
    # each head's tap (ConViT's default is 1); null = no bias.
    content_locality: float | None = 1.0
    # "zero": the query projection starts at zero, so content attention starts as softmax(bias).
    query_init: str = "zero"
    # "linear" form: keep the gate in [0, 1] (each head a convex mix of its tap and content attention).
    bounded_gate: bool = True
    # LR multipliers: gate and positional/bias weights; the q/k projections of switchable layers.
    gate_lr_scale: float = 10.0
    qk_lr_scale: float = 1.0


@dataclass
class RunConfig:
    root: str = "runs"
    tag: str = ""  # free text, part of the hash: two tags = two runs of the same recipe


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "never"})
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    run: RunConfig = field(default_factory=RunConfig)


CHOICES = {
    "data.loader": ("device", "torchvision"),
    "train.optimizer": ("adamw", "sgd"),
    "train.lr_schedule": ("cosine", "step"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
}
# Fields that say where things live or how fast they load, not what is computed.
NOT_HASHED = ("run.root", "data.root", "data.download", "data.num_workers")


# ----------------------------------------------------------------------------- parsing


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value, tp, where: str):
    """Check `value` against the type hint `tp`; return it (ints accepted as floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"{where}: must not be null")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is float and not math.isfinite(value):  # YAML's .nan / .inf: never a meaningful setting
        raise UserError(f"{where}: must be a finite number, got {value!r}")
    return value


def _from_dict(cls, data, where: str):
    if not isinstance(data, dict):
        raise UserError(f"{where or 'config'}: expected a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise UserError(f"unknown config key '{key}'; allowed keys here: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _validate(cfg: Config) -> Config:
    flat = to_dict(cfg)
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = flat[section][name]
        if value not in allowed:
            raise UserError(f"{key}: '{value}' is not one of {', '.join(allowed)}")
    t, d = cfg.train, cfg.data
    positive = {"train.epochs": t.epochs, "train.batch_size": t.batch_size,
                "train.eval_batch_size": t.eval_batch_size, "train.lr": t.lr, "data.image_size": d.image_size}
    for key, value in positive.items():
        if not value > 0:
            raise UserError(f"{key}: must be > 0, got {value}")
    if not cfg.switch.gate_lr_scale > 0 or not cfg.switch.qk_lr_scale > 0:
        raise UserError("switch.gate_lr_scale and switch.qk_lr_scale: must be > 0")
    from prs import reparam

    sw = cfg.switch
    reparam.check_switch_settings(sw.form, sw.locality, sw.content_locality, sw.query_init)
    if not 0.0 < d.ratio <= 1.0:
        raise UserError(f"data.ratio: must be in (0, 1], got {d.ratio}")
    for key, value in {"train.weight_decay": t.weight_decay, "train.warmup_epochs": t.warmup_epochs,
                       "model.drop_path": cfg.model.drop_path, "data.num_workers": d.num_workers,
                       "data.augment.mixup": d.augment.mixup, "data.augment.cutmix": d.augment.cutmix,
                       "data.augment.crop_padding": d.augment.crop_padding}.items():
        if value < 0:
            raise UserError(f"{key}: must be >= 0, got {value}")
    if not 0.0 <= d.augment.label_smoothing < 1.0:
        raise UserError(f"data.augment.label_smoothing: must be in [0, 1), got {d.augment.label_smoothing}")
    if t.warmup_epochs >= t.epochs:
        raise UserError(f"train.warmup_epochs: must be < train.epochs ({t.epochs}), got {t.warmup_epochs}")
    if (d.augment.mixup or d.augment.cutmix) and t.batch_size % 2:
        raise UserError(f"train.batch_size: Mixup/CutMix pair images, so the batch size must be even, got {t.batch_size}")
    if d.augment.randaugment and d.loader != "torchvision":
        raise UserError("data.augment.randaugment: needs data.loader 'torchvision' (RandAugment runs on PIL images)")
    if "name" not in cfg.schedule:
        raise UserError("schedule.name: missing; e.g. schedule: {name: never}")
    # Model and schedule names are checked against their registries here so that a typo
    # fails before anything is written.
    from prs import models, schedule

    if cfg.model.name not in models.names():
        raise UserError(f"model.name: unknown model '{cfg.model.name}'; choose one of {', '.join(models.names())}")
    schedule.create(cfg.schedule, epochs=t.epochs)  # raises UserError on a bad schedule
    from prs import data

    data.check_dataset_name(d.dataset)
    return cfg


# ----------------------------------------------------------------------------- public API


def from_dict(data: dict) -> Config:
    """Build and validate a Config from a (possibly partial) nested mapping."""
    return _validate(_from_dict(Config, data, ""))


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("prs.presets").iterdir() if p.name.endswith(".yaml"))


def read_yaml(path_or_preset: str | Path) -> dict:
    """Read a YAML mapping from a file path, or from a packaged preset by name."""
    path = Path(path_or_preset)
    if path.suffix not in (".yaml", ".yml"):
        if str(path_or_preset) not in preset_names():
            raise UserError(
                f"config '{path_or_preset}': not a .yaml file nor a preset; presets: {', '.join(preset_names())}")
        text = resources.files("prs.presets").joinpath(f"{path_or_preset}.yaml").read_text()
    else:
        if not path.is_file():
            raise UserError(f"config file '{path}' does not exist")
        text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"config '{path_or_preset}': not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config '{path_or_preset}': the top level must be a mapping, got {type(data).__name__}")
    return data


def merge(base: dict, override: dict) -> dict:
    """Deep-merge `override` into a copy of `base` (mappings merge, other values replace).

    `schedule` is replaced whole, since its keys depend on the schedule's name.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "schedule":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_assignment(item: str, form: str = "key=value", example: str = "train.epochs=10") -> tuple[str, object]:
    """One `--set` item, "NAME=YAML", as (name, value); a malformed one names `form` and `example`."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set '{item}': expected {form}, e.g. --set {example}")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise UserError(f"--set '{item}': the value is not valid YAML") from None


def parse_set(assignments: list[str]) -> dict:
    """Turn ["train.lr=0.1", "schedule={name: uniform, epoch: 3}"] into a nested mapping."""
    out: dict = {}
    for item in assignments:
        key, value = parse_assignment(item)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set '{item}': '{part}' is set twice")
        node[parts[-1]] = value
    return out


def load(path_or_preset: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Load a config file or preset, apply overrides, validate."""
    data = read_yaml(path_or_preset) if path_or_preset is not None else {}
    return from_dict(merge(data, overrides or {}))


def config_hash(cfg: Config) -> str:
    """Short hash of everything that changes what a run computes."""
    flat = to_dict(cfg)
    for key in NOT_HASHED:
        section, name = key.split(".")
        flat[section].pop(name, None)
    blob = json.dumps(flat, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
