"""Shared fixtures: the synthetic data roots and the tiny hybrid config that several test files train."""

import pytest

from prs import config, data


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A data root holding the default synthetic set (5000 train / 1000 test images), written once."""
    root = tmp_path_factory.mktemp("synthetic_data")
    data.load_datasets("synthetic", root)
    return root


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """A data root holding a small synthetic set (400 train / 200 test images) where
    `data.dataset: synthetic` reads it. Tests only read it."""
    root = tmp_path_factory.mktemp("tiny_data")
    data.write_synthetic_cifar100(root / "synthetic", train_per_class=4, test_per_class=2)
    return root


@pytest.fixture(scope="session")
def tiny_config(tiny_data_root):
    """tiny_config(overrides) -> a config mapping: hybrid_tiny with its two deepest stages
    switchable, on the tiny synthetic set, CPU, batch 32, 3 epochs, PRS switching them at
    epochs 2 and 1; `overrides` is deep-merged in (a schedule replaces the whole schedule)."""
    base = {
        "model": {"name": "hybrid_tiny", "switchable_stages": [3, 4]},
        "data": {"dataset": "synthetic", "root": str(tiny_data_root), "ratio": 1.0},
        "train": {"epochs": 3, "batch_size": 32, "device": "cpu"},
        "schedule": {"name": "prs", "first": 2, "last": 1},
    }

    def make(overrides: dict | None = None) -> dict:
        return config.merge(base, overrides or {})

    return make
