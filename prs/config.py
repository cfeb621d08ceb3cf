"""Experiment configuration: typed, validated, hashed.

A config is data. It is read from YAML with `StrictLoader`, yaml.safe_load's loader (nothing is
evaluated) refusing duplicate keys and bounding size, depth and alias expansion,
checked field by field against the dataclasses below (unknown keys, wrong types and
values outside their row of `RANGES` are a `UserError` naming the field; model, schedule and dataset names
are checked against their registries), and hashed so that a run directory belongs to
exactly one config. The schedule is typed (`prs.schedule.ScheduleSpec`) but written and
hashed in its YAML form, `{name: prs, first: 2, last: 1}`.
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
from importlib import resources
from pathlib import Path
import yaml

from prs import data, models, reparam
from prs.errors import UserError
from prs.schedule import ScheduleSpec


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


# ----------------------------------------------------------------------------- field ranges


@dataclass(frozen=True)
class Range:
    """The meaningful values of a numeric field: low/high are numbers, another field's name
    (e.g. "train.epochs") or None (unbounded); `why` says what the field is, for messages and docs."""

    low: float | str | None
    high: float | str | None
    why: str
    low_open: bool = False
    high_open: bool = False

    def contains(self, value, field_value=lambda name: None) -> bool:
        low = field_value(self.low) if isinstance(self.low, str) else self.low
        high = field_value(self.high) if isinstance(self.high, str) else self.high
        if low is not None and (value <= low if self.low_open else value < low):
            return False
        return high is None or (value < high if self.high_open else value <= high)

    def text(self) -> str:
        if self.low is None and self.high is None:
            return "any finite number"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


MAX_SEED = 2**32 - 1
# One row per numeric field (list fields: per item): what the validation checks and the docs show
# (`ranges_markdown`). A new numeric field needs a row here (tests/test_config.py checks that).
RANGES = {
    "model.drop_path": Range(0, 1, "stochastic-depth probability", high_open=True),
    "data.ratio": Range(0, 1, "fraction of the training set kept", low_open=True),
    "data.subset_seed": Range(0, MAX_SEED, "seed of the data-ratio subset"),
    "data.num_workers": Range(0, 256, "loader worker processes"),
    "data.image_size": Range(8, 1024, "side of the square input image, pixels"),
    "data.augment.crop_padding": Range(0, "data.image_size", "random-crop padding, pixels", high_open=True),
    "data.augment.mixup": Range(0, None, "Mixup Beta(alpha, alpha); 0 = off"),
    "data.augment.cutmix": Range(0, None, "CutMix Beta(alpha, alpha); 0 = off"),
    "data.augment.label_smoothing": Range(0, 1, "label-smoothing mass", high_open=True),
    "train.epochs": Range(0, None, "epochs of training", low_open=True),
    "train.batch_size": Range(0, None, "global training batch", low_open=True),
    "train.eval_batch_size": Range(0, None, "evaluation batch", low_open=True),
    "train.lr": Range(0, None, "peak learning rate", low_open=True),
    "train.weight_decay": Range(0, None, "decoupled (AdamW) or L2 (SGD) weight decay"),
    "train.momentum": Range(0, 1, "SGD momentum", high_open=True),
    "train.warmup_epochs": Range(0, "train.epochs", "linear warm-up, epochs", high_open=True),
    "train.milestones": Range(0, None, "step-schedule epochs, each", low_open=True),
    "train.gamma": Range(0, 1, "step-schedule LR factor", low_open=True),
    "train.grad_clip": Range(0, None, "gradient-norm clip; null = off", low_open=True),
    "train.seed": Range(0, MAX_SEED, "training seed"),
    "train.restart_warmup_epochs": Range(0, None, "warm-up at each switch when lr_restart_at_switch, epochs"),
    "switch.gate_logit": Range(None, None, "sigmoid form: gate logit at the switch"),
    "switch.locality": Range(0, None, "sigmoid form: locality strength at the switch", low_open=True),
    "switch.content_locality": Range(0, None, "relative-position bump in the content logits at the switch; "
                                              "null = no bias"),
    "switch.gate_lr_scale": Range(0, None, "LR multiplier of gates and positional weights", low_open=True),
    "switch.qk_lr_scale": Range(0, None, "LR multiplier of the switchable layers' q/k", low_open=True),
}
# Numeric fields checked elsewhere, with where.
RANGES_ELSEWHERE = {"model.switchable_stages": "the model registry: each in 1, 2, 3, 4",
                    "schedule": "ScheduleSpec.within: every switch epoch in 0 .. train.epochs - 1"}
DEVICE_FORM = re.compile(r"auto|cpu|cuda(:[0-9]+)?|mps")


def ranges_markdown() -> str:
    """The RANGES table as Markdown (book/decisions.md holds a copy; a test keeps them equal)."""
    rows = ["| field | meaningful values | what it is |", "|---|---|---|"]
    rows += [f"| `{key}` | `{r.text()}` | {r.why} |" for key, r in RANGES.items()]
    return "\n".join(rows) + "\n"


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


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("prs.presets").iterdir() if p.name.endswith(".yaml"))


# What a config may be: far more than any real one needs, far less than what hurts.
MAX_CONFIG_BYTES = 256 * 1024
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_NODES = 20_000  # values after expanding every alias


class YAMLLimit(yaml.YAMLError):
    """A YAML text beyond MAX_DEPTH or MAX_NODES (e.g. an alias bomb or a list nested 20,000 deep)."""


class StrictLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader (no tags that run code), stricter about what silently misleads:

    - a key given twice in one mapping is an error (safe_load keeps the last one);
    - `1e-3`, `1E5`, `1.0e3` are floats, as in YAML 1.2 (YAML 1.1 reads them as strings);
    - nesting deeper than MAX_DEPTH, or more than MAX_NODES values once aliases are expanded,
      is an error before anything is built (bounded alias expansion).
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLLimit(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, typing.Hashable) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key}' is given twice in one mapping; keep one", key_node.start_mark)
                seen.add(key) if isinstance(key, typing.Hashable) else None
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(  # floats with an exponent and no dot, or no sign in the exponent
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _check_expanded_size(root) -> None:
    """Values and nesting of the document once every alias is expanded, computed per distinct
    node (so in time linear in the text, however much the aliases would expand)."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height)
    started: set[int] = set()

    def measure(node) -> tuple[int, int]:
        if id(node) in done:
            return done[id(node)]
        if id(node) in started:
            raise YAMLLimit("an alias refers to a value that contains it")
        started.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            children = [measure(child) for child in node.value]
        elif isinstance(node, yaml.MappingNode):
            children = [measure(n) for pair in node.value for n in pair]
        else:
            children = []
        values = 1 + sum(c[0] for c in children)
        height = 1 + max((c[1] for c in children), default=0)
        if values > MAX_NODES:
            raise YAMLLimit(f"more than {MAX_NODES} values once its aliases are expanded")
        if height > MAX_DEPTH:
            raise YAMLLimit(f"nested more than {MAX_DEPTH} levels deep once its aliases are expanded")
        done[id(node)] = values, height
        return done[id(node)]

    measure(root)


def yaml_data(text: str):
    """Parse YAML text with StrictLoader (errors are yaml.YAMLError)."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _config_text(path: Path, name) -> str:
    """The text of a config file: UTF-8, no NUL bytes, at most MAX_CONFIG_BYTES."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(f"config '{name}': larger than {MAX_CONFIG_BYTES // 1024} KiB; a config is a short YAML file")
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"config '{name}': cannot be read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config '{name}': not UTF-8 text (binary, or UTF-16?); save it as UTF-8 YAML") from None
    if "\x00" in text:
        raise UserError(f"config '{name}': holds NUL bytes, so it is not a text file; save it as UTF-8 YAML")
    return text


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
        text = _config_text(path, path_or_preset)
    try:
        data = yaml_data(text)
    except YAMLLimit as e:
        raise UserError(f"config '{path_or_preset}': {e}; a config is a short mapping") from None
    except yaml.YAMLError as e:
        raise UserError(f"config '{path_or_preset}': not valid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise UserError(f"config '{path_or_preset}': nested too deeply; a config is a short mapping") from None
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
