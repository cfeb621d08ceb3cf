import pytest

from prs import schedule
from prs.errors import UserError

LAYERS = [f"layer{i}" for i in range(5)]


def epochs_of(spec, epochs=10, layers=LAYERS):
    return list(schedule.create(spec, epochs=epochs).switch_epochs(layers).values())


def test_never_and_from_start():
    assert epochs_of({"name": "never"}) == [None] * 5
    assert epochs_of({"name": "from_start"}) == [0] * 5


def test_uniform():
    assert epochs_of({"name": "uniform", "epoch": 4}) == [4] * 5


def test_prs_is_linear_in_depth_with_later_layers_earlier():
    assert epochs_of({"name": "prs", "first": 8, "last": 0}) == [8, 6, 4, 2, 0]
    got = epochs_of({"name": "prs", "first": 9, "last": 3}, layers=LAYERS[:4])
    assert got == [9, 7, 5, 3]
    assert got == sorted(got, reverse=True)


def test_reverse_mirrors_prs():
    assert epochs_of({"name": "reverse", "first": 0, "last": 8}) == [0, 2, 4, 6, 8]


def test_single_layer_takes_the_deepest_epoch():
    assert epochs_of({"name": "prs", "first": 8, "last": 2}, layers=["only"]) == [2]


def test_schedule_is_plain_data():
    s = schedule.create({"name": "prs", "first": 5, "last": 1}, epochs=6)
    assert s.to_dict() == {"name": "prs", "first": 5, "last": 1}
    assert all(isinstance(v, int) for v in s.switch_epochs(LAYERS).values())


@pytest.mark.parametrize("spec,match", [
    ({"name": "nope"}, "unknown schedule 'nope'"),
    ({"name": "uniform"}, "missing: epoch"),
    ({"name": "uniform", "epoch": 3, "typo": 1}, "unknown: typo"),
    ({"name": "uniform", "epoch": 10}, "outside the run"),
    ({"name": "uniform", "epoch": -1}, "outside the run"),
    ({"name": "uniform", "epoch": 2.5}, "integer epoch"),
    ({"name": "prs", "first": 1, "last": 5}, "last .* must be <= first"),
    ({"name": "reverse", "first": 5, "last": 1}, "must be >= first"),
    ({"epoch": 3}, "with a 'name'"),
])
def test_bad_specs(spec, match):
    with pytest.raises(UserError, match=match):
        schedule.create(spec, epochs=10)


def test_every_registered_schedule_builds():
    params = {"uniform": {"epoch": 1}, "prs": {"first": 2, "last": 0}, "reverse": {"first": 0, "last": 2}}
    for name in schedule.names():
        got = epochs_of({"name": name, **params.get(name, {})}, epochs=3)
        assert len(got) == 5 and all(e is None or 0 <= e < 3 for e in got)


def test_spec_labels_name_each_schedule_for_tables():
    labels = {"never": "never", "from_start": "from_start"}
    specs = {"uniform": ({"epoch": 3}, "uniform(E=3)"), "prs": ({"first": 2, "last": 1}, "prs(2→1)"),
             "reverse": ({"first": 1, "last": 2}, "reverse(1→2)")}
    for name in schedule.names():
        params, label = specs.get(name, ({}, labels.get(name)))
        assert schedule.ScheduleSpec(name, params).label == label, name


def test_spec_is_checked_when_made_and_against_the_run_once():
    spec = schedule.ScheduleSpec.from_dict({"name": "uniform", "epoch": 9})  # no run length needed yet
    assert spec == schedule.ScheduleSpec("uniform", {"epoch": 9}) and spec.to_dict() == {"name": "uniform", "epoch": 9}
    assert spec.within(10) is spec
    with pytest.raises(UserError, match="schedule.epoch: switch epoch 9 is outside the run; allowed 0..2"):
        spec.within(3)
    with pytest.raises(UserError, match="missing: last"):
        schedule.ScheduleSpec("prs", {"first": 2})
    with pytest.raises(UserError, match="schedule: expected a mapping"):
        schedule.ScheduleSpec.from_dict("prs")


def test_config_holds_the_typed_spec_and_writes_its_yaml_form():
    from prs import config

    cfg = config.from_dict({"train": {"epochs": 4}, "schedule": {"name": "prs", "first": 3, "last": 1}})
    assert isinstance(cfg.schedule, schedule.ScheduleSpec) and cfg.schedule.label == "prs(3→1)"
    assert config.to_dict(cfg)["schedule"] == {"name": "prs", "first": 3, "last": 1}
    assert list(config.to_dict(cfg)) == ["model", "data", "train", "schedule", "switch", "run"]
    assert config.from_dict({}).schedule == schedule.ScheduleSpec("never")
