"""The offline synthetic CIFAR-100: 100 classes of motifs (shape x colour) on textured backgrounds.

`write_synthetic_cifar100` generates the arrays and writes them with
`prs.data.arrays.write_array_dataset` (`.npz`, no pickle) to `<root>/prs-npz`, where
`prs.data.arrays.ArrayCIFAR100` reads them through torchvision's CIFAR-100 API.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prs.data.arrays import ARRAY_FOLDER, read_manifest, write_array_dataset
from prs.errors import UserError

SYNTHETIC_FORMAT = "prs-synthetic-cifar100"
SYNTHETIC_VERSION = 1

SHAPES = ("disk", "ring", "square", "frame", "plus", "cross", "triangle", "hstripes", "vstripes", "diamond")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta", "white", "black")
PALETTE = np.array([
    (0.90, 0.10, 0.10), (1.00, 0.55, 0.00), (0.95, 0.90, 0.10), (0.10, 0.75, 0.20), (0.10, 0.85, 0.90),
    (0.15, 0.25, 0.95), (0.55, 0.15, 0.85), (0.95, 0.20, 0.75), (0.97, 0.97, 0.97), (0.05, 0.05, 0.05),
], dtype=np.float32)


def synthetic_class_names() -> list[str]:
    """Class c is the shape SHAPES[c // 10] in the colour COLOURS[c % 10]."""
    return [f"{COLOURS[c % 10]}_{SHAPES[c // 10]}" for c in range(100)]


def _shape_mask(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Masks of the 10 motifs on per-image coordinates u, v (x and y in units of the motif radius).

    shape: (N,) ints; u, v: (N, 32, 32). Every motif fits in the square |u|, |v| <= 1.
    """
    mask = np.zeros(u.shape, dtype=bool)
    for s in np.unique(shape):
        pick = shape == s
        mask[pick] = _MOTIFS[SHAPES[s]](u[pick], v[pick])
    return mask


def _stripes(w):  # 3 stripes across [-1, 1]
    return np.floor((w + 1.0) * 2.5) % 2 == 0


_MOTIFS = {
    "disk": lambda u, v: u * u + v * v <= 1.0,
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.55 ** 2),
    "square": lambda u, v: np.maximum(abs(u), abs(v)) <= 0.8,
    "frame": lambda u, v: (np.maximum(abs(u), abs(v)) <= 0.95) & (np.maximum(abs(u), abs(v)) >= 0.55),
    "plus": lambda u, v: (np.maximum(abs(u), abs(v)) <= 1.0) & ((abs(u) <= 0.3) | (abs(v) <= 0.3)),
    "cross": lambda u, v: (np.maximum(abs(u), abs(v)) <= 1.0) & ((abs(u - v) <= 0.4) | (abs(u + v) <= 0.4)),
    "triangle": lambda u, v: (abs(v) <= 0.9) & (abs(u) <= (v + 0.9) / 1.8),  # apex up
    "hstripes": lambda u, v: (np.maximum(abs(u), abs(v)) <= 0.95) & _stripes(v),
    "vstripes": lambda u, v: (np.maximum(abs(u), abs(v)) <= 0.95) & _stripes(u),
    "diamond": lambda u, v: abs(u) + abs(v) <= 1.0,
}


def _synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 32, 32, 3) images: class motif at a random place on a textured background."""
    n, size, f32 = len(labels), 32, np.float32
    # Background: a grey level with a slight tint, a smooth random texture (a 5x5 grid of
    # values bilinearly upsampled) and pixel noise; none of it depends on the class.
    grey = rng.uniform(0.3, 0.7, (n, 1, 1, 1)) + rng.normal(0, 0.04, (n, 3, 1, 1))
    grid = rng.normal(0, 0.12, (n, 3, 5, 5)).astype(f32)
    t = np.linspace(0, 4, size, dtype=f32)
    up = np.maximum(0, 1 - np.abs(t[:, None] - np.arange(5, dtype=f32)[None, :]))  # (32, 5) bilinear weights
    img = (grey.astype(f32) + up @ grid @ up.T).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    # Motif: radius 4-6 px (slightly different in x and y), centre anywhere it fits.
    radius = rng.uniform(4.0, 6.0, (n, 1)) * rng.uniform(0.9, 1.1, (n, 2))
    centre = rng.uniform(radius, size - 1 - radius)
    yy, xx = np.mgrid[0:size, 0:size].astype(f32)
    u = (xx[None] - centre[:, 0, None, None].astype(f32)) / radius[:, 0, None, None].astype(f32)
    v = (yy[None] - centre[:, 1, None, None].astype(f32)) / radius[:, 1, None, None].astype(f32)
    mask = _shape_mask(labels // 10, u, v)[..., None]
    colour = PALETTE[labels % 10] * rng.uniform(0.8, 1.0, (n, 1)) + rng.normal(0, 0.04, (n, 3))
    img = np.where(mask, colour[:, None, None, :].astype(f32), img)
    img += rng.standard_normal(img.shape, dtype=f32) * f32(0.05)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _synthetic_split(rng: np.random.Generator, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) images and their labels, shuffled (as CIFAR's files are)."""
    labels = rng.permutation(np.repeat(np.arange(100), per_class))
    chunks = [_synthetic_images(labels[i:i + 2048], rng) for i in range(0, len(labels), 2048)]
    images = np.concatenate(chunks) if chunks else np.zeros((0, 32, 32, 3), np.uint8)
    return images, labels.astype(np.int64)


def write_synthetic_cifar100(root, seed: int = 0, train_per_class: int = 50, test_per_class: int = 10) -> Path:
    """Write the synthetic 100-class dataset to `<root>/prs-npz` (`prs.data.arrays`); returns that folder.

    Class c is a motif of shape c // 10 and colour c % 10 pasted at a random position on a
    textured, noisy background. Deterministic in `seed` (the images are those the earlier
    pickle-based writer produced). If the folder already holds the same synthetic set it is
    kept; anything else there is an error.
    """
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"synthetic data: {name} must be a positive integer, got {value!r}")
    folder = Path(root) / ARRAY_FOLDER
    settings = {"generator": SYNTHETIC_FORMAT, "version": SYNTHETIC_VERSION, "seed": int(seed),
                "train_per_class": train_per_class, "test_per_class": test_per_class}
    if folder.exists() and read_manifest(folder) is not None and read_manifest(folder).get("settings") == settings:
        return folder  # already there: not generated again
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))
    train_images, train_labels = _synthetic_split(train_rng, train_per_class)
    test_images, test_labels = _synthetic_split(test_rng, test_per_class)
    return write_array_dataset(folder, train_images, train_labels, test_images, test_labels,
                               synthetic_class_names(), settings)
