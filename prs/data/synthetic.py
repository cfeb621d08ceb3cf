"""The offline synthetic CIFAR-100: files in CIFAR-100's exact on-disk format, and their integrity check.

`write_synthetic_cifar100` writes 100 classes of motifs (shape x colour) on textured
backgrounds as `<root>/cifar-100-python/{train,test,meta}`, with `synthetic.json` holding the
generator settings and the files' md5 sums; `SyntheticCIFAR100` is torchvision's CIFAR100
loader checking those sums instead of the official ones.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR100

from prs.errors import UserError

CIFAR_FOLDER = CIFAR100.base_folder  # "cifar-100-python"
SYNTHETIC_MANIFEST = "synthetic.json"
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


def _synthetic_split(rng: np.random.Generator, per_class: int, split: str) -> dict:
    labels = rng.permutation(np.repeat(np.arange(100), per_class))  # shuffled, as CIFAR's files are
    chunks = [_synthetic_images(labels[i:i + 2048], rng) for i in range(0, len(labels), 2048)]
    images = np.concatenate(chunks) if chunks else np.zeros((0, 32, 32, 3), np.uint8)
    names = synthetic_class_names()
    return {
        "filenames": [f"{names[c]}_{split}_{i:06d}.png" for i, c in enumerate(labels)],
        "batch_label": f"synthetic {split} batch 1 of 1",
        "fine_labels": [int(c) for c in labels],
        "coarse_labels": [int(c) // 5 for c in labels],
        # CIFAR's layout: one row per image, the 1024 red values, then green, then blue.
        "data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)),
    }


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / SYNTHETIC_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == SYNTHETIC_FORMAT else None


def write_synthetic_cifar100(root, seed: int = 0, train_per_class: int = 50, test_per_class: int = 10) -> Path:
    """Write a synthetic 100-class dataset as `<root>/cifar-100-python/{train,test,meta}`.

    The files have CIFAR-100's layout (pickled dicts with 'data' uint8 (N, 3072), 'fine_labels',
    'coarse_labels', 'filenames', 'batch_label'; meta with 'fine_label_names' and
    'coarse_label_names'), plus `synthetic.json` with the generator settings and the files'
    md5 sums, which `SyntheticCIFAR100` hands to torchvision's integrity check. Class c is a
    motif of shape c // 10 and colour c % 10 pasted at a random position on a textured, noisy
    background; coarse label c // 5. Deterministic in `seed`; written to a temporary folder
    and renamed into place, so a reader never sees half a dataset. If the folder already holds
    the same synthetic set it is kept; anything else there is an error. Returns the folder.
    """
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"synthetic data: {name} must be a positive integer, got {value!r}")
    root = Path(root)
    final = root / CIFAR_FOLDER
    settings = {"format": SYNTHETIC_FORMAT, "version": SYNTHETIC_VERSION, "seed": int(seed),
                "train_per_class": train_per_class, "test_per_class": test_per_class}

    def existing_matches() -> bool:
        manifest = _read_manifest(final)
        if manifest is not None and all(manifest.get(k) == v for k, v in settings.items()):
            return True
        raise UserError(f"'{final}' exists and is not the synthetic set asked for ({settings}); "
                        f"delete it or write to another root")

    if final.exists() and existing_matches():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CIFAR_FOLDER}.tmp-", dir=root))
    try:
        train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))
        parts = {
            "train": _synthetic_split(train_rng, train_per_class, "train"),
            "test": _synthetic_split(test_rng, test_per_class, "test"),
            "meta": {"fine_label_names": synthetic_class_names(),
                     "coarse_label_names": [f"{SHAPES[k // 2]}_{'warm' if k % 2 == 0 else 'cool'}"
                                            for k in range(20)]},
        }
        for name, content in parts.items():
            with open(tmp / name, "wb") as f:
                pickle.dump(content, f, protocol=2)
        md5 = {name: _md5(tmp / name) for name in parts}
        (tmp / SYNTHETIC_MANIFEST).write_text(json.dumps({**settings, "md5": md5}, indent=1) + "\n")
        try:
            tmp.rename(final)
        except OSError:
            if not final.exists():
                raise
            existing_matches()  # another process wrote it first; accept it if it is the same set
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class SyntheticCIFAR100(CIFAR100):
    """torchvision's CIFAR100 loader, checking the md5 sums from the synthetic set's manifest.

    The real CIFAR100 class hard-codes the md5 sums of the official files, which synthetic
    files cannot match; everything else (file names, pickle keys, decoding) is torchvision's.
    """

    def __init__(self, root, train: bool = True, transform=None, target_transform=None):
        folder = Path(root) / CIFAR_FOLDER
        manifest = _read_manifest(folder)
        if manifest is None:
            raise UserError(f"'{folder}' is not a synthetic dataset (no {SYNTHETIC_MANIFEST}); "
                            f"delete it, or write one with prs.data.write_synthetic_cifar100")
        md5 = manifest["md5"]
        # Instance attributes shadow the class's official checksums.
        self.train_list = [["train", md5["train"]]]
        self.test_list = [["test", md5["test"]]]
        self.meta = {**type(self).meta, "md5": md5["meta"]}
        try:
            super().__init__(root, train=train, transform=transform, target_transform=target_transform)
        except RuntimeError as e:
            raise UserError(f"synthetic dataset '{folder}' is corrupted ({e}); delete the folder and "
                            f"it is written again") from None
