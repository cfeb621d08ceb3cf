"""Datasets this project writes itself: uint8 image arrays in `.npz` files, read back through
torchvision's CIFAR-100 API.

`write_array_dataset(folder, train_images, train_labels, test_images, test_labels, class_names,
settings)` writes any such dataset (the synthetic CIFAR-100 is one; another generator only has
to produce the arrays): `train.npz` and `test.npz` (arrays `images` uint8 (N, 32, 32, 3) and
`labels` int64 (N,)) and `dataset.json` (format, settings, class names, sha256 of each file).
`ArrayCIFAR100(root)` reads `<root>/prs-npz` as a torchvision CIFAR100 (`.data`, `.targets`,
`.classes`, PIL images from `__getitem__`). The files are read with `allow_pickle=False`, so
they cannot run code, whatever is planted there; the digests detect damage, and the arrays are
checked (dtype, shape, labels in range) before use, each error naming the file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR100, VisionDataset

from prs.errors import UserError

ARRAY_FOLDER = "prs-npz"
MANIFEST = "dataset.json"
FORMAT = "prs-array-dataset"
VERSION = 1
SPLITS = ("train", "test")
IMAGE_SHAPE = (32, 32, 3)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(folder: Path) -> dict | None:
    """The folder's dataset.json if it is one of ours, else None."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def check_arrays(images, labels, num_classes: int, where: str) -> None:
    """uint8 (N, 32, 32, 3) images with N int labels in [0, num_classes); a UserError names `where`."""
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[1:] == IMAGE_SHAPE):
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise UserError(f"{where}: images must be uint8 of shape (N, 32, 32, 3), got {got}")
    if not (isinstance(labels, np.ndarray) and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer)
            and len(labels) == len(images)):
        got = f"{labels.dtype} {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise UserError(f"{where}: labels must be {len(images)} integers (one per image), got {got}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{where}: labels must be in [0, {num_classes}), found {labels.min()}..{labels.max()}")


def write_array_dataset(folder, train_images, train_labels, test_images, test_labels, class_names,
                        settings: dict) -> Path:
    """Write a dataset as `folder/{train.npz, test.npz, dataset.json}`; returns `folder`.

    `settings` (JSON data: what generated it) identify the dataset: if `folder` already holds one
    with the same settings it is kept as it is; anything else there is an error. Written to a
    temporary folder and renamed into place, so that a reader never sees half a dataset.
    """
    folder = Path(folder)
    names = [str(c) for c in class_names]
    arrays = {"train": (train_images, np.asarray(train_labels)), "test": (test_images, np.asarray(test_labels))}
    for split, (images, labels) in arrays.items():
        check_arrays(images, labels, len(names), f"{split} split")

    def existing_matches() -> bool:
        manifest = read_manifest(folder)
        if manifest is not None and manifest.get("settings") == settings:
            return True
        raise UserError(f"'{folder}' exists and is not the dataset asked for ({settings}); "
                        f"delete it or write to another root")

    if folder.exists() and existing_matches():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        for split, (images, labels) in arrays.items():
            np.savez(tmp / f"{split}.npz", images=np.ascontiguousarray(images), labels=labels.astype(np.int64))
        manifest = {"format": FORMAT, "version": VERSION, "settings": settings, "classes": names,
                    "sha256": {split: _sha256(tmp / f"{split}.npz") for split in SPLITS}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        try:
            tmp.rename(folder)
        except OSError:
            if not folder.exists():
                raise
            existing_matches()  # another process wrote it first; accept it if it is the same dataset
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_array_split(folder, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, labels, class names) of one split, checked; every problem is a UserError naming the file."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise UserError(f"'{folder}' is not a prs dataset (no valid {MANIFEST}); delete it, and it is "
                        f"written again (or write one with prs.data.write_array_dataset)")
    path = folder / f"{split}.npz"
    fix = f"delete {folder} and it is written again"
    classes, digest = manifest.get("classes"), manifest.get("sha256", {})
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise UserError(f"{folder / MANIFEST}: 'classes' must be a list of class names; {fix}")
    try:
        if _sha256(path) != digest.get(split):
            raise UserError(f"dataset file {path} is corrupted (its sha256 is not the one in {MANIFEST}); {fix}")
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except UserError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"dataset file {path} cannot be read as arrays ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:120]}); {fix}") from None
    check_arrays(images, labels, len(classes), f"dataset file {path}")
    return images, labels.astype(np.int64), classes


class ArrayCIFAR100(CIFAR100):
    """torchvision's CIFAR100 API (`.data`, `.targets`, `.classes`, `__getitem__` giving PIL
    images) over `<root>/prs-npz`, written by `write_array_dataset`; no pickle is read."""

    def __init__(self, root, train: bool = True, transform=None, target_transform=None):
        VisionDataset.__init__(self, str(root), transform=transform, target_transform=target_transform)
        self.train = train
        self.data, labels, self.classes = read_array_split(Path(root) / ARRAY_FOLDER, "train" if train else "test")
        self.targets = labels.tolist()
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
