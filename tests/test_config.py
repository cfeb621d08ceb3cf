"""prs.config: safe loading, validation that names the field, overrides, the config hash."""

import dataclasses

import pytest
import yaml

from prs import config
from prs.config import Config
from prs.errors import UserError


# A base config of its own, so that these tests do not move when a preset is retuned.
BASE = {"model": {"name": "hybrid_tiny"}, "data": {"dataset": "synthetic", "ratio": 0.5},
        "train": {"epochs": 4, "batch_size": 32, "lr": 0.003, "warmup_epochs": 0.5, "device": "cpu"},
        "schedule": {"name": "prs", "first": 3, "last": 1}}


def load(overrides=None):
    return config.from_dict(config.merge(BASE, overrides or {}))


def test_every_preset_loads_and_round_trips():
    for name in config.preset_names():
        cfg = config.load(name)
        again = config.from_dict(config.to_dict(cfg))
        assert again == cfg and config.config_hash(again) == config.config_hash(cfg)
        # A YAML dump of the config (what a run directory keeps) reads back to the same config.
        assert config.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict(cfg)))) == cfg


def test_defaults_are_valid_and_partial_mappings_fill_in():
    cfg = config.from_dict({"train": {"epochs": 3}})
    assert cfg.train.epochs == 3 and cfg.train.batch_size == Config().train.batch_size
    assert cfg.data.augment == Config().data.augment


def test_overrides_deep_merge_and_replace_schedule_whole():
    base = {"train": {"epochs": 10, "lr": 0.1}, "schedule": {"name": "prs", "first": 8, "last": 2}}
    merged = config.merge(base, {"train": {"lr": 0.2}, "schedule": {"name": "uniform", "epoch": 3}})
    assert merged == {"train": {"epochs": 10, "lr": 0.2}, "schedule": {"name": "uniform", "epoch": 3}}
    assert base["train"]["lr"] == 0.1  # the base is not modified


def test_parse_set_reads_values_as_yaml_data():
    out = config.parse_set(["train.lr=1e-3", "train.epochs=7", "data.augment.flip=false",
                            "schedule={name: uniform, epoch: 2}", "model.switchable_stages=[3, 4]", "run.tag=a=b"])
    assert out == {"train": {"lr": 0.001, "epochs": 7}, "data": {"augment": {"flip": False}},
                   "schedule": {"name": "uniform", "epoch": 2}, "model": {"switchable_stages": [3, 4]},
                   "run": {"tag": "a=b"}}


def test_parse_set_then_load_applies_overrides():
    preset = config.from_dict(config.read_yaml("smoke"))
    overrides = ["train.epochs=16", "train.lr=0.01", "schedule={name: uniform, epoch: 15}"]
    cfg = config.load("smoke", config.parse_set(overrides))
    assert (cfg.train.epochs, cfg.train.lr) == (16, 0.01)
    assert cfg.schedule.to_dict() == {"name": "uniform", "epoch": 15} and cfg.schedule.label == "uniform(E=15)"
    assert cfg.model == preset.model and cfg.data == preset.data  # the rest comes from the preset


@pytest.mark.parametrize("overrides, field", [
    ({"model": {"nmae": "resnet_tiny"}}, "model.nmae"),
    ({"trian": {"epochs": 3}}, "trian"),
    ({"data": {"augment": {"mixpu": 0.2}}}, "data.augment.mixpu"),
    ({"train": {"epochs": "3"}}, "train.epochs"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"epochs": True}}, "train.epochs"),
    ({"train": {"lr": "0.001"}}, "train.lr"),  # a quoted number is text: say so, do not guess
    ({"train": {"lr": float("nan")}}, "train.lr"),
    ({"train": {"lr": float("inf")}}, "train.lr"),
    ({"train": {"weight_decay": float("inf")}}, "train.weight_decay"),
    ({"train": {"grad_clip": float("nan")}}, "train.grad_clip"),
    ({"data": {"augment": {"flip": 1}}}, "data.augment.flip"),
    ({"train": {"milestones": 30}}, "train.milestones"),
    ({"model": "resnet_tiny"}, "model"),
    ({"model": {"name": "resnet_huge"}}, "model.name"),
    ({"schedule": {"name": "sometimes"}}, "schedule.name"),
    ({"schedule": {"epoch": 3}}, "schedule.name"),
    ({"schedule": {"name": "uniform", "epoch": 4}}, "schedule.epoch"),  # BASE has 4 epochs: 0..3
    ({"schedule": {"name": "uniform", "epoch": -1}}, "schedule.epoch"),
    ({"schedule": {"name": "uniform", "epoh": 1}}, "epoh"),
    ({"data": {"dataset": "cifar10"}}, "data.dataset"),
    ({"data": {"ratio": 0.0}}, "data.ratio"),
    ({"data": {"ratio": 1.5}}, "data.ratio"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"batch_size": -8}}, "train.batch_size"),
    ({"train": {"optimizer": "adam"}}, "train.optimizer"),
    ({"train": {"precision": "fp8"}}, "train.precision"),
    ({"data": {"loader": "dali"}}, "data.loader"),
    ({"data": {"augment": {"label_smoothing": 1.0}}}, "data.augment.label_smoothing"),
    ({"train": {"warmup_epochs": 4}}, "train.warmup_epochs"),
    ({"data": {"augment": {"randaugment": "rand-m9-n2"}}}, "data.augment.randaugment"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(UserError) as e:
        load(overrides)
    message = str(e.value)
    assert field in message and "\n" not in message


# Every numeric field just outside its meaningful range (RANGES), and the row the message must quote.
OUT_OF_RANGE = [
    ("train.grad_clip", -1.0, "> 0"), ("train.grad_clip", 0.0, "> 0"), ("train.gamma", -1.0, "in (0, 1]"),
    ("train.gamma", 0.0, "in (0, 1]"), ("train.momentum", -1.0, "in [0, 1)"), ("train.momentum", 1.0, "in [0, 1)"),
    ("train.seed", -1, "in [0, 4294967295]"), ("train.seed", 2**63 + 1, "in [0, 4294967295]"),
    ("data.subset_seed", -3, "in [0, 4294967295]"), ("model.drop_path", 2.0, "in [0, 1)"),
    ("model.drop_path", -0.1, "in [0, 1)"), ("train.lr", -0.001, "> 0"), ("train.weight_decay", -0.05, ">= 0"),
    ("train.warmup_epochs", -1.0, "in [0, train.epochs)"), ("train.milestones", [2, 0], "> 0"),
    ("train.eval_batch_size", 0, "> 0"), ("data.num_workers", -1, "in [0, 256]"), ("data.image_size", 0, "in [8, 1024]"),
    ("data.augment.crop_padding", -4, "in [0, data.image_size)"), ("data.augment.crop_padding", 32, "in [0, data.image_size)"),
    ("data.augment.mixup", -0.2, ">= 0"), ("data.augment.cutmix", -1.0, ">= 0"),
    ("data.augment.label_smoothing", -0.1, "in [0, 1)"), ("switch.locality", 0.0, "> 0"),
    ("switch.gate_lr_scale", -1.0, "> 0"),
]


def nested(key, value):
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


@pytest.mark.parametrize("key, value, allowed", OUT_OF_RANGE)
def test_every_numeric_field_is_checked_against_its_range(key, value, allowed):
    with pytest.raises(UserError) as e:
        load(nested(key, value))
    message = str(e.value)
    assert message.startswith(f"{key}: must be {allowed} (") and repr(value if not isinstance(value, list) else 0) \
        in message, message


def type_leaves(tp):
    """list[int] | None -> [UnionType, list, int, NoneType]: every type named in a hint."""
    import typing
    args = typing.get_args(tp)
    return [tp] if not args else [typing.get_origin(tp)] + [leaf for a in args for leaf in type_leaves(a)]


def numeric_fields(cls=Config, prefix=""):
    """Every int or float field of the config (list items included), as dotted names."""
    import typing
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            yield from numeric_fields(tp, f"{prefix}{f.name}.")
        elif int in type_leaves(tp) or float in type_leaves(tp):
            yield f"{prefix}{f.name}"


def test_every_numeric_field_has_a_row_in_the_range_table():
    fields = set(numeric_fields())
    assert "train.lr" in fields and "train.milestones" in fields and "train.grad_clip" in fields
    missing = {f for f in fields - set(config.RANGES)
               if not any(f == k or f.startswith(k + ".") for k in config.RANGES_ELSEWHERE)}
    assert not missing, f"numeric fields without a row in prs.config.RANGES: {sorted(missing)}"
    assert set(config.RANGES) <= fields
    # Every default sits inside its range, and the values just inside the bounds are accepted.
    load({"train": {"momentum": 0.0, "gamma": 1.0, "seed": 2**32 - 1}, "model": {"drop_path": 0.0},
          "data": {"augment": {"crop_padding": 31, "label_smoothing": 0.0}}})


def test_the_docs_show_the_range_table():
    from pathlib import Path
    page = (Path(__file__).resolve().parents[1] / "book" / "decisions.md").read_text()
    assert config.ranges_markdown() in page, (
        "book/decisions.md must hold prs.config.ranges_markdown() verbatim:\n" + config.ranges_markdown())


def test_device_names_are_checked_before_anything_runs():
    for bad in ("meta", "gpu", "cuda:x", "cpu "):
        with pytest.raises(UserError, match="train.device"):
            load({"train": {"device": bad}})
    for good in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert load({"train": {"device": good}}).train.device == good


def test_yaml_duplicate_keys_are_an_error(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  epochs: 7\nmodel: {name: resnet_tiny}\ntrain:\n  lr: 0.01\n")
    with pytest.raises(UserError, match="key 'train' is given twice"):
        config.load(path)
    path.write_text("train: {lr: 0.1, lr: 0.2}\n")
    with pytest.raises(UserError, match="key 'lr' is given twice"):
        config.load(path)
    path.write_text("base: &b {epochs: 3}\ntrain: {<<: *b, lr: 0.2}\n")  # a merge key is no duplicate
    assert config.read_yaml(path)["train"] == {"epochs": 3, "lr": 0.2}


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("1E5", 100000.0), ("1.0e3", 1000.0), ("-2.5e-2", -0.025),
                                         ("5.0e-4", 0.0005), ("0.1", 0.1), ("3", 3), ("1e", "1e"), (".inf", None)])
def test_yaml_exponents_without_a_dot_are_floats(tmp_path, text, value):
    path = tmp_path / "lr.yaml"
    path.write_text(f"train:\n  lr: {text}\n")
    got = config.read_yaml(path)["train"]["lr"]
    if value is None:
        assert got == float("inf")
    else:
        assert got == value and type(got) is type(value)
    if text == "1e-3":
        assert config.load(path).train.lr == 0.001
        assert config.parse_set([f"train.lr={text}"]) == {"train": {"lr": 0.001}}


def alias_bomb() -> str:
    """The classic: 9 strings, 9 lists of 9 aliases of the previous one, 9 levels: 9**9 strings."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(8):
        prev, name = chr(97 + i), chr(98 + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, message", [
    (alias_bomb(), "values once its aliases are expanded"),
    ("a: &a [*a]\n", "refers to a value that contains it"),
    ("x: " + "[" * 20000 + "]" * 20000 + "\n", "nested more than 32 levels"),
    ("".join("  " * i + "-\n" for i in range(200)), "nested more than 32 levels"),
])
def test_yaml_bombs_fail_fast_with_one_line(tmp_path, text, message):
    import time
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    tick = time.monotonic()
    with pytest.raises(UserError) as e:
        config.load(path)
    assert time.monotonic() - tick < 5 and message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content, message", [
    ("train:\n  epochs: 3\n".encode("utf-16"), "not UTF-8 text"),
    (bytes(range(256)) * 4, "not UTF-8 text"),
    (b"train:\n  epochs: 3\x00\x00\n", "NUL bytes"),
    (b"# x\n" * (config.MAX_CONFIG_BYTES // 4 + 1), "larger than 256 KiB"),
])
def test_binary_utf16_and_huge_configs_are_one_line(tmp_path, content, message):
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        config.load(path)


def test_choice_errors_list_the_allowed_values():
    with pytest.raises(UserError, match="adamw, sgd"):
        load({"train": {"optimizer": "adam"}})
    with pytest.raises(UserError, match="resnet_tiny"):
        load({"model": {"name": "resnet_huge"}})
    with pytest.raises(UserError, match="uniform"):
        load({"schedule": {"name": "sometimes"}})
    with pytest.raises(UserError, match=r"allowed keys here: .*batch_size"):
        load({"train": {"batchsize": 3}})


def test_yaml_files_must_be_mappings_and_are_never_executed(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        config.load(evil)
    assert not marker.exists()
    for text, kind in (("- a\n- b\n", "list"), ("just text\n", "str"), ("3\n", "int")):
        path = tmp_path / "x.yaml"
        path.write_text(text)
        with pytest.raises(UserError, match=f"must be a mapping, got {kind}"):
            config.load(path)
    with pytest.raises(UserError, match="does not exist"):
        config.load(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="smoke"):  # names the presets there are
        config.load("no_such_preset")


def test_set_values_are_data_not_code():
    with pytest.raises(UserError, match="not valid YAML"):
        config.parse_set(["run.tag=!!python/object/apply:os.getcwd []"])
    for bad in ("train.epochs", "=3", "train.epochs=[1"):
        with pytest.raises(UserError, match="--set"):
            config.parse_set([bad])
    with pytest.raises(UserError, match="set twice"):
        config.parse_set(["train.epochs=3", "train.epochs.x=1"])


# ----------------------------------------------------------------------------- the hash


def test_hash_is_stable_and_ignores_key_order():
    a = config.from_dict({"train": {"epochs": 3, "lr": 0.1}, "model": {"name": "resnet_tiny"}})
    b = config.from_dict({"model": {"name": "resnet_tiny"}, "train": {"lr": 0.1, "epochs": 3}})
    assert config.config_hash(a) == config.config_hash(b)
    assert len(config.config_hash(a)) == 12 and int(config.config_hash(a), 16) >= 0
    # Ints given for floats hash like the floats: 1 and 1.0 are the same learning rate.
    c = config.from_dict({"model": {"name": "resnet_tiny"}, "train": {"lr": 0.1, "epochs": 3, "weight_decay": 0}})
    d = config.from_dict({"model": {"name": "resnet_tiny"}, "train": {"lr": 0.1, "epochs": 3, "weight_decay": 0.0}})
    assert config.config_hash(c) == config.config_hash(d)


def test_hash_changes_with_what_is_computed_only():
    cfg = load()
    h = config.config_hash(cfg)
    for key in config.NOT_HASHED:  # where things live or how fast they load
        section, name = key.split(".")
        other = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{
            name: {"run.root": "elsewhere", "data.root": "/mnt/data", "data.download": True,
                   "data.num_workers": 7}[key]})})
        assert config.config_hash(other) == h, key
    changed = [{"train": {"seed": 1}}, {"train": {"lr": 0.004}}, {"data": {"ratio": 0.25}},
               {"schedule": {"name": "uniform", "epoch": 1}}, {"switch": {"gate_logit": 5.0}},
               {"run": {"tag": "again"}}, {"data": {"augment": {"flip": False}}}, {"model": {"name": "resnet_tiny"},
                                                                                   "schedule": {"name": "never"}}]
    hashes = {config.config_hash(load(o)) for o in changed}
    assert h not in hashes and len(hashes) == len(changed)


def test_fields_added_later_leave_earlier_hashes_alone_until_set():
    cfg = config.load(None, {"train": {"epochs": 4}})
    flat = config.to_dict(cfg)
    for key in config.HASHED_WHEN_SET:
        section, name = key.split(".")
        flat[section].pop(name)
    for key in config.NOT_HASHED:
        section, name = key.split(".")
        flat[section].pop(name)
    import hashlib
    import json

    before = hashlib.sha256(json.dumps(flat, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert config.config_hash(cfg) == before  # the hash a config had before these fields existed
    restarted = config.load(None, {"train": {"epochs": 4, "lr_restart_at_switch": True}})
    assert config.config_hash(restarted) != config.config_hash(cfg)
    with pytest.raises(UserError, match="lr_restart_at_switch"):
        config.load(None, {"train": {"epochs": 4, "lr_restart_at_switch": True, "lr_schedule": "step"}})
