"""Experiment configuration: typed, validated, hashed.

A config is data. It is read from YAML by `prs.yamlfile` (strict and bounded: nothing is evaluated,
duplicate keys are refused), checked field by field against the dataclasses below (unknown keys,
wrong types and values outside their row of `prs.config_ranges.RANGES` are a `UserError` naming the
field; model, schedule and dataset names are checked against their registries), and hashed so that
a run directory belongs to exactly one config. The schedule is typed (`prs.schedule.ScheduleSpec`)
but written and hashed in its YAML form, `{name: prs, first: 2, last: 1}`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prs import data, models, reparam
from prs.config_ranges import RANGES, RANGES_ELSEWHERE, ranges_markdown  # noqa: F401  (re-exported for callers)
from prs.errors import UserError
from prs.schedule import ScheduleSpec
from prs.yamlfile import MAX_CONFIG_BYTES, YAMLLimit, preset_names, read_yaml, yaml_data  # noqa: F401  (re-exported)


@dataclass
class ModelConfig:
    name: str = "resnet_tiny"
    drop_path: float = 0.0
    # Hybrids only: which ResNet stages (1-4) hold switchable 3x3 convolutions; None = model default.
    switchable_stages: list[int] | None = None
    # Start from the final weights of a finished run of the same model under run.root (its directory
    # name, "<model>-<hash>"), e.g. T-CNN: a CNN trained for its full schedule, then switched and fine-tuned.
    init_from: str | None = None


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
    # Ablation of the late-switch confound (cosine only): at every epoch where layers switch, warm the
    # learning rate up again over `restart_warmup_epochs` and decay it by a new cosine to the end.
    lr_restart_at_switch: bool = False
    restart_warmup_epochs: float = 1.0
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
    # "linear" (a plain gate, 1 at the switch: the layer is its convolution bit for bit) or
    # "sigmoid" (ConViT's gate, kept for comparison: exact only as gate_logit and locality grow).
    form: str = "linear"
    # "sigmoid" only: gate logit lambda and locality alpha of the positional attention at the switch.
    gate_logit: float = 10.0
    locality: float = 12.0
    # A relative-position bias in the content logits at the switch, a soft bump of this strength on
    # each head's tap (ConViT's default is 1; 0 = a learned bias starting flat); null = no bias.
    content_locality: float | None = None
    # "zero": the query projection starts at zero, so content attention starts as softmax(bias).
    query_init: str = "random"
    # "linear" only: keep each gate in [0, 1] (projected after every step), so that every head is a
    # convex mix of its tap and its content attention.
    bounded_gate: bool = True
    # LR multipliers: gates and positional/bias weights; the q/k projections of switchable layers.
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
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    run: RunConfig = field(default_factory=RunConfig)


CHOICES = {
    "data.loader": ("device", "torchvision"),
    "train.optimizer": ("adamw", "sgd"),
    "train.lr_schedule": ("cosine", "step"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "switch.form": reparam.FORMS,
    "switch.query_init": reparam.QUERY_INITS,
}
# Fields that say where things live or how fast they load, not what is computed.
NOT_HASHED = ("run.root", "data.root", "data.download", "data.num_workers")
# Fields added after runs existed, hashed only when they differ from these defaults, so that the runs
# of earlier commits keep their directories (a finished run is reused across commits).
HASHED_WHEN_SET = {"train.lr_restart_at_switch": False, "train.restart_warmup_epochs": 1.0, "model.init_from": None}


DEVICE_FORM = re.compile(r"auto|cpu|cuda(:[0-9]+)?|mps")


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
    if tp is ScheduleSpec:
        return ScheduleSpec.from_dict(value)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is float and not math.isfinite(value):  # YAML's .nan / .inf: never a meaningful setting
        raise UserError(f"{where}: must be a finite number, got {value!r}")
    return value


def _from_dict(cls, mapping, where: str):
    if not isinstance(mapping, dict):
        raise UserError(f"{where or 'config'}: expected a mapping of keys to values, got {mapping!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in mapping if k not in names]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise UserError(f"unknown config key '{key}'; allowed keys here: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in mapping.items()}
    return cls(**kwargs)


def _field_value(cfg: Config, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _check_ranges(cfg: Config) -> None:
    """Every numeric field against its row of RANGES (list fields: every item)."""
    for key, allowed in RANGES.items():
        value = _field_value(cfg, key)
        for item in value if isinstance(value, list) else [value]:
            if item is not None and not allowed.contains(item, lambda name: _field_value(cfg, name)):
                raise UserError(f"{key}: must be {allowed.text()} ({allowed.why}), got {item!r}")


def _validate(cfg: Config) -> Config:
    flat = to_dict(cfg)
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = flat[section][name]
        if value not in allowed:
            raise UserError(f"{key}: '{value}' is not one of {', '.join(allowed)}")
    _check_ranges(cfg)
    t, d = cfg.train, cfg.data
    if not DEVICE_FORM.fullmatch(t.device):
        raise UserError(f"train.device: '{t.device}' is not a device; use auto, cpu, cuda, cuda:N or mps")
    if t.lr_restart_at_switch and t.lr_schedule != "cosine":
        raise UserError(f"train.lr_restart_at_switch: needs train.lr_schedule 'cosine', got '{t.lr_schedule}'")
    if (d.augment.mixup or d.augment.cutmix) and t.batch_size % 2:
        raise UserError(f"train.batch_size: Mixup/CutMix pair images, so the batch size must be even, got {t.batch_size}")
    if d.augment.randaugment and d.loader != "torchvision":
        raise UserError("data.augment.randaugment: needs data.loader 'torchvision' (RandAugment runs on PIL images)")
    models.check_name(cfg.model.name)
    cfg.schedule.within(t.epochs)
    data.check_dataset_name(d.dataset)
    return cfg


# ----------------------------------------------------------------------------- public API


def from_dict(mapping: dict) -> Config:
    """Build and validate a Config from a (possibly partial) nested mapping."""
    return _validate(_from_dict(Config, mapping, ""))


def to_dict(cfg: Config) -> dict:
    """The config as plain data (what config.yaml holds and the hash is taken of)."""
    return {f.name: cfg.schedule.to_dict() if f.name == "schedule" else dataclasses.asdict(getattr(cfg, f.name))
            for f in dataclasses.fields(cfg)}


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
        return key.strip(), yaml_data(raw)
    except (yaml.YAMLError, RecursionError) as e:
        raise UserError(f"--set '{item}': the value is not valid YAML ({' '.join(str(e).split())})") from None


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
    for key, default in HASHED_WHEN_SET.items():
        section, name = key.split(".")
        if flat[section][name] == default:
            flat[section].pop(name)
    blob = json.dumps(flat, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
