"""The positive-control dataset: written in the project's array format, read by the normal loaders,
balanced, deterministic, and with the two shapes far enough apart that no 3x3 window at the
hybrid's switchable stages holds both."""

import numpy as np

from prs import data
from prs.data import relation


def test_relation_dataset_is_read_like_any_generated_dataset(tmp_path):
    relation.write_relation_dataset(tmp_path / "synthetic-relation", train_per_class=6, test_per_class=3)
    train, test = data.load_datasets("synthetic-relation", tmp_path)
    assert train.classes == ["different", "same"] and len(train) == 12 and len(test) == 6
    assert np.bincount(np.asarray(train.targets)).tolist() == [6, 6]  # balanced
    relation.write_relation_dataset(tmp_path / "again", train_per_class=6, test_per_class=3)
    first, second = (np.load(tmp_path / name / "prs-npz" / "train.npz", allow_pickle=False)["images"]
                     for name in ("synthetic-relation", "again"))
    assert np.array_equal(first, second), "the same seed must give the same images"


def test_the_two_shapes_are_too_far_apart_for_one_window():
    """Centres >= 14 px apart, inside the image; at the 8x8 stage (4 input pixels per feature pixel)
    they land >= 2 feature pixels apart on some axis, so a 3x3 window centred on one shape never
    covers the other's centre."""
    rng = np.random.default_rng(0)
    centres = np.array([np.concatenate(relation.shape_centres(rng)) for _ in range(2000)])
    a, b = centres[:, :2], centres[:, 2:]
    assert (np.hypot(*(a - b).T) >= relation.MIN_DISTANCE).all()
    assert centres.min() >= 5 and centres.max() <= 27
    assert (np.abs(a // 4 - b // 4).max(axis=1) >= 2).all()
