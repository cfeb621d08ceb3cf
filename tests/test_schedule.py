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
