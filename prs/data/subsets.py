"""Data-scale subsets: which training images a data ratio keeps (the test set is always complete).

`balanced_subset` (seeded, stratified, nested across ratios) for CIFAR-format data,
`imagefolder_subset` (ConViT's rule: per class the first files in sorted order) for folders.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from prs.data.datasets import is_imagefolder, labels_of
from prs.errors import UserError


def _check_ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating, np.integer)) \
            or not 0.0 < float(ratio) <= 1.0:
        raise UserError(f"data.ratio: must be a number in (0, 1], got {ratio!r}")
    return float(ratio)


def _subset_count(n: int, ratio: float) -> int:
    # floor(n * ratio), with a tolerance so that e.g. 0.29 * 100 = 28.999999999999996 counts 29.
    return min(n, int(math.floor(n * ratio + 1e-9)))


def balanced_subset(labels, ratio: float, seed: int) -> np.ndarray:
    """Sorted int64 indices of a seeded, stratified sample keeping `ratio` of every class.

    Rule: class c with n_c images keeps k_c = floor(n_c * ratio) of them (so equal-size classes
    keep equal counts), chosen as the first k_c of the class in an order drawn from `seed`
    (one random key per image, sorted within its class). The order does not depend on the
    ratio, so for one seed a smaller ratio's subset lies inside a larger one's. A class
    that would keep no image is an error.
    """
    ratio = _check_ratio(ratio)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"balanced_subset: labels must be 1-D, got shape {labels.shape}")
    keys = np.random.default_rng(seed).random(len(labels))
    order = np.lexsort((keys, labels))  # grouped by class, random within a class
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    keep = np.array([_subset_count(int(n), ratio) for n in counts], dtype=np.int64)
    if len(keep) and keep.min() == 0:
        c = int(np.argmin(keep))
        raise UserError(f"data.ratio: {ratio} keeps no image of class {classes[c]} ({counts[c]} images); "
                        f"use a ratio >= {1 / counts.min():.4g}")
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    chosen = order[rank < np.repeat(keep, counts)]
    return np.sort(chosen).astype(np.int64)


def imagefolder_subset(samples_or_dataset, ratio: float) -> np.ndarray:
    """ConViT's rule: per class the first floor(n_c * ratio) files in sorted path order.

    Takes an ImageFolder (its `.samples`) or a list of (path, class_index); returns sorted int64
    indices into that list. Deterministic; no seed.
    """
    ratio = _check_ratio(ratio)
    samples = getattr(samples_or_dataset, "samples", samples_or_dataset)
    by_class: dict[int, list[tuple[str, int]]] = {}
    for i, (path, label) in enumerate(samples):
        by_class.setdefault(int(label), []).append((str(path), i))
    chosen = []
    for label, files in sorted(by_class.items()):
        k = _subset_count(len(files), ratio)
        if k == 0:
            raise UserError(f"data.ratio: {ratio} keeps no image of class {label} ({len(files)} images); "
                            f"use a ratio >= {1 / len(files):.4g}")
        chosen += [i for _, i in sorted(files)[:k]]
    return np.sort(np.array(chosen, dtype=np.int64))


def train_indices(dataset_name: str, train_ds, ratio: float, seed: int) -> np.ndarray:
    """Indices of the training subset: ConViT's rule for image folders, else `balanced_subset`."""
    if is_imagefolder(dataset_name):
        return imagefolder_subset(train_ds, ratio)
    return balanced_subset(labels_of(train_ds), ratio, seed)


def indices_sha(indices) -> str:
    """Short hash of a subset, to record which images a run trained on."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()[:12]
