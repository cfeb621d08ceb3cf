"""The positive control of the switch: a two-class task that needs information from far apart.

Each 32x32 image holds a filled square and a ring, their centres at least `min_distance` pixels
apart, on the same textured, noisy background as the synthetic CIFAR-100; the label is whether the
two have the same colour ("same" / "different", balanced). Position, colours and background carry
no information on their own. In the hybrid's switchable stages (8x8 and 4x4 feature maps) a 3x3
window holds at most one of the two shapes when they are >= 14 px apart; a convolutional network can
still relate them, through depth and pooling, but attention from the square to the ring (a match on
shape, never on itself) carries the ring's colour to the square in one layer. On this task the
switched hybrid should beat the never-switched CNN and rely on its attention (a positive collapse
gap); on the motif task of the synthetic CIFAR-100, which is local, it need not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prs.data.arrays import ARRAY_FOLDER, read_manifest, write_array_dataset
from prs.data.synthetic import PALETTE
from prs.errors import UserError

RELATION_CLASSES = ("different", "same")
MIN_DISTANCE = 14.0  # pixels between the two centres (32x32 image)


def _background(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 32, 32, 3) float: a grey level with a slight tint and a smooth random texture."""
    f32, size = np.float32, 32
    grey = rng.uniform(0.3, 0.7, (n, 1, 1, 1)) + rng.normal(0, 0.04, (n, 3, 1, 1))
    grid = rng.normal(0, 0.12, (n, 3, 5, 5)).astype(f32)
    t = np.linspace(0, 4, size, dtype=f32)
    up = np.maximum(0, 1 - np.abs(t[:, None] - np.arange(5, dtype=f32)[None, :]))
    return (grey.astype(f32) + up @ grid @ up.T).transpose(0, 2, 3, 1)


def shape_centres(rng: np.random.Generator, min_distance: float = MIN_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) centres of the square and the ring, inside [5, 27] and at least `min_distance` apart."""
    while True:  # rejection sampling: about half of the draws are far enough apart
        a, b = rng.uniform(5, 27, 2), rng.uniform(5, 27, 2)
        if np.hypot(*(a - b)) >= min_distance:
            return a, b


def relation_images(labels: np.ndarray, rng: np.random.Generator, min_distance: float = MIN_DISTANCE) -> np.ndarray:
    """uint8 (N, 32, 32, 3) images for `labels` (1 = same colour, 0 = different)."""
    n = len(labels)
    img = _background(n, rng)
    colour_a = rng.integers(0, 10, n)
    colour_b = np.where(labels == 1, colour_a, (colour_a + rng.integers(1, 10, n)) % 10)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(n):
        a, b = shape_centres(rng, min_distance)
        from_a = np.maximum(abs(xx - a[0]), abs(yy - a[1]))  # Chebyshev distance to each centre
        from_b = np.maximum(abs(xx - b[0]), abs(yy - b[1]))
        img[i][from_a <= 2.5] = PALETTE[colour_a[i]] * rng.uniform(0.85, 1.0) + rng.normal(0, 0.03, 3)
        img[i][(from_b <= 3.5) & (from_b >= 2.0)] = PALETTE[colour_b[i]] * rng.uniform(0.85, 1.0) + rng.normal(0, 0.03, 3)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.05)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def relation_split(rng: np.random.Generator, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (2 per_class, 32, 32, 3), labels int64), shuffled and balanced."""
    labels = rng.permutation(np.repeat(np.arange(2), per_class))
    return relation_images(labels, rng), labels.astype(np.int64)


def write_relation_dataset(root, seed: int = 0, train_per_class: int = 2500, test_per_class: int = 500) -> Path:
    """Write the positive-control task to `<root>/prs-npz` (`prs.data.arrays`); returns that folder.

    Defaults: 5000 training and 1000 test images (generated in about a second per thousand).
    Deterministic in `seed`; if the folder already holds the same set it is kept."""
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"relation data: {name} must be a positive integer, got {value!r}")
    folder = Path(root) / ARRAY_FOLDER
    settings = {"generator": "prs-relation", "version": 1, "seed": int(seed), "min_distance": MIN_DISTANCE,
                "train_per_class": train_per_class, "test_per_class": test_per_class}
    manifest = read_manifest(folder) if folder.exists() else None
    if manifest is not None and manifest.get("settings") == settings:
        return folder
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))
    train_images, train_labels = relation_split(train_rng, train_per_class)
    test_images, test_labels = relation_split(test_rng, test_per_class)
    return write_array_dataset(folder, train_images, train_labels, test_images, test_labels, RELATION_CLASSES,
                               settings)
