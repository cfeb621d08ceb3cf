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
    assert out == {"train": {"lr": "1e-3", "epochs": 7}, "data": {"augment": {"flip": False}},
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
    ({"train": {"lr": "1e-3"}}, "train.lr"),  # YAML 1.1 reads 1e-3 as a string: say so, do not guess
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
